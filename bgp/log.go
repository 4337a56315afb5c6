package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"

	"github.com/tabby-net/tabby/api"
)

// slogLogger adapts GoBGP's logger to slog. It also remembers the last warning or error
// GoBGP logged about each neighbor (its "Key" field), which node status shows as the
// session's info: why a session to a misconfigured peer does not come up.
//
// Two levels: GoBGP is always asked for everything down to debug (level), since the
// reason a peer does not answer comes only in a debug message; screen, BGPConfiguration
// logSeverityScreen, says what is written. Like BIRD's log level under Calico, it is the
// BGP log level on its own: messages at or above it are written whatever the agent's
// --log-level, those below it never.
type slogLogger struct {
	log    *slog.Logger
	screen atomic.Int32 // a gobgplog.LogLevel: messages above it (less severe) are dropped
	mu     sync.Mutex
	level  gobgplog.LogLevel
	last   map[string]string // neighbor address -> last problem
}

func newSlogLogger(l *slog.Logger) *slogLogger {
	g := &slogLogger{log: l, level: gobgplog.DebugLevel, last: map[string]string{}}
	g.screen.Store(int32(gobgplog.InfoLevel))
	return g
}

// logSeverities maps logSeverityScreen's values to GoBGP's levels.
var logSeverities = map[string]gobgplog.LogLevel{
	"Debug": gobgplog.DebugLevel, "Info": gobgplog.InfoLevel, "Warning": gobgplog.WarnLevel,
	"Error": gobgplog.ErrorLevel, "Fatal": gobgplog.FatalLevel,
}

// setScreen sets the level written from a logSeverityScreen value; "" is Info.
func (l *slogLogger) setScreen(severity string) error {
	if severity == "" {
		severity = api.DefaultBGPLogSeverity
	}
	lv, ok := logSeverities[severity]
	if !ok {
		return fmt.Errorf("logSeverityScreen %q: want Debug, Info, Warning, Error or Fatal", severity)
	}
	l.screen.Store(int32(lv))
	return nil
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

func (l *slogLogger) emit(gl gobgplog.LogLevel, level slog.Level, msg string, fields gobgplog.Fields) {
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
	if int32(gl) > l.screen.Load() {
		return
	}
	// Straight to the handler: screen alone decides (slog.Logger.Log would also apply the
	// agent's --log-level).
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.Add(l.attrs(fields)...)
	_ = l.log.Handler().Handle(context.Background(), r)
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
	l.emit(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(msg)
}
func (l *slogLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.emit(gobgplog.FatalLevel, slog.LevelError, msg, fields)
}
func (l *slogLogger) Error(msg string, fields gobgplog.Fields) {
	l.emit(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}
func (l *slogLogger) Warn(msg string, fields gobgplog.Fields) {
	l.emit(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}
func (l *slogLogger) Info(msg string, fields gobgplog.Fields) {
	l.emit(gobgplog.InfoLevel, slog.LevelInfo, msg, fields)
}
func (l *slogLogger) Debug(msg string, fields gobgplog.Fields) {
	l.emit(gobgplog.DebugLevel, slog.LevelDebug, msg, fields)
}
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
