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

// runTrim runs a trimmer on changes with a 20 ms quiet spell and a 16 MiB minimum until
// the test ends; trims counts the trims it logged, logs holds its log.
func runTrim(t *testing.T, changes chan struct{}) (trim memoryTrim, trims func() int, logs *lockedBuffer) {
	logs = &lockedBuffer{}
	trim = memoryTrim{changes: changes, quiet: 20 * time.Millisecond, every: time.Hour, min: 16 << 20,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go trim.Run(ctx)
	return trim, func() int { return strings.Count(logs.String(), "returned heap memory") }, logs
}

// TestMemoryTrim: after a change and a quiet spell, the trimmer collects and returns the
// heap a burst left behind to the OS; when the heap held has not grown by its minimum
// since, it does nothing.
func TestMemoryTrim(t *testing.T) {
	changes := make(chan struct{}, 1)
	trim, trims, logs := runTrim(t, changes)
	quietSpells := func() {
		changes <- struct{}{}
		time.Sleep(10 * trim.quiet) // asserting that nothing happens needs a wait
	}

	// A small heap: a change and ten quiet spells later, nothing was trimmed.
	runtime.GC()
	if held := heldHeap(); held < trim.min {
		quietSpells()
		if n := trims(); n != 0 {
			t.Fatalf("trimmed %d times holding %d bytes, below the minimum: %s", n, held, logs.String())
		}
	}

	// A burst: 48 MiB that stays live, and 48 MiB of garbage not yet collected.
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
	before := heldHeap()
	changes <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for trims() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no trim within 10 s of the change, holding %d bytes; log: %s", heldHeap(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after := heldHeap(); after+trim.min > before {
		t.Errorf("held %d bytes before the trim, %d after: want the garbage returned", before, after)
	}
	// Nothing grew since: another change trims nothing.
	quietSpells()
	if n := trims(); n != 1 {
		t.Errorf("%d trims after a change that grew nothing, want still 1: %s", n, logs.String())
	}
	runtime.KeepAlive(live)
}

// TestMemoryTrimPeriodic: growth without any snapshot change (a server's caches under
// load) is trimmed on the periodic check.
func TestMemoryTrimPeriodic(t *testing.T) {
	var logs lockedBuffer
	trim := memoryTrim{changes: make(chan struct{}), quiet: time.Hour, every: 20 * time.Millisecond, min: 16 << 20,
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	func() { // 48 MiB of garbage
		b := make([][]byte, 48)
		for i := range b {
			b[i] = make([]byte, 1<<20)
			b[i][0] = 1
		}
	}()
	go trim.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "returned heap memory") {
		if time.Now().After(deadline) {
			t.Fatalf("no periodic trim within 10 s, holding %d bytes", heldHeap())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMemoryTrimAfterShrink: a trim while a burst's transients were live sets a high
// mark; once they are garbage, the heap held beyond the live one is trimmed although it
// did not grow past that mark.
func TestMemoryTrimAfterShrink(t *testing.T) {
	changes := make(chan struct{}, 1)
	trim, trims, logs := runTrim(t, changes)
	waitTrims := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for trims() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no trim within 10 s, holding %d bytes, %d live; log: %s", what, heldHeap(), liveHeap(), logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	burst := make([][]byte, 96) // live at the first trim
	for i := range burst {
		burst[i] = make([]byte, 1<<20)
		burst[i][0] = 1
	}
	changes <- struct{}{}
	waitTrims(1, "the burst")
	runtime.KeepAlive(burst)
	burst = nil
	runtime.GC() // the burst is garbage now; its memory is still held
	before := heldHeap()
	changes <- struct{}{}
	waitTrims(2, "after the burst")
	if after := heldHeap(); after+trim.min > before {
		t.Errorf("held %d bytes before the trim, %d after: want the burst's memory returned", before, after)
	}
}
