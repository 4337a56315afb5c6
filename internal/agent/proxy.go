package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

// Service proxy modes.
const (
	ProxyNFTables = "nftables"
	ProxyNone     = "none"
)

// Full passes over the nftables tables (they repair drift) come every proxyRefresh, and at
// least proxyRefreshRatio times the last pass's own length apart.
const (
	proxyRefresh      = 30 * time.Second
	proxyRefreshRatio = 10
)

// proxySubsystem load-balances Services on this node: on every view that changes
// Services, Endpoints, EndpointSlices, WorkloadEndpoints or EndpointHealths (serviceKinds)
// it derives the node's load balancing (proxy.Desired) and has felix's ServiceProxy write only the difference; every
// proxyRefresh it rewrites the tables whole.
type proxySubsystem struct {
	node string
	// exempt are the node-local DNS addresses: a Service on one of them (kube-dns's
	// 10.96.0.10) is answered by the node's own DNS server, not load-balanced away.
	exempt   []netip.Addr
	snap     *snapshot.Snapshot
	services *serviceIndex
	sp       *felix.ServiceProxy
	health   *healthCheckServer
	ready    *Readiness
	log      *slog.Logger
}

func newProxySubsystem(node string, exempt []netip.Addr, snap *snapshot.Snapshot, services *serviceIndex, ready *Readiness, m *Metrics) (*proxySubsystem, error) {
	log := slog.Default().With("component", "proxy")
	sp, err := felix.NewServiceProxy(felix.ServiceProxyConfig{Log: log})
	if err != nil {
		return nil, fmt.Errorf("service proxy: %w", err)
	}
	sp.Observe = m.observeApply
	ready.Set("proxy", "proxy: Services not programmed yet")
	return &proxySubsystem{node: node, exempt: exempt, snap: snap, services: services, sp: sp, health: newHealthCheckServer("", log), ready: ready, log: log}, nil
}

func (p *proxySubsystem) Name() string { return "proxy" }

func (p *proxySubsystem) Run(ctx context.Context) error {
	sub := p.snap.Subscribe()
	// A full pass re-reads and rewrites the whole table: at 10k Services it takes seconds,
	// and a change waits behind it, so passes stay at least proxyRefreshRatio of their own
	// length apart.
	refresh := time.NewTimer(proxyRefresh)
	defer refresh.Stop()
	defer p.health.Close()
	var prev *snapshot.View
	var st, applied *proxy.LBState
	for {
		full := false
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
			v := p.snap.View()
			if !v.Synced || !v.Differs(prev, false, append(serviceKinds, kindIPPools)...) {
				continue
			}
			prev = v
			p.sp.SetPodCIDRs(podCIDRs(v))
			in := p.inputs(v)
			st = proxy.Desired(p.node, in)
			p.health.Update(healthChecks(p.node, in))
		case <-refresh.C:
			full = true
		}
		if st == nil {
			if full {
				refresh.Reset(proxyRefresh)
			}
			continue
		}
		apply := p.sp.ApplyCached
		if full {
			apply = p.sp.Apply
		}
		start := time.Now()
		if err := apply(ctx, st); err != nil {
			p.log.Warn("service proxy apply failed; retrying with a full pass", "err", err)
			if err = p.sp.Apply(ctx, st); err != nil && ctx.Err() == nil {
				p.ready.Set("proxy", "proxy: the last nftables apply failed: "+err.Error())
				if full {
					refresh.Reset(proxyRefresh)
				}
				continue
			}
		}
		p.ready.Set("proxy")
		p.forgetStaleUDP(applied, st)
		applied = st
		took := time.Since(start)
		if full {
			refresh.Reset(max(proxyRefresh, proxyRefreshRatio*took))
		}
		p.log.Debug("services programmed", "ports", len(st.Ports), "full", full, "took", took)
	}
}

// podCIDRs are the CIDRs of every IP pool, sorted: traffic to a Service from elsewhere is
// masqueraded (kube-proxy's --cluster-cidr).
func podCIDRs(v *snapshot.View) []netip.Prefix {
	var out []netip.Prefix
	for _, pool := range snapshot.List[*api.IPPool](v) {
		if c, err := netip.ParsePrefix(pool.Spec.CIDR); err == nil {
			out = append(out, c.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}

// inputs are the view's Services and endpoints, less those on an exempt address.
func (p *proxySubsystem) inputs(v *snapshot.View) []proxy.ServiceInput {
	in := slices.Clone(p.services.inputs(v)) // shared with DNS: filter a copy
	return slices.DeleteFunc(in, func(s proxy.ServiceInput) bool {
		addrs, err := s.Service.ClusterAddrs()
		return err == nil && slices.ContainsFunc(addrs, func(a netip.Addr) bool { return slices.Contains(p.exempt, a) })
	})
}

// forgetStaleUDP deletes the conntrack entries of UDP flows to backends that left a
// Service port between two applied states (none on the first), once the rules no longer
// lead to them.
func (p *proxySubsystem) forgetStaleUDP(old, next *proxy.LBState) {
	flows := proxy.StaleUDP(old, next)
	if len(flows) == 0 {
		return
	}
	n, err := p.sp.DeleteStaleUDP(flows)
	if err != nil {
		p.log.Warn("deleting stale UDP conntrack entries failed", "flows", len(flows), "deleted", n, "err", err)
		return
	}
	p.log.Debug("stale UDP conntrack entries deleted", "flows", len(flows), "deleted", n)
}
