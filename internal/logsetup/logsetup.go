// Package logsetup makes the text logger tabby's commands write, from a --log-level
// flag's value.
package logsetup

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a text logger to w that drops records below level (debug, info, warn or
// error).
func New(level string, w io.Writer) (*slog.Logger, error) {
	l, _, err := NewVar(level, w)
	return l, err
}

// NewVar is New whose level may change later, through the LevelVar it returns (as a
// FelixConfiguration's logSeverityScreen changes the agent's).
func NewVar(level string, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), lv, nil
}
