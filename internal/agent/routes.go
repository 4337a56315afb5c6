package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// learnedRoutes is what BGP tells the routes subsystem.
type learnedRoutes struct {
	routes []felix.Route
	synced bool
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
	learned *handoff[learnedRoutes] // nil without BGP
	encap   *handoff[*felix.Encap]  // the encapsulation subsystem's last pass
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
		case <-r.learned.changed():
		case <-r.encap.changed():
		}
		if prev == nil || !prev.Synced {
			continue
		}
		learned, ok := r.learned.get()
		if !ok {
			learned.synced = r.learned == nil // without BGP there is nothing to wait for
		}
		encap, _ := r.encap.get()
		state, bad := localState(prev, r.node, learned, encap)
		if s := strings.Join(bad, "; "); s != lastBad {
			if s != "" {
				r.log.Warn("ignoring workload endpoints", "problems", s)
			}
			lastBad = s
		}
		r.dp.Update(state)
	}
}

// localState is felix's desired local state from a view: node's workloads (in key order)
// and affine blocks, the learned routes and the encapsulation state (nil until its first
// pass). bad lists the node's endpoints left out, and why.
func localState(v *snapshot.View, node string, learned learnedRoutes, encap *felix.Encap) (state felix.LocalState, bad []string) {
	state = felix.LocalState{Blocks: v.AffineBlocks(node), Learned: learned.routes, HoldLearned: !learned.synced, Encap: encap}
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
