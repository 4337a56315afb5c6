package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// learnedRoutes takes BGP's learned routes to felix: their changes go straight to the
// Dataplane, which keeps the table and writes only what changed; whether BGP has synced
// (until then felix holds the gateway routes a previous run installed) goes through the
// routes subsystem into LocalState.HoldLearned.
type learnedRoutes struct {
	dp     learner
	synced *handoff[bool]
	// batches is poked after every batch of changes (memoryTrim trims after a burst).
	batches chan struct{}
}

// learner is the part of felix's Dataplane that BGP feeds.
type learner interface {
	Learn(routes []felix.Route, withdrawn []netip.Prefix)
}

func newLearnedRoutes(dp learner) *learnedRoutes {
	return &learnedRoutes{dp: dp, synced: newHandoff[bool](), batches: make(chan struct{}, 1)}
}

// learn hands felix a batch of changes.
func (l *learnedRoutes) learn(routes []felix.Route, withdrawn []netip.Prefix) {
	if len(routes) == 0 && len(withdrawn) == 0 {
		return
	}
	l.dp.Learn(routes, withdrawn)
	select {
	case l.batches <- struct{}{}:
	default:
	}
}

// batchesC signals batches of changes; nil without BGP.
func (l *learnedRoutes) batchesC() <-chan struct{} {
	if l == nil {
		return nil
	}
	return l.batches
}

// syncedChanged signals a change of BGP's synced state; nil without BGP.
func (l *learnedRoutes) syncedChanged() <-chan struct{} {
	if l == nil {
		return nil
	}
	return l.synced.changed()
}

// bgpSynced says whether BGP has synced; true without BGP, which has nothing to wait for.
func (l *learnedRoutes) bgpSynced() bool {
	if l == nil {
		return true
	}
	synced, _ := l.synced.get()
	return synced
}

// routesSubsystem hands felix's Dataplane the node's local state: its workloads and the
// blocks affine to it from the snapshot, BGP's learned routes and the encapsulation
// state. It hands felix nothing until the snapshot has synced, so a starting agent never
// removes routes for workloads it has not read yet; until BGP has synced, felix keeps the
// gateway routes a previous run installed.
type routesSubsystem struct {
	node    string
	snap    *snapshot.Snapshot
	dp      *felix.Dataplane
	learned *learnedRoutes         // nil without BGP
	encap   *handoff[*felix.Encap] // the encapsulation subsystem's last pass
	ready   *Readiness
	log     *slog.Logger
}

func (r *routesSubsystem) Name() string { return "routes" }

func (r *routesSubsystem) Run(ctx context.Context) error {
	r.ready.Check("routes", func() []string {
		if r.dp.Status().LastOK.IsZero() {
			return []string{"routes: felix has not programmed the node's routes yet"}
		}
		return nil
	})
	dpDone := make(chan error, 1)
	go func() { dpDone <- r.dp.Run(ctx) }()
	sub := r.snap.Subscribe()
	var prev *snapshot.View
	var lastBad string
	var handed *felix.LocalState // the last state handed to felix
	for {
		select {
		case <-ctx.Done():
			return <-dpDone
		case err := <-dpDone:
			return err
		case <-sub:
			v := r.snap.View()
			if !v.Differs(prev, true, kindWorkloadEndpoints) {
				continue
			}
			prev = v
		case <-r.learned.syncedChanged():
		case <-r.encap.changed():
		}
		if prev == nil || !prev.Synced {
			continue
		}
		encap, _ := r.encap.get()
		state, bad := localState(prev, r.node, r.learned.bgpSynced(), encap)
		if s := strings.Join(bad, "; "); s != lastBad {
			if s != "" {
				r.log.Warn("ignoring workload endpoints", "problems", s)
			}
			lastBad = s
		}
		if !stateChanged(handed, state) {
			continue
		}
		handed = &state
		r.dp.Update(state)
	}
}

// stateChanged says whether state differs from the last one handed to felix (nil before
// the first). The encapsulation subsystem hands over its state on every pass, also when
// nothing changed; each Update costs felix a pass that reads every route of its table,
// seconds at a full BGP table.
func stateChanged(last *felix.LocalState, state felix.LocalState) bool {
	return last == nil || !reflect.DeepEqual(*last, state)
}

// localState is felix's desired local state from a view: node's workloads (in key order)
// and affine blocks, and the encapsulation state (nil until its first pass); the learned
// routes are held until bgpSynced. bad lists the node's endpoints left out, and why.
func localState(v *snapshot.View, node string, bgpSynced bool, encap *felix.Encap) (state felix.LocalState, bad []string) {
	state = felix.LocalState{Blocks: v.AffineBlocks(node), HoldLearned: !bgpSynced, Encap: encap}
	for _, w := range snapshot.List[*api.WorkloadEndpoint](v) {
		if w.Spec.Node != node {
			continue
		}
		wl, err := workloadOf(w)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s/%s: %v", w.Namespace, w.Name, err))
			continue
		}
		state.Workloads = append(state.Workloads, wl)
	}
	return state, bad
}

// localRoutes is what the node originates over BGP: its confirmed blocks and its
// workloads' addresses (some may be borrowed from other nodes' blocks).
func localRoutes(state felix.LocalState) (blocks []netip.Prefix, addrs []netip.Addr) {
	for _, w := range state.Workloads {
		addrs = append(addrs, w.Addrs...)
	}
	return slices.Clone(state.Blocks), addrs
}

func workloadOf(w *api.WorkloadEndpoint) (felix.Workload, error) {
	addrs, err := w.Spec.Addrs()
	if err != nil {
		return felix.Workload{}, err
	}
	if strings.TrimSpace(w.Spec.InterfaceName) == "" {
		return felix.Workload{}, errors.New("no interfaceName")
	}
	return felix.Workload{Name: w.Namespace + "/" + w.Name, Interface: w.Spec.InterfaceName, Addrs: addrs}, nil
}
