package agent

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log destination the test reads while the trimmer writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMemoryTrim: after a change and a quiet spell, the trimmer returns the idle heap a
// burst left behind to the OS; with less idle than its minimum it does nothing.
func TestMemoryTrim(t *testing.T) {
	var logs lockedBuffer
	changes := make(chan struct{}, 1)
	trim := memoryTrim{changes: changes, quiet: 20 * time.Millisecond, min: 16 << 20,
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trim.Run(ctx)

	// Little idle heap: a change and ten quiet spells later, nothing was trimmed.
	runtime.GC()
	if idle := idleHeap(); idle < trim.min {
		changes <- struct{}{}
		time.Sleep(10 * trim.quiet) // asserting that nothing happens needs a wait
		if strings.Contains(logs.String(), "returned idle heap") {
			t.Fatalf("trimmed with %d idle bytes, below the minimum: %s", idle, logs.String())
		}
	}

	// A burst: 48 MiB allocated and dropped beside 48 MiB that stays live, so that the
	// heap's goal stays above what is left and the runtime keeps the freed memory.
	alloc := func(mib int) [][]byte {
		b := make([][]byte, mib)
		for i := range b {
			b[i] = make([]byte, 1<<20)
			b[i][0] = 1
		}
		return b
	}
	live := alloc(48)
	alloc(48)
	runtime.GC()
	if idle := idleHeap(); idle < trim.min {
		t.Fatalf("the test expects the runtime to keep the burst's memory: only %d bytes idle", idle)
	}
	changes <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "returned idle heap") {
		if time.Now().After(deadline) {
			t.Fatalf("no trim within 10 s of the change; idle %d bytes; log: %s", idleHeap(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if idle := idleHeap(); idle >= trim.min {
		t.Errorf("after the trim %d bytes idle and not returned", idle)
	}
	runtime.KeepAlive(live)
}
