package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

// Service proxy modes.
const (
	ProxyNFTables = "nftables"
	ProxyIPTables = "iptables"
	ProxyNone     = "none"
)

// serviceWriter is felix's writer of a proxy mode: ServiceProxy (nftables) or
// ServiceProxyIPTables.
type serviceWriter interface {
	Apply(context.Context, *proxy.LBState) error
	ApplyCached(context.Context, *proxy.LBState) error
	SetPodCIDRs([]netip.Prefix)
	DeleteStaleUDP([]proxy.StaleFlow) (uint, error)
	DeleteUDPNotServing(*proxy.LBState) (uint, error)
	Remove(context.Context) error
}

// Full passes over the nftables tables (they repair drift) come every proxyRefresh, and at
// least proxyRefreshRatio times the last pass's own length apart.
const (
	proxyRefresh      = 30 * time.Second
	proxyRefreshRatio = 10
)

// proxySubsystem load-balances Services on this node: on every view that changes
// Services, Endpoints, EndpointSlices, WorkloadEndpoints or EndpointHealths
// (serviceInputKinds) it derives the node's load balancing
// (proxy.Desired, through an LBCache) and has felix's ServiceProxy write only the difference; every
// proxyRefresh it rewrites the tables whole.
type proxySubsystem struct {
	node string
	// exempt are the node-local DNS addresses of a view (nil: none): a Service on one of
	// them (kube-dns's 10.96.0.10) is answered by the node's own DNS server, not
	// load-balanced away.
	exempt   func(*snapshot.View) []netip.Addr
	snap     *snapshot.Snapshot
	services *serviceIndex
	lb       proxy.LBCache
	mode     string
	sp       serviceWriter
	// other is the other mode's writer, if it can run here: Run removes what it left.
	other  serviceWriter
	health *healthCheckServer
	ready  *Readiness
	log    *slog.Logger
}

// newProxySubsystem returns the proxy in mode (ProxyNFTables or ProxyIPTables; the
// latter writes through backend, the one policy detected). Both families are balanced
// where the host can: IPv6 when ip6tables works (ipv6) and, in nftables mode, nft takes
// the ip6 table.
func newProxySubsystem(node, mode string, backend felix.Backend, ipv6 bool, exempt func(*snapshot.View) []netip.Addr, snap *snapshot.Snapshot, services *serviceIndex, ready *Readiness, m *Metrics) (*proxySubsystem, error) {
	log := slog.Default().With("component", "proxy")
	nft, nftErr := felix.NewServiceProxy(felix.ServiceProxyConfig{Log: log, IPv6: ipv6})
	if nftErr != nil && ipv6 {
		log.Warn("nftables: no ip6 table here: IPv6 Services are not balanced", "err", nftErr)
		nft, nftErr = felix.NewServiceProxy(felix.ServiceProxyConfig{Log: log})
	}
	ipt := felix.NewServiceProxyIPTables(felix.ServiceProxyConfig{Log: log, IPv6: ipv6}, backend, felix.Runner{})
	p := &proxySubsystem{node: node, mode: mode, exempt: exempt, snap: snap, services: services, health: newHealthCheckServer("", log), ready: ready, log: log}
	switch {
	case mode == ProxyIPTables:
		ipt.Observe = m.observeApply
		p.sp = ipt
		if nftErr == nil {
			p.other = nft
		}
	case nftErr != nil:
		return nil, fmt.Errorf("service proxy: %w", nftErr)
	default:
		nft.Observe = m.observeApply
		p.sp, p.other = nft, ipt
		backend = felix.Backend{Name: "nftables"}
	}
	log.Info("service proxy", "mode", mode, "backend", backend.Name, "ipv6", ipv6)
	m.proxyInfo(mode, backend.Name)
	ready.Set("proxy", "proxy: Services not programmed yet")
	return p, nil
}

// proxyInfo registers tabby_proxy_info: which mode and backend the proxy writes with.
func (m *Metrics) proxyInfo(mode, backend string) {
	if m == nil {
		return
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tabby_proxy_info", Help: "Always 1; the labels say the Service proxy's mode and the backend it writes with (nftables, or the iptables backend: nft or legacy).",
		ConstLabels: prometheus.Labels{"mode": mode, "backend": backend}})
	g.Set(1)
	m.reg.MustRegister(g)
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
	if p.other != nil {
		// Switching modes: what the other mode wrote would still catch the traffic.
		if err := p.other.Remove(ctx); err != nil {
			p.log.Warn("removing the other proxy mode's rules failed", "err", err)
		}
	}
	var prev *snapshot.View
	var st, applied *proxy.LBState
	for {
		full := false
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
			v := p.snap.View()
			if !v.Synced || !v.Differs(prev, false, append(serviceInputKinds, kindIPPools)...) {
				continue
			}
			prev = v
			p.sp.SetPodCIDRs(podCIDRs(v))
			in := p.inputs(v)
			st = p.lb.Desired(p.node, in)
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
				p.ready.Set("proxy", "proxy: the last "+p.mode+" apply failed: "+err.Error())
				if full {
					refresh.Reset(proxyRefresh)
				}
				continue
			}
		}
		p.ready.Set("proxy")
		if applied == nil || full {
			p.forgetUDPNotServing(st)
		} else {
			p.forgetStaleUDP(applied, st)
		}
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
	in := p.services.inputs(v)
	if p.exempt == nil {
		return in
	}
	exempt := p.exempt(v)
	return slices.DeleteFunc(slices.Clone(in), func(s proxy.ServiceInput) bool { // shared with DNS: filter a copy
		addrs, err := s.Service.ClusterAddrs()
		return err == nil && slices.ContainsFunc(addrs, func(a netip.Addr) bool { return slices.Contains(exempt, a) })
	})
}

// forgetUDPNotServing deletes the conntrack entries of UDP flows to backends that are not
// behind their Service port in st: on the first applied state, for what changed while
// no agent ran (a restart, an upgrade), and on every full pass, for what a failed
// delete left.
func (p *proxySubsystem) forgetUDPNotServing(st *proxy.LBState) {
	n, err := p.sp.DeleteUDPNotServing(st)
	if err != nil {
		p.log.Warn("deleting stale UDP conntrack entries failed", "deleted", n, "err", err)
		return
	}
	if n > 0 {
		p.log.Info("stale UDP conntrack entries deleted", "deleted", n, "by", "full pass")
	}
}

// forgetStaleUDP deletes the conntrack entries of UDP flows to backends that left a
// Service port between two applied states, once the rules no longer lead to them.
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
