package agent

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/tabby-net/tabby/internal/snapshot"
)

// After a burst of datastore changes (the first sync, a large apply) the Go heap keeps the
// burst's high-water mark as idle memory, which the runtime's scavenger hands back to the
// OS only slowly: a node agent that loaded 10k Services stayed ~50 MB above where it
// started although ~15 MB of it was live. memoryTrim hands it back once the snapshot has
// been quiet for trimQuiet after a change, when at least trimMin is idle and not yet
// returned; each trim is a full GC, so small changes never cause one.
const (
	trimQuiet = 2 * time.Second
	trimMin   = 16 << 20
)

type memoryTrim struct {
	changes <-chan struct{} // the snapshot's change notifications
	quiet   time.Duration   // trimQuiet
	min     uint64          // trimMin
	log     *slog.Logger
}

func newMemoryTrim(snap *snapshot.Snapshot) memoryTrim {
	return memoryTrim{changes: snap.Subscribe(), quiet: trimQuiet, min: trimMin, log: slog.Default().With("component", "memory")}
}

func (memoryTrim) Name() string { return "memory-trim" }

func (t memoryTrim) Run(ctx context.Context) error {
	quiet := time.NewTimer(t.quiet)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.changes:
			quiet.Reset(t.quiet)
		case <-quiet.C:
			if idle := idleHeap(); idle >= t.min {
				start := time.Now()
				debug.FreeOSMemory()
				t.log.Debug("returned idle heap to the OS", "idle_bytes", idle, "took", time.Since(start))
			}
		}
	}
}

// idleHeap is the heap memory the runtime holds but neither uses nor has returned.
func idleHeap() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapIdle - m.HeapReleased
}
