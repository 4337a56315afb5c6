package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// An agent that starts while etcd does not answer runs from its snapshot cache: the last
// synced view, which KeepCache writes after every sync. Every subsystem starts from it as
// from a live view, so nothing the previous run programmed is flushed and BGP comes back
// before the peers' graceful restart time runs out; the datastore writes wait (the
// writeGate) and the live watches replace the cache once etcd answers.

// snapshotCacheDebounce is how long after a change the cache is written: a burst of
// changes is one write, and a cluster that changes all the time costs one write each
// period (0.2-0.3 s of CPU at 10k workload endpoints, a 5 MB file: BenchmarkCache).
const snapshotCacheDebounce = 10 * time.Second

// deferredWriteRetry is how often an agent started from its cache asks etcd again.
const deferredWriteRetry = time.Second

// startSource decides where the agent starts from, given whether etcd answered within the
// dial timeout (reachErr) and, when it did not, what reading the cache at cachePath gave:
// nil and no error is the live datastore; a view is the cache; an error (with no view) is
// what to exit with. A node with no usable cache needs etcd, as a brand-new node does.
func startSource(reachErr error, cachePath string, cached *snapshot.View, cacheErr error) (*snapshot.View, error) {
	switch {
	case reachErr == nil:
		return nil, nil
	case !isConnectError(reachErr):
		return nil, reachErr // the start was cancelled
	case cachePath == "":
		return nil, fmt.Errorf("%w (no snapshot cache configured to start from)", reachErr)
	case errors.Is(cacheErr, fs.ErrNotExist):
		return nil, fmt.Errorf("%w (no snapshot cache at %s to start from: a node's first start needs etcd)", reachErr, cachePath)
	case cacheErr != nil:
		return nil, fmt.Errorf("%w (and the snapshot cache cannot be used: %v)", reachErr, cacheErr)
	}
	return cached, nil
}

// chooseStart asks etcd within the dial timeout and, only when it does not answer, reads
// the cache; see startSource.
func chooseStart(ctx context.Context, ds *datastore.Client, cfg Config) (*snapshot.View, error) {
	reachErr := ds.CheckReachable(ctx)
	var cached *snapshot.View
	var cacheErr error
	if isConnectError(reachErr) && cfg.SnapshotCache != "" {
		cached, cacheErr = snapshot.ReadCache(cfg.SnapshotCache, cfg.NodeName, snapshotKinds())
	}
	return startSource(reachErr, cfg.SnapshotCache, cached, cacheErr)
}

// isConnectError says whether err is etcd not answering in time (down, out of reach, or a
// TLS mismatch: any of them leaves the cache the best the agent has).
func isConnectError(err error) bool {
	_, ok := errors.AsType[*datastore.ConnectError](err)
	return ok
}

// writeGate holds back the agent's datastore writes (node registration, default pools,
// IPAM, its lease, health probe results, its host endpoint) while it runs from its
// cache: open once etcd answered and the node is registered.
type writeGate struct {
	once sync.Once
	c    chan struct{}
}

func newWriteGate(open bool) *writeGate {
	g := &writeGate{c: make(chan struct{})}
	if open {
		g.open()
	}
	return g
}

func (g *writeGate) open() { g.once.Do(func() { close(g.c) }) }

// isOpen says whether writes may be made.
func (g *writeGate) isOpen() bool {
	select {
	case <-g.c:
		return true
	default:
		return false
	}
}

// afterWrites runs sub once the gate opens: a subsystem that writes to the datastore.
func afterWrites(g *writeGate, sub Subsystem) Subsystem {
	return runFunc(sub.Name(), func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case <-g.c:
		}
		return sub.Run(ctx)
	})
}

// deferredWrites is the subsystem of an agent started from its cache: it asks etcd every
// deferredWriteRetry until it answers, then makes the writes a start makes (register does
// them) and opens the gate. An error of register with etcd answering ends the agent, as it
// would at a start with etcd.
func deferredWrites(ds *datastore.Client, g *writeGate, register func(context.Context) error, log *slog.Logger) Subsystem {
	return runFunc("deferred-writes", func(ctx context.Context) error {
		for {
			if err := ds.CheckReachable(ctx); err == nil {
				break
			} else if ctx.Err() != nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(deferredWriteRetry):
			}
		}
		if err := register(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Info("etcd answers: the node is registered and datastore writes resume")
		g.open()
		<-ctx.Done()
		return nil
	})
}
