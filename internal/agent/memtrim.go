package agent

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/tabby-net/tabby/internal/snapshot"
)

// After a burst of datastore changes (the first sync, a large apply) or of learned routes
// (a peer's full table) the Go heap keeps the
// burst's high-water mark as idle memory, which the runtime's scavenger hands back to the
// OS only slowly: a node agent that loaded 10k Services stayed ~50 MB above where it
// started although ~15 MB of it was live. memoryTrim collects and hands it back once the
// snapshot has been quiet for trimQuiet after a change, when the heap memory the process
// holds has grown by trimMin since the last trim, or holds more beyond the heap the last
// GC found live than that live heap itself (and trimMin): more than a GC cycle's own
// headroom, as after a burst whose transients were live at the last trim (a full BGP
// table learned in spells, say). Each trim is a full GC, so small changes never cause one. Growth without changes (the DNS server's answer caches and
// garbage under load) is checked every trimEvery.
const (
	trimQuiet = 2 * time.Second
	trimEvery = time.Minute
	trimMin   = 16 << 20
)

type memoryTrim struct {
	changes <-chan struct{} // the snapshot's change notifications
	learned <-chan struct{} // batches of learned routes handed to felix; nil without BGP
	quiet   time.Duration   // trimQuiet
	every   time.Duration   // trimEvery
	min     uint64          // trimMin
	log     *slog.Logger
}

func newMemoryTrim(snap *snapshot.Snapshot, learned *learnedRoutes) memoryTrim {
	return memoryTrim{changes: snap.Subscribe(), learned: learned.batchesC(), quiet: trimQuiet, every: trimEvery, min: trimMin, log: slog.Default().With("component", "memory")}
}

func (memoryTrim) Name() string { return "memory-trim" }

func (t memoryTrim) Run(ctx context.Context) error {
	quiet := time.NewTimer(t.quiet)
	quiet.Stop()
	defer quiet.Stop()
	every := time.NewTicker(t.every)
	defer every.Stop()
	var base uint64 // heldHeap after the last trim
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.changes:
			quiet.Reset(t.quiet)
			continue
		case <-t.learned:
			quiet.Reset(t.quiet)
			continue
		case <-quiet.C:
		case <-every.C:
		}
		if held, live := heldHeap(), liveHeap(); held >= base+t.min || held >= live+max(t.min, live) {
			start := time.Now()
			debug.FreeOSMemory()
			base = heldHeap()
			t.log.Debug("returned heap memory to the OS", "held_before", held, "held_after", base, "took", time.Since(start))
		}
	}
}

// liveHeap is the heap the last GC found live.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heldHeap is the heap memory the process holds from the OS: in use, or idle and not yet
// returned.
func heldHeap() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapSys - m.HeapReleased
}
