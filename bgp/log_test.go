package bgp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logSeverityScreen decides which of GoBGP's messages are written, on its own: the
// handler's level (the agent's --log-level, here Error) neither hides a message at or
// above it nor shows one below it. GoBGP is still asked for debug messages, and a peer's
// problem is remembered for status even when its message is not written.
func TestLogSeverity(t *testing.T) {
	var buf bytes.Buffer
	l := newSlogLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})))
	emitAll := func() {
		l.Debug("failed to connect", gobgplog.Fields{"Key": "192.0.2.1", "Error": "refused"})
		l.Info("an info", nil)
		l.Warn("a warning", nil)
		l.Error("an error", nil)
		l.Fatal("a fatal", nil)
	}
	for _, tt := range []struct {
		severity string
		want     string // messages written, in order
	}{
		{"", "an info|a warning|an error|a fatal"},
		{"Debug", "failed to connect|an info|a warning|an error|a fatal"},
		{"Info", "an info|a warning|an error|a fatal"},
		{"Warning", "a warning|an error|a fatal"},
		{"Error", "an error|a fatal"},
		{"Fatal", "a fatal"},
	} {
		t.Run("severity "+tt.severity, func(t *testing.T) {
			buf.Reset()
			l.forget("192.0.2.1")
			if err := l.setScreen(tt.severity); err != nil {
				t.Fatal(err)
			}
			emitAll()
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if _, rest, ok := strings.Cut(line, `msg="`); ok {
					msg, _, _ := strings.Cut(rest, `"`)
					got = append(got, msg)
				}
			}
			if strings.Join(got, "|") != tt.want {
				t.Errorf("written: %q, want %q\n%s", got, tt.want, buf.String())
			}
			if p := l.lastProblem("192.0.2.1"); p != "failed to connect: refused" {
				t.Errorf("problem remembered: %q", p)
			}
			if l.GetLevel() != gobgplog.DebugLevel {
				t.Errorf("GoBGP is asked for level %v, want debug", l.GetLevel())
			}
		})
	}
	if err := l.setScreen("Verbose"); err == nil || !strings.Contains(err.Error(), `logSeverityScreen "Verbose"`) {
		t.Errorf("a bad severity: %v", err)
	}
	buf.Reset()
	emitAll()
	if !strings.Contains(buf.String(), "a fatal") || strings.Contains(buf.String(), "an error") {
		t.Errorf("a bad severity changed the level:\n%s", buf.String())
	}
}
