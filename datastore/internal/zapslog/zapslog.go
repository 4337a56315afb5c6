// Package zapslog carries the zap logs of etcd's client and server into slog, so a tabby
// process writes one log format and etcd's chatter stays below a floor level.
package zapslog

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore is the zapcore.Core NewCore returns.
type slogCore struct {
	log   *slog.Logger
	min   zapcore.Level
	attrs []slog.Attr
	// mute, when set, drops everything: etcd reports its own orderly shutdown as errors.
	mute *atomic.Bool
	// benign are messages etcd logs at warn or error level that say nothing to act on.
	benign map[string]bool
}

// NewCore returns a core that writes entries at min and above to log, except those whose
// message is one of benign, and nothing at all while mute (if not nil) is set.
func NewCore(log *slog.Logger, min zapcore.Level, mute *atomic.Bool, benign ...string) zapcore.Core {
	if mute == nil {
		mute = new(atomic.Bool)
	}
	c := &slogCore{log: log, min: min, mute: mute, benign: map[string]bool{}}
	for _, m := range benign {
		c.benign[m] = true
	}
	return c
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min && !c.mute.Load() }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	cp := *c
	cp.attrs = append(slices.Clip(c.attrs), fieldAttrs(fields)...)
	return &cp
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && !c.benign[e.Message] {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slog.LevelError
	switch {
	case e.Level < zapcore.InfoLevel:
		level = slog.LevelDebug
	case e.Level < zapcore.WarnLevel:
		level = slog.LevelInfo
	case e.Level < zapcore.ErrorLevel:
		level = slog.LevelWarn
	}
	attrs := append(slices.Clip(c.attrs), fieldAttrs(fields)...)
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// fieldAttrs renders zap fields through zap's own map encoder, ordered by key.
func fieldAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return attrs
}
