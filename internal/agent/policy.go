package agent

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/policy"
)

// policySubsystem compiles the policy model from the snapshot on every change that matters,
// renders this node's filter table and hands it to felix's syncer, which writes only what
// differs and repairs drift every refresh interval. The same syncer writes natOutgoing's
// nat table (one writer for every tabby ipset). Rules' services matches read the
// Services' endpoints the proxy, DNS and BGP share (services). The settings it owns
// (endpoint-to-host action, failsafe ports, chain insert mode, iptables backend and
// refresh) come from the flags and FelixConfigurations (cfg), and change live.
type policySubsystem struct {
	node     string
	cfg      *felixConfig
	nat      bool // render natOutgoing (the node has an IPv4 address)
	snap     *snapshot.Snapshot
	syncer   *felix.PolicySyncer
	services *serviceIndex
	kinds    []*api.Kind
	log      *slog.Logger
}

func newPolicySubsystem(node string, cfg *felixConfig, nat bool, snap *snapshot.Snapshot, syncer *felix.PolicySyncer, services *serviceIndex, ready *Readiness, m *Metrics) *policySubsystem {
	syncer.Observe = m.observeApply
	m.watchPolicy(syncer)
	ready.Check("policy", func() []string {
		if st := syncer.Stats(); st.Syncs == 0 {
			return []string{"policy: iptables and ipsets not synced yet"}
		} else if st.LastErr != nil {
			return []string{"policy: the last iptables sync failed: " + st.LastErr.Error()}
		}
		return nil
	})
	kinds := make([]*api.Kind, len(policy.InputKinds))
	for i, p := range policy.InputKinds {
		kinds[i] = mustKind(p)
	}
	return &policySubsystem{node: node, cfg: cfg, nat: nat, snap: snap, syncer: syncer, services: services, kinds: kinds,
		log: slog.Default().With("component", "policy")}
}

func (p *policySubsystem) Name() string { return "policy" }

func (p *policySubsystem) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	syncDone := make(chan error, 1)
	go func() { syncDone <- p.syncer.Run(ctx, p.cfg.flags.IptablesRefresh) }()
	sub := p.snap.Subscribe()
	var prev *snapshot.View
	var lastNAT *felix.FilterState
	// The interfaces' addresses, for host endpoints found by address (HostInterfaces),
	// carried from one render to the next; the rest of felix.PolicyConfig comes from the
	// effective settings at each render.
	var hostIfaces map[string][]netip.Addr
	// The tunnel guard reads the Nodes and IP pools besides policy's kinds, and the
	// FelixConfigurations hold settings; services matches read the Services' endpoints,
	// so a change of those renders again only while some rule has one.
	renderKinds := append(slices.Clone(p.kinds), kindNodes, kindIPPools, kindFelixConfigs)
	serviceKinds := []*api.Kind{kindServices, kindEndpoints, kindEndpointSlices}
	usesServices := false
	// Host endpoints without interfaceName are found by the interfaces' addresses: while
	// the node has any, an address change (an event, or the periodic re-read should the
	// events fail) renders again when the interfaces' addresses differ.
	addrKick := make(chan struct{}, 1)
	if err := felix.SubscribeAddrs(ctx, addrKick, func(err error) {
		p.log.Warn("address events failed; interfaces are re-read every refresh interval", "err", err)
	}); err != nil {
		p.log.Warn("no address events; interfaces are re-read every refresh interval", "err", err)
	}
	refresh := time.NewTicker(cmp.Or(p.cfg.flags.IptablesRefresh, 5*time.Second))
	defer refresh.Stop()
	byAddr := false // the last model had host endpoints of the node found by address
	for {
		ifacesMayDiffer := false
		select {
		case <-ctx.Done():
			return <-syncDone
		case err := <-syncDone:
			return err
		case <-sub:
		case <-addrKick:
			ifacesMayDiffer = byAddr
		case <-refresh.C:
			ifacesMayDiffer = byAddr
		}
		v := p.snap.View()
		if !v.Synced {
			continue
		}
		if ifacesMayDiffer {
			if ifaces := p.hostInterfaces(); !maps.EqualFunc(ifaces, hostIfaces, slices.Equal) {
				hostIfaces = ifaces
				prev = nil // render again
			}
		}
		if p.nat && v.Differs(prev, false, kindIPPools) {
			if ns := felix.RenderNATOutgoing(encapPools(v)); !reflect.DeepEqual(ns, lastNAT) {
				lastNAT = ns
				p.syncer.UpdateNAT(ns)
				p.log.Debug("natOutgoing state", "sets", len(ns.IPSets), "chains", len(ns.Chains))
			}
		}
		if v.Differs(prev, false, renderKinds...) || (usesServices && v.Differs(prev, false, serviceKinds...)) {
			start := time.Now()
			s, _ := p.cfg.effective(v)
			p.syncer.SetInterval(s.IptablesRefresh)
			p.syncer.SetChainInsertMode(s.ChainInsertMode == "append")
			if err := p.syncer.SetBackend(s.IptablesBackend); err != nil {
				p.log.Error("iptables backend not switched", "err", err) // validated: cannot happen
			}
			in := policyInput(v, p.kinds)
			in.Services = p.services.inputs(v)
			m, err := policy.Build(in)
			if err != nil {
				p.log.Warn("resources left out of policy", "err", err)
			}
			usesServices = m.UsesServices()
			if byAddr = m.FindsInterfaceByAddr(p.node); byAddr && !ifacesMayDiffer {
				hostIfaces = p.hostInterfaces()
			}
			fcfg := felix.PolicyConfig{EndpointToHostAction: s.EndpointToHostAction, Tunnels: tunnelGuard(v),
				FailsafeInbound: s.FailsafeInbound, FailsafeOutbound: s.FailsafeOutbound, HostInterfaces: hostIfaces}
			fs := felix.RenderPolicy(m, p.node, fcfg)
			p.syncer.Update(fs)
			p.log.Debug("policy rendered", "policies", len(m.Policies), "endpoints", len(m.Endpoints),
				"chains", len(fs.Chains), "ipsets", len(fs.IPSets), "chains6", len(fs.IPv6.Chains), "ipsets6", len(fs.IPv6.IPSets),
				"took", time.Since(start))
		}
		prev = v
	}
}

