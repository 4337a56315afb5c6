package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/healthprobe"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

// healthRetry spaces out record writes and lease grants that failed.
const healthRetry = time.Second

// healthProbeSubsystem probes this node's own endpoints of health-checked Services
// (tabby.io/health-check) from the host, and records each endpoint's result in etcd
// (EndpointHealth) when it changes, under the agent's lease (agentLease). Every node's
// serviceInputs read the records, so every proxy drops a failing endpoint.
type healthProbeSubsystem struct {
	node     string
	ds       *datastore.Client
	snap     *snapshot.Snapshot
	services *serviceIndex
	checker  *healthprobe.Checker
	lease    *agentLease
	m        *Metrics
	log      *slog.Logger
}

func newHealthProbeSubsystem(node string, ds *datastore.Client, snap *snapshot.Snapshot, services *serviceIndex, lease *agentLease, m *Metrics) *healthProbeSubsystem {
	return &healthProbeSubsystem{node: node, ds: ds, snap: snap, services: services, checker: healthprobe.NewChecker(nil), lease: lease, m: m,
		log: slog.Default().With("component", "healthprobe")}
}

func (h *healthProbeSubsystem) Name() string { return "healthprobe" }

// probeResult is one probe's outcome, from the goroutine that ran it.
type probeResult struct {
	t   healthprobe.Target
	err error
}

func (h *healthProbeSubsystem) Run(ctx context.Context) error {
	records := newHandoff[map[string]*api.EndpointHealth]()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		h.writeRecords(ctx, records)
	}()
	defer func() { <-writerDone }()

	p := healthprobe.New()
	sub := h.snap.Subscribe()
	results := make(chan probeResult)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var prev *snapshot.View
	running := 0
	for {
		select {
		case <-ctx.Done():
			for ; running > 0; running-- {
				<-results
			}
			return nil
		case <-sub:
			v := h.snap.View()
			if !v.Synced || !v.Differs(prev, false, serviceInputKinds...) {
				continue
			}
			prev = v
			targets := healthTargets(h.node, h.services.inputs(v), ownRecords(v, h.node))
			p.Set(time.Now(), targets)
			// Records of endpoints no longer probed go (at the first view, those the
			// previous run left for endpoints that are gone).
			records.put(desiredRecords(h.node, p))
			h.m.setProbeStates(p)
		case r := <-results:
			running--
			h.m.observeProbe(r.t.Check, r.err)
			st, changed := p.Result(time.Now(), r.t.Key, r.err)
			if changed {
				h.log.Info("endpoint health changed", "endpoint", r.t.Key, "addr", r.t.Addr, "state", st.State, "reason", st.Reason)
				records.put(desiredRecords(h.node, p))
				h.m.setProbeStates(p)
			}
		case <-timer.C:
		}
		for _, t := range p.Due(time.Now()) {
			running++
			go func() {
				results <- probeResult{t, h.checker.Check(ctx, t.Addr, t.Check)}
			}()
		}
		if next := p.Next(); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// healthTargets are the endpoints this node probes: for each Service with a valid
// health check, its endpoints on node that resolve the Service's first port, at their
// first address. A target whose record (own: this node's records by
// "<namespace>/<name>") the agent's previous run left starts in that record's state.
func healthTargets(node string, in []proxy.ServiceInput, own map[string]*api.EndpointHealth) []healthprobe.Target {
	var out []healthprobe.Target
	for _, s := range in {
		svc := s.Service
		hc, err := svc.HealthCheck()
		if hc == nil || err != nil || len(svc.Spec.Ports) == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			port, ok := ep.Ports[svc.Spec.Ports[0].Name]
			if ep.Node != node || ep.Workload == "" || !ok || len(ep.Addrs) == 0 {
				continue
			}
			_, workload, _ := strings.Cut(ep.Workload, "/")
			t := healthprobe.Target{Key: svc.Namespace + "/" + api.EndpointHealthName(svc.Name, workload),
				Addr: netip.AddrPortFrom(ep.Addrs[0], port), Check: *hc}
			if r := own[t.Key]; r != nil {
				st := healthprobe.Status{State: healthprobe.Failing, Since: r.Spec.Since, Reason: r.Spec.Reason}
				if r.Spec.Passing {
					st.State = healthprobe.Passing
				}
				t.Seed = &st
			}
			out = append(out, t)
		}
	}
	return out
}

// ownRecords are node's EndpointHealth records in v, by "<namespace>/<name>".
func ownRecords(v *snapshot.View, node string) map[string]*api.EndpointHealth {
	out := map[string]*api.EndpointHealth{}
	for _, r := range snapshot.List[*api.EndpointHealth](v) {
		if r.Spec.Node == node {
			out[r.Namespace+"/"+r.Name] = r
		}
	}
	return out
}

