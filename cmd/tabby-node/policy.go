package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/policy"
)

// policyOptions configure policy enforcement.
type policyOptions struct {
	resync               time.Duration
	endpointToHostAction string
}

// runPolicy watches every resource policy depends on, compiles the model on each change
// (once every watch has its starting state), renders this node's filter table and
// hands it to felix's syncer, which writes only what differs and repairs drift every
// resync interval. The same syncer writes the natOutgoing nat table state that arrives on
// nat (one writer for every tabby ipset).
func runPolicy(ctx context.Context, ds *datastore.Client, node string, o policyOptions, nat <-chan *felix.FilterState) error {
	log := slog.Default().With("component", "policy")
	switch o.endpointToHostAction {
	case "ACCEPT", "DROP", "RETURN":
	default:
		return fmt.Errorf("--default-endpoint-to-host-action %q: want ACCEPT, DROP or RETURN", o.endpointToHostAction)
	}
	syncer, err := felix.NewPolicySyncer(ctx, felix.Runner{}, log)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	addReadinessCheck("policy", func() string {
		if st := syncer.Stats(); st.Syncs == 0 {
			return "policy: iptables and ipsets not synced yet"
		} else if st.LastErr != nil {
			return "policy: the last iptables sync failed: " + st.LastErr.Error()
		}
		return ""
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	syncDone := make(chan error, 1)
	go func() { syncDone <- syncer.Run(ctx, o.resync) }()

	type kindEvent struct {
		kind int
		ev   datastore.Event
	}
	events := make(chan kindEvent, 256)
	kinds := make([]*api.Kind, len(policy.InputKinds))
	for i, plural := range policy.InputKinds {
		k, err := api.LookupKind(plural)
		if err != nil {
			return err
		}
		kinds[i] = k
		ch := ds.Watch(ctx, k, "", 0)
		go func() {
			for ev := range ch {
				select {
				case events <- kindEvent{i, ev}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	state := make([]map[string]api.Resource, len(kinds))
	for i := range state {
		state[i] = map[string]api.Resource{}
	}
	synced := make([]bool, len(kinds))
	allSynced := func() bool {
		for _, s := range synced {
			if !s {
				return false
			}
		}
		return true
	}
	cfg := felix.PolicyConfig{EndpointToHostAction: o.endpointToHostAction}
	handle := func(ke kindEvent) bool {
		ev := ke.ev
		switch ev.Type {
		case datastore.Added, datastore.Modified, datastore.Deleted:
			m := ev.Resource.GetObjectMeta()
			key := m.Namespace + "/" + m.Name
			if ev.Type == datastore.Deleted {
				delete(state[ke.kind], key)
			} else {
				state[ke.kind][key] = ev.Resource
			}
			return true
		case datastore.Synced:
			synced[ke.kind] = true
			return true
		case datastore.Error:
			log.Warn("watch", "kind", kinds[ke.kind].Name, "err", ev.Err)
		}
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return <-syncDone
		case err := <-syncDone:
			return err
		case ns := <-nat:
			syncer.UpdateNAT(ns)
			log.Debug("natOutgoing state", "sets", len(ns.IPSets), "chains", len(ns.Chains))
		case ke := <-events:
			changed := handle(ke)
			// Take whatever else is already queued before compiling once.
		drain:
			for {
				select {
				case ke := <-events:
					changed = handle(ke) || changed
				default:
					break drain
				}
			}
			if !changed || !allSynced() {
				continue
			}
			start := time.Now()
			var in policy.Input
			for _, s := range state {
				for _, r := range s {
					in.Add(r)
				}
			}
			m, err := policy.Build(in)
			if err != nil {
				log.Warn("resources left out of policy", "err", err)
			}
			fs := felix.RenderPolicy(m, node, cfg)
			syncer.Update(fs)
			log.Debug("policy rendered", "policies", len(m.Policies), "endpoints", len(m.Endpoints),
				"chains", len(fs.Chains), "ipsets", len(fs.IPSets), "chains6", len(fs.IPv6.Chains), "ipsets6", len(fs.IPv6.IPSets),
				"took", time.Since(start))
		}
	}
}
