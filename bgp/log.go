package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogLogger adapts GoBGP's logger to slog. It also remembers the last warning or error
// GoBGP logged about each neighbor (its "Key" field), which node status shows as the
// session's info: why a session to a misconfigured peer does not come up.
type slogLogger struct {
	log   *slog.Logger
	mu    sync.Mutex
	level gobgplog.LogLevel
	last  map[string]string // neighbor address -> last problem
}

func newSlogLogger(l *slog.Logger) *slogLogger {
	return &slogLogger{log: l, level: gobgplog.DebugLevel, last: map[string]string{}}
}

func (l *slogLogger) attrs(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		out = append(out, k, fmt.Sprint(fields[k]))
	}
	return out
}

func (l *slogLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	// A peer that never answers only shows in GoBGP's debug messages about connecting.
	if level >= slog.LevelWarn || msg == "failed to connect" {
		if key, ok := fields["Key"].(string); ok && key != "" {
			info := msg
			for _, k := range []string{"Data", "Err", "Error", "error", "Reason"} {
				if e, ok := fields[k]; ok {
					info += ": " + fmt.Sprint(e)
				}
			}
			l.mu.Lock()
			l.last[key] = info
			l.mu.Unlock()
		}
	}
	l.log.Log(context.Background(), level, msg, l.attrs(fields)...)
}

// lastProblem returns the last problem logged about the neighbor at addr.
func (l *slogLogger) lastProblem(addr string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[addr]
}

func (l *slogLogger) forget(addr string) {
	l.mu.Lock()
	delete(l.last, addr)
	l.mu.Unlock()
}

func (l *slogLogger) Panic(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
	panic(msg)
}
func (l *slogLogger) Fatal(msg string, fields gobgplog.Fields) { l.emit(slog.LevelError, msg, fields) }
func (l *slogLogger) Error(msg string, fields gobgplog.Fields) { l.emit(slog.LevelError, msg, fields) }
func (l *slogLogger) Warn(msg string, fields gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, fields) }
func (l *slogLogger) Info(msg string, fields gobgplog.Fields)  { l.emit(slog.LevelInfo, msg, fields) }
func (l *slogLogger) Debug(msg string, fields gobgplog.Fields) { l.emit(slog.LevelDebug, msg, fields) }
func (l *slogLogger) SetLevel(level gobgplog.LogLevel) {
	l.mu.Lock()
	l.level = level
	l.mu.Unlock()
}
func (l *slogLogger) GetLevel() gobgplog.LogLevel {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level
}