// hostInterfaces reads the node's interfaces and their addresses, for host endpoints
// found by address; on failure it keeps none (those endpoints then govern nothing) and
// warns.
func (p *policySubsystem) hostInterfaces() map[string][]netip.Addr {
	ifaces, err := felix.HostInterfaceAddrs(nil, felix.WorkloadInterfacePrefix)
	if err != nil {
		p.log.Warn("interfaces not read: host endpoints without interfaceName govern none", "err", err)
	}
	return ifaces
}

// tunnelGuard is the view's felix.TunnelGuard: the tunnels an enabled IP pool uses (VXLAN
// over IPv6 for an IPv6 pool), and every Node's IPv4 and IPv6 addresses as the peers that
// may send through them.
func tunnelGuard(v *snapshot.View) felix.TunnelGuard {
	var g felix.TunnelGuard
	for _, p := range encapPools(v) {
		if p.Disabled {
			continue
		}
		vxlan := p.VXLANMode != "" && p.VXLANMode != api.EncapNever
		if p.CIDR.Addr().Is6() {
			g.VXLANV6 = g.VXLANV6 || vxlan
			continue
		}
		g.IPIP = g.IPIP || (p.IPIPMode != "" && p.IPIPMode != api.EncapNever)
		g.VXLAN = g.VXLAN || vxlan
	}
	for _, n := range snapshot.List[*api.Node](v) {
		if n.Spec.BGP == nil {
			continue
		}
		for _, s := range []string{n.Spec.BGP.IPv4Address, n.Spec.BGP.IPv6Address} {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				g.Peers = append(g.Peers, pfx.Addr())
			} else if a, err := netip.ParseAddr(s); err == nil {
				g.Peers = append(g.Peers, a)
			}
		}
	}
	return g
}

// policyInput collects the view's resources of policy's input kinds.
func policyInput(v *snapshot.View, kinds []*api.Kind) policy.Input {
	var in policy.Input
	for _, k := range kinds {
		for _, r := range v.Resources(k) {
			in.Add(r)
		}
	}
	return in
}
