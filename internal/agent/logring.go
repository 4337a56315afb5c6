package agent

import (
	"bytes"
	"sync"
)

// DefaultLogLines is how many recent log lines tabby-node keeps for `tabbyctl node diags`.
const DefaultLogLines = 2000

// LogRing keeps the last lines written to it (an io.Writer beside the log's own output):
// the recent logs that diagnostics collect. Each Write is a line or several; a line
// longer than maxLogLine is cut.
type LogRing struct {
	mu    sync.Mutex
	lines [][]byte
	next  int
	full  bool
}

// maxLogLine bounds one kept line, so the ring's memory is bounded too.
const maxLogLine = 4096

// NewLogRing returns a ring of n lines.
func NewLogRing(n int) *LogRing { return &LogRing{lines: make([][]byte, max(n, 1))} }

func (r *LogRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for line := range bytes.Lines(p) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(line) > maxLogLine {
			line = line[:maxLogLine]
		}
		r.lines[r.next] = append(r.lines[r.next][:0], line...)
		r.next = (r.next + 1) % len(r.lines)
		r.full = r.full || r.next == 0
	}
	return len(p), nil
}

// Bytes returns the kept lines, oldest first, each ended by a newline.
func (r *LogRing) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out bytes.Buffer
	order := r.lines[:r.next]
	if r.full {
		order = append(append([][]byte{}, r.lines[r.next:]...), r.lines[:r.next]...)
	}
	for _, l := range order {
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
