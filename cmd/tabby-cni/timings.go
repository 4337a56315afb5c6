package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// timingsEnv names a file to which every invocation appends one JSON line (a
// timingRecord) saying where its time went. For benchmarks and for finding out why an ADD
// is slow on a node; unset, nothing is written.
const timingsEnv = "TABBY_CNI_TIMINGS"

// timingRecord is the line appended to the timings file.
type timingRecord struct {
	Command     string `json:"command"`
	ContainerID string `json:"containerID"`
	// MainNs and EndNs are wall clock times (Unix nanoseconds) at which main started
	// (after the runtime's and the packages' init) and the command's work ended; a caller
	// that noted when it started the process gets process start and init as MainNs minus
	// its own time.
	MainNs int64 `json:"mainNs"`
	EndNs  int64 `json:"endNs"`
	// Phases are consecutive: each lasted from the end of the one before (or main's
	// start) to its end, in microseconds.
	Phases []phaseTime `json:"phases"`
	Error  string      `json:"error,omitempty"`
}

type phaseTime struct {
	Name string `json:"name"`
	Us   int64  `json:"us"`
}

// timings records the phases of one invocation. The zero value is unusable; a nil
// *timings records nothing, so commands run in tests without one.
type timings struct {
	main, last time.Time
	phases     []phaseTime
}

func newTimings(main time.Time) *timings { return &timings{main: main, last: main} }

// mark ends the phase called name: it lasted from the previous mark until now.
func (t *timings) mark(name string) {
	if t == nil {
		return
	}
	now := time.Now()
	t.phases = append(t.phases, phaseTime{Name: name, Us: now.Sub(t.last).Microseconds()})
	t.last = now
}

// write appends the record to the file timingsEnv names, if it names one. A failure to
// write is reported on standard error and does not fail the command.
func (t *timings) write(command, containerID string, cmdErr error) {
	path := os.Getenv(timingsEnv)
	if t == nil || path == "" {
		return
	}
	t.mark("rest")
	rec := timingRecord{Command: command, ContainerID: containerID, MainNs: t.main.UnixNano(), EndNs: t.last.UnixNano(), Phases: t.phases}
	if cmdErr != nil {
		rec.Error = cmdErr.Error()
	}
	b, err := json.Marshal(rec)
	if err == nil {
		err = appendLine(path, b)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tabby-cni: %s: %v\n", timingsEnv, err)
	}
}

// appendLine appends b and a newline in one write, so that concurrent invocations'
// lines do not interleave.
func appendLine(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
