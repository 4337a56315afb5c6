package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/ipam"
)

// runAgent registers the node and runs its subsystems until ctx ends.
func runAgent(ctx context.Context, o options, ds *datastore.Client) error {
	if o.nodeName == "" {
		return errors.New("--node-name is empty and the host name is unknown")
	}
	v4, err := nodeAddress("--ip", o.ip, "--ip-autodetection-method", o.ipMethod, 4)
	if err != nil {
		return err
	}
	v6, err := nodeAddress("--ip6", o.ip6, "--ip6-autodetection-method", o.ip6Method, 6)
	if err != nil {
		return err
	}
	if _, err := registerNode(ctx, ds, o.nodeName, v4, v6); err != nil {
		return err
	}
	slog.Info("node registered", "node", o.nodeName, "ipv4", v4, "ipv6", v6)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var subsystems []func() error
	var local chan localRoutes
	var learned chan learnedRoutes
	if o.role == roleNode {
		dp, err := felix.NewDataplane(felix.Config{
			ResyncInterval: o.resyncInterval,
			Log:            slog.Default().With("component", "felix"),
		})
		if err != nil {
			return err
		}
		defer dp.Close()
		addReadinessCheck("routes", func() string {
			if dp.Status().LastOK.IsZero() {
				return "routes: felix has not programmed the node's routes yet"
			}
			return ""
		})
		ipamc := ipam.New(ds, nil)
		if o.bgp.enabled {
			local, learned = make(chan localRoutes, 1), make(chan learnedRoutes, 1)
		}
		encap := make(chan *felix.Encap, 1)
		nat := make(chan *felix.FilterState, 1) // natOutgoing: encap agent → policy syncer
		if v4.IsValid() {
			ea := &encapAgent{node: o.nodeName, underlay: v4, ds: ds, ipamc: ipamc, out: encap, nat: nat,
				log: slog.Default().With("component", "encap")}
			ea.vxlan = felix.NewVXLANReconciler(nil, ea.log)
			ea.ipip = felix.NewIPIPReconciler(nil, ea.log)
			ea.synced = &syncedOnce{why: "encapsulation: no complete pass yet (tunnel devices, tunnel addresses, MTU)"}
			addReadinessCheck("encapsulation", ea.synced.check)
			subsystems = append(subsystems, func() error { return ea.run(ctx) })
		}
		subsystems = append(subsystems,
			func() error { return dp.Run(ctx) },
			func() error { return ipamc.RunGarbageCollector(ctx, o.nodeName, o.gcInterval, ipam.GCOptions{}) },
			func() error { return feedDataplane(ctx, ds, ipamc, o.nodeName, dp, local, learned, encap) },
			func() error { return runPolicy(ctx, ds, o.nodeName, o.policy, nat) },
		)
	}
	var status chan chan statusReport // nil with BGP off: the status socket says so
	if o.bgp.enabled {
		status = make(chan chan statusReport)
		ba := &bgpAgent{o: o.bgp, node: o.nodeName, ds: ds, log: slog.Default().With("component", "bgp"),
			local: local, learned: learned, status: status}
		subsystems = append(subsystems, func() error { return ba.run(ctx) })
	}
	if len(subsystems) == 0 {
		return errors.New("nothing to run: a route reflector needs BGP (--bgp)")
	}
	sock := o.statusSocket
	if sock == "" {
		sock = filepath.Join(o.dataDir, StatusSocketName)
	}
	subsystems = append(subsystems, func() error { return serveStatus(ctx, sock, o.nodeName, o.role, status) })
	done := make(chan error, len(subsystems))
	for _, run := range subsystems {
		go func() { done <- run() }()
	}
	slog.Info("agent running", "node", o.nodeName, "role", o.role, "bgp", o.bgp.enabled)

	// Any subsystem returning ends the agent: running half of it would hide the failure.
	var first error
	for range subsystems {
		err := <-done
		if first == nil {
			first = err
			if ctx.Err() == nil && err == nil {
				first = errors.New("a subsystem stopped unexpectedly")
			}
			cancel()
		}
	}
	if ctx.Err() != nil && first == nil {
		slog.Info("shutting down")
	}
	return first
}

