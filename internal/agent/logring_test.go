package agent

import (
	"fmt"
	"strings"
	"testing"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(3)
	if got := string(r.Bytes()); got != "" {
		t.Errorf("empty ring: %q", got)
	}
	fmt.Fprintln(r, "one")
	fmt.Fprint(r, "two\nthree\n")
	if got := string(r.Bytes()); got != "one\ntwo\nthree\n" {
		t.Errorf("full ring: %q", got)
	}
	fmt.Fprintln(r, "four")
	fmt.Fprintln(r, strings.Repeat("x", maxLogLine+10))
	if got, want := string(r.Bytes()), "three\nfour\n"+strings.Repeat("x", maxLogLine)+"\n"; got != want {
		t.Errorf("after wrapping: %q, want %q", got, want)
	}
}
