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
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