// desiredRecords are the records node keeps: one per target that has been probed (or
// was seeded), by "<namespace>/<name>".
func desiredRecords(node string, p *healthprobe.Prober) map[string]*api.EndpointHealth {
	out := map[string]*api.EndpointHealth{}
	for _, t := range p.Targets() {
		st, _ := p.Status(t.Key)
		if st.State == healthprobe.Unknown {
			continue
		}
		ns, name, _ := strings.Cut(t.Key, "/")
		svc, workload, _ := strings.Cut(name, ".") // Service names have no dot
		r := &api.EndpointHealth{TypeMeta: api.TypeMeta{Kind: "EndpointHealth", APIVersion: api.VersionTabby},
			Spec: api.EndpointHealthSpec{Service: svc, Workload: workload, Node: node, Check: t.Check.String() + " " + t.Addr.String(),
				Passing: st.State == healthprobe.Passing, Since: st.Since.UTC().Truncate(time.Millisecond)}}
		if !r.Spec.Passing {
			r.Spec.Reason = cmp.Or(st.Reason, "failing")
		}
		r.Namespace, r.Name = ns, name
		out[t.Key] = r
	}
	return out
}

// writeRecords keeps this node's EndpointHealth records in etcd equal to the latest
// desired set, under the agent's lease: it puts a record that is new or changed (or
// written under an earlier lease) and deletes one no longer desired. It starts from this
// node's records in the first synced view (a previous run's, under its lease, to be
// taken over or deleted). A write that fails is tried again after healthRetry; when the
// lease expired and a new one was granted, every record is written again under it.
func (h *healthProbeSubsystem) writeRecords(ctx context.Context, desired *handoff[map[string]*api.EndpointHealth]) {
	var (
		written map[string]writtenRecord
		retry   <-chan time.Time
	)
	lease, leaseChanged := h.lease.current()
	for {
		select {
		case <-ctx.Done():
			return
		case <-desired.changed():
		case <-retry:
			retry = nil
		case <-leaseChanged:
			lease, leaseChanged = h.lease.current()
		}
		want, ok := desired.get()
		if !ok || lease == 0 {
			continue
		}
		if written == nil {
			written = map[string]writtenRecord{}
			for k, r := range ownRecords(h.snap.View(), h.node) {
				written[k] = writtenRecord{spec: r.Spec} // lease 0: the previous run's
			}
		}
		if err := h.syncRecords(ctx, lease, want, written); err != nil && ctx.Err() == nil {
			h.log.Warn("writing endpoint health records failed; retrying", "err", err)
			retry = time.After(healthRetry)
		}
	}
}

// writtenRecord is a record as this agent last wrote it, and under which lease.
type writtenRecord struct {
	spec  api.EndpointHealthSpec
	lease clientv3.LeaseID
}

// recordChanges are the puts and deletes that make written (what is stored) match want
// under lease, in key order: a record is put when it is missing, differs or was written
// under another lease, and deleted when it is not wanted.
func recordChanges(want map[string]*api.EndpointHealth, written map[string]writtenRecord, lease clientv3.LeaseID) (puts []*api.EndpointHealth, deletes []string) {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if w, ok := written[k]; !ok || w.lease != lease || w.spec != want[k].Spec {
			puts = append(puts, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(written)) {
		if want[k] == nil {
			deletes = append(deletes, k)
		}
	}
	return puts, deletes
}

// syncRecords writes recordChanges and notes in written what it wrote.
func (h *healthProbeSubsystem) syncRecords(ctx context.Context, lease clientv3.LeaseID, want map[string]*api.EndpointHealth, written map[string]writtenRecord) error {
	puts, deletes := recordChanges(want, written, lease)
	const batch = 100 // below etcd's default --max-txn-ops (128)
	for len(puts) > 0 {
		n := min(batch, len(puts))
		ops := make([]datastore.Op, n)
		for i, r := range puts[:n] {
			ops[i] = datastore.Op{Action: datastore.OpApply, Resource: r, Lease: lease}
		}
		if _, err := h.ds.Txn(ctx, ops); err != nil {
			return err
		}
		for _, r := range puts[:n] {
			written[r.Namespace+"/"+r.Name] = writtenRecord{spec: r.Spec, lease: lease}
		}
		puts = puts[n:]
	}
	for _, k := range deletes {
		ns, name, _ := strings.Cut(k, "/")
		if _, err := h.ds.Delete(ctx, kindEndpointHealths, ns, name, ""); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
		delete(written, k)
	}
	return nil
}
