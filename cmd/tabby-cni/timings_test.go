package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTimingsAppendOneLinePerCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "timings.jsonl")
	t.Setenv(timingsEnv, path)
	main := time.Now().Add(-3 * time.Millisecond)
	for i, fail := range []error{nil, errors.New("boom")} {
		tm := newTimings(main)
		tm.mark("connect")
		tm.mark("ipam")
		tm.write("ADD", "c"+string(rune('0'+i)), fail)
	}
	var nilTimings *timings
	nilTimings.mark("ignored") // commands run without timings in tests
	nilTimings.write("DEL", "x", nil)

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), b)
	}
	for i, l := range lines {
		var r timingRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range r.Phases {
			names = append(names, p.Name)
		}
		if r.Command != "ADD" || r.ContainerID != "c"+string(rune('0'+i)) || strings.Join(names, ",") != "connect,ipam,rest" ||
			r.MainNs != main.UnixNano() || r.EndNs < r.MainNs || r.Phases[0].Us < 3000 || (i == 1) != (r.Error == "boom") {
			t.Errorf("line %d: %s", i, l)
		}
	}
}