// nodeAddress resolves an --ip/--ip6 value: an address with its prefix length, none, or
// autodetect with the given method.
func nodeAddress(flag, value, methodFlag, method string, version int) (netip.Prefix, error) {
	switch value {
	case "none":
		return netip.Prefix{}, nil
	case "autodetect":
		m, err := felix.ParseAutodetectMethod(method, version)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s %q: %w", methodFlag, method, err)
		}
		a, err := felix.DetectNodeAddress(nil, m)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s=autodetect (%s): %w", flag, method, err)
		}
		return a.Prefix, nil
	}
	p, err := netip.ParsePrefix(value)
	if err != nil || (version == 4) != p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q: want an IPv%d address with its prefix length (like %s), autodetect or none",
			flag, value, version, map[int]string{4: "10.0.0.5/24", 6: "fd00::5/64"}[version])
	}
	return p, nil
}

var workloadEndpoints = func() *api.Kind {
	k, err := api.LookupKind("workloadendpoints")
	if err != nil {
		panic(err)
	}
	return k
}()

// feedDataplane turns the datastore's workload endpoints of this node and IPAM's blocks
// affine to it into felix's LocalState. It hands felix nothing until it has the full
// picture of both, so a starting agent never removes routes for workloads it has not
// read yet.
//
// With BGP, it also sends the node's blocks and workload addresses to local (for
// advertisements), and merges the routes BGP learned (from learned) into felix's state;
// until BGP has synced, felix keeps the gateway routes a previous run installed.
func feedDataplane(ctx context.Context, ds *datastore.Client, ipamc *ipam.Client, node string, dp *felix.Dataplane,
	local chan localRoutes, learned <-chan learnedRoutes, encap <-chan *felix.Encap) error {
	weps := ds.Watch(ctx, workloadEndpoints, "", 0)
	blocks := ipamc.WatchAffineBlocks(ctx, node)
	workloads := map[string]felix.Workload{}
	var affine []netip.Prefix
	wepsSynced, blocksRead := false, false
	bgpState := learnedRoutes{synced: learned == nil}
	var encapState *felix.Encap // nil until the encapsulation agent's first pass
	var lastLocal localRoutes
	sentLocal := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-weps:
			if !ok {
				return ctx.Err()
			}
			switch ev.Type {
			case datastore.Added, datastore.Modified, datastore.Deleted:
				w := ev.Resource.(*api.WorkloadEndpoint)
				key := w.Namespace + "/" + w.Name
				delete(workloads, key)
				if ev.Type != datastore.Deleted && w.Spec.Node == node {
					if wl, err := workloadOf(w); err != nil {
						slog.Warn("ignoring workload endpoint", "endpoint", key, "err", err)
					} else {
						workloads[key] = wl
					}
				}
			case datastore.Synced:
				wepsSynced = true
			case datastore.Error:
				slog.Warn("workload endpoint watch", "err", ev.Err)
				continue
			}
		case b, ok := <-blocks:
			if !ok {
				return ctx.Err()
			}
			affine, blocksRead = b, true
		case l := <-learned:
			bgpState = l
		case e := <-encap:
			encapState = e
		}
		if wepsSynced && blocksRead {
			state := felix.LocalState{Blocks: affine, Learned: bgpState.routes, HoldLearned: !bgpState.synced, Encap: encapState}
			var addrs []netip.Addr
			for _, k := range slices.Sorted(maps.Keys(workloads)) {
				state.Workloads = append(state.Workloads, workloads[k])
				addrs = append(addrs, workloads[k].Addrs...)
			}
			dp.Update(state)
			// Only a change goes to BGP: BGP's answer (learned routes) comes back here.
			if local != nil && (!sentLocal || !slices.Equal(lastLocal.blocks, affine) || !slices.Equal(lastLocal.addrs, addrs)) {
				lastLocal, sentLocal = localRoutes{blocks: affine, addrs: addrs}, true
				sendLatest(local, lastLocal)
			}
		}
	}
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
