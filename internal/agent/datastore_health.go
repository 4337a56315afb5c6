package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// Datastore health: how often the agent asks etcd, and how long an answer may take.
const (
	datastorePingInterval = 2 * time.Second
	datastorePingTimeout  = 2 * time.Second
)

// datastoreHealth reports, as readiness "datastore", whether the snapshot has synced and
// etcd answers. An unreachable etcd takes nothing down: the kernel keeps what felix
// programmed, and the watches resync by themselves once etcd is back.
type datastoreHealth struct {
	ds     *datastore.Client
	snap   *snapshot.Snapshot
	cache  string     // the snapshot cache's path
	writes *writeGate // closed while the agent runs from its cache
	ready  *Readiness
}

func newDatastoreHealth(ds *datastore.Client, snap *snapshot.Snapshot, cache string, writes *writeGate, ready *Readiness) *datastoreHealth {
	ready.Set("datastore", "datastore: the snapshot has not synced yet")
	return &datastoreHealth{ds: ds, snap: snap, cache: cache, writes: writes, ready: ready}
}

func (h *datastoreHealth) Name() string { return "datastore-health" }

func (h *datastoreHealth) Run(ctx context.Context) error {
	tick := time.NewTicker(datastorePingInterval)
	defer tick.Stop()
	sub := h.snap.Subscribe()
	pingErr := h.ds.Ping(ctx, datastorePingTimeout)
	for {
		h.ready.Set("datastore", h.reasons(pingErr)...)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			pingErr = h.ds.Ping(ctx, datastorePingTimeout)
		case <-sub:
		}
	}
}

// reasons says why the datastore side is not ready, given the last ping's outcome.
func (h *datastoreHealth) reasons(pingErr error) []string {
	var out []string
	if pingErr != nil {
		out = append(out, "datastore: unreachable: "+pingErr.Error())
	}
	if v := h.snap.View(); !v.CachedAt.IsZero() {
		out = append(out, fmt.Sprintf("datastore: running from the snapshot cache %s, written %s ago (%s): the live datastore has not synced since the agent started",
			h.cache, time.Since(v.CachedAt).Round(time.Second), v.CachedAt.UTC().Format(time.RFC3339)))
	} else if !v.Synced {
		out = append(out, "datastore: the snapshot has not synced yet")
	}
	if !h.writes.isOpen() {
		out = append(out, "datastore: writes wait for etcd (node registration, IPAM, the agent's lease, health probe results)")
	}
	errs := h.snap.WatchErrors()
	for _, kind := range slices.Sorted(maps.Keys(errs)) {
		out = append(out, fmt.Sprintf("datastore: watch of %s interrupted (retrying): %v", kind, errs[kind]))
	}
	return out
}
