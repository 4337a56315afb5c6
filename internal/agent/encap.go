package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/ipam"
)

// encapResync is the period of full passes over the tunnel devices.
const encapResync = 10 * time.Second

// encapSubsystem allocates this node's tunnel addresses, records them with the VTEP MACs
// and the workload MTU on its Node, keeps vxlan.tabby, vxlan-v6.tabby and tunl0 right, and
// hands the routes subsystem the encapsulation state.
type encapSubsystem struct {
	node      string
	underlay  netip.Prefix // this node's IPv4 address (invalid: none, an IPv6-only node)
	underlay6 netip.Prefix // this node's IPv6 address (invalid: none)
	ds        *datastore.Client
	writes    *writeGate // closed: the Node is not written (tunnel addresses, MTU, WireGuard key)
	tunnels   *ipam.TunnelAddrs
	snap      *snapshot.Snapshot
	out       *handoff[*felix.Encap]
	ready     *Readiness
	metrics   *Metrics
	log       *slog.Logger
	vxlan     *felix.VXLANReconciler
	vxlan6    *felix.VXLANReconciler
	ipip      *felix.IPIPReconciler
	wg        *wireGuard
	cfg       *felixConfig // tunnel MTUs and WireGuard on or off
	// ipipMissing is set once the kernel was found without ipip (warned once); it is
	// checked again whenever the set of IPIP pools changes (a module may have been
	// loaded meanwhile).
	ipipMissing bool
	ipipPools   []string // the IPIP pools of the last pass
}

func newEncapSubsystem(node string, underlay, underlay6 netip.Prefix, wg WireGuardConfig, cfg *felixConfig, ds *datastore.Client, ipamc *ipam.Client, snap *snapshot.Snapshot,
	out *handoff[*felix.Encap], writes *writeGate, ready *Readiness, m *Metrics) *encapSubsystem {
	log := slog.Default().With("component", "encap")
	ready.Set("encapsulation", "encapsulation: no complete pass yet (tunnel devices, tunnel addresses, MTU)")
	a := &encapSubsystem{node: node, underlay: underlay, underlay6: underlay6, ds: ds, writes: writes, tunnels: ipamc.TunnelAddrs(node, log), snap: snap, out: out,
		ready: ready, metrics: m, log: log, vxlan: felix.NewVXLANReconciler(nil, log), vxlan6: felix.NewVXLANReconcilerV6(nil, log),
		ipip: felix.NewIPIPReconciler(nil, log), wg: newWireGuard(wg, m, log), cfg: cfg}
	a.vxlan.Observe, a.vxlan6.Observe, a.ipip.Observe = m.observeApply, m.observeApply, m.observeApply
	return a
}

func (a *encapSubsystem) Name() string { return "encapsulation" }

func (a *encapSubsystem) Run(ctx context.Context) error {
	tick := time.NewTicker(encapResync)
	defer tick.Stop()
	sub := a.snap.Subscribe()
	var prev *snapshot.View
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
			v := a.snap.View()
			if !v.Differs(prev, true, kindNodes, kindIPPools, kindFelixConfigs) {
				continue
			}
			prev = v
		case <-tick.C:
		}
		if prev == nil || !prev.Synced {
			continue
		}
		if err := a.reconcile(ctx, prev); err != nil {
			a.log.Warn("encapsulation pass", "err", err)
		} else {
			a.ready.Set("encapsulation")
		}
	}
}

// encapInput is the encapsulation desired state's input, from a view.
func encapInput(v *snapshot.View, node string) felix.EncapInput {
	in := felix.EncapInput{Node: node, Blocks: v.Affinities, Pools: encapPools(v)}
	for _, n := range snapshot.List[*api.Node](v) {
		in.Nodes = append(in.Nodes, encapNode(n))
	}
	return in
}

// encapPools are the view's pools, as encapsulation and natOutgoing read them; a pool whose
// CIDR does not parse is left out.
func encapPools(v *snapshot.View) []felix.EncapPool {
	var out []felix.EncapPool
	for _, p := range snapshot.List[*api.IPPool](v) {
		cidr, err := p.Prefix()
		if err != nil {
			continue
		}
		out = append(out, felix.EncapPool{Name: p.Name, CIDR: cidr, IPIPMode: p.Spec.IPIPMode,
			VXLANMode: p.Spec.VXLANMode, NATOutgoing: p.Spec.NATOutgoing, Disabled: p.Spec.Disabled})
	}
	return out
}

func (a *encapSubsystem) reconcile(ctx context.Context, v *snapshot.View) error {
	e := felix.DesiredEncap(encapInput(v, a.node))
	self, ok := snapshot.Get[*api.Node](v, "", a.node)
	if !ok {
		return errors.New("own Node resource not found")
	}
	// The MTU of the link of the node's address (its IPv6 one on an IPv6-only node).
	link := a.underlay
	if !link.IsValid() {
		link = a.underlay6
	}
	underlayMTU, err := felix.LinkMTUOf(link.Addr())
	if err != nil {
		return err
	}
	settings, _ := a.cfg.effective(v)
	mtus := felix.NewTunnelMTUs(underlayMTU, settings.VXLANMTU, settings.IPIPMTU)
	mtu := felix.WorkloadMTU(e, mtus)
	var errs []error
	// WireGuard first: its key is published (recordOnNode) once its device works. After
	// an error the published key stays as it is.
	wg, err := a.wg.pass(v, a.node, underlayMTU, settings.WireGuard)
	publish := &wg.publish
	if err != nil {
		errs, publish = append(errs, err), nil
	}
	if wg.mtu > 0 {
		mtu = min(mtu, wg.mtu)
	}
	var wgPools []string
	if wg.publish != "" {
		for _, p := range encapPools(v) {
			if !p.Disabled && p.CIDR.Addr().Is4() {
				wgPools = append(wgPools, p.Name)
			}
		}
	}
	if !a.writes.isOpen() {
		// Started from the cache: the cached Node's record stands until etcd answers.
	} else if err := a.recordOnNode(ctx, self, e, mtu, publish, wgPools); err != nil {
		errs = append(errs, err)
	}
	var cfg, cfg6 *felix.VXLANDeviceConfig
	if len(e.VXLANPools) > 0 && a.underlay.IsValid() {
		if vtep := encapNode(self).VXLANAddr; vtep.IsValid() {
			cfg = &felix.VXLANDeviceConfig{VTEP: vtep, MAC: felix.VXLANMAC(a.node), Underlay: a.underlay.Addr(), MTU: mtus.VXLAN}
		}
	}
	if vtep := encapNode(self).VXLANAddrV6; len(e.VXLANPoolsV6) > 0 && vtep.IsValid() && a.underlay6.IsValid() {
		if mtu6, err := felix.LinkMTUOf(a.underlay6.Addr()); err != nil {
			errs = append(errs, err)
		} else {
			cfg6 = &felix.VXLANDeviceConfig{VTEP: vtep, MAC: felix.VXLANMACV6(a.node), Underlay: a.underlay6.Addr(), MTU: mtu6 - felix.VXLANOverheadV6}
		}
	}
	var problems []string
	for _, d := range []struct {
		r     *felix.VXLANReconciler
		cfg   *felix.VXLANDeviceConfig
		pools []string
		peers []felix.VXLANPeer
	}{{a.vxlan, cfg, e.VXLANPools, e.VXLANPeers}, {a.vxlan6, cfg6, e.VXLANPoolsV6, e.VXLANPeersV6}} {
		if d.cfg == nil && len(d.pools) > 0 {
			continue // no VTEP address yet: recordOnNode allocated it; the snapshot brings it back
		}
		if n, err := d.r.Apply(d.cfg, d.peers); errors.Is(err, unix.EOPNOTSUPP) {
			// Tried again every pass: the problem goes once the kernel can.
			problems = append(problems, fmt.Sprintf("encapsulation: VXLAN pools %s need the kernel's vxlan support, which this kernel lacks (%v): their tunnelled routes do not work",
				strings.Join(d.pools, ", "), err))
		} else if err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			a.log.Info("vxlan updated", "writes", n, "pools", d.pools, "peers", len(d.peers), "routes", len(e.Routes))
		}
	}
	if !slices.Equal(e.IPIPPools, a.ipipPools) {
		a.ipipPools, a.ipipMissing = slices.Clone(e.IPIPPools), false // check the kernel again
	}
	if !a.ipipMissing {
		var ipipAddr netip.Addr
		if len(e.IPIPPools) > 0 {
			ipipAddr = encapNode(self).IPIPAddr
		}
		if len(e.IPIPPools) > 0 && !ipipAddr.IsValid() {
			// Not allocated yet: recordOnNode did it; the snapshot brings it back.
		} else if n, err := a.ipip.Apply(ipipAddr, mtus.IPIP); errors.Is(err, felix.ErrNoIPIP) {
			a.ipipMissing = true
			a.log.Warn("IPIP pools need the kernel's ipip support, which this kernel lacks: their tunnelled routes stay unprogrammed; everything else works",
				"pools", e.IPIPPools, "err", err)
		} else if err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			a.log.Info("ipip updated", "writes", n, "addr", ipipAddr)
		}
	}
	if a.ipipMissing && len(e.IPIPPools) > 0 {
		problems = append(problems, fmt.Sprintf("encapsulation: IPIP pools %s need the kernel's ipip support, which this kernel lacks: their tunnelled routes are not programmed",
			strings.Join(e.IPIPPools, ", ")))
	}
	a.ready.SetProblems("encapsulation", append(problems, wg.problems...)...)
	if len(e.Problems) > 0 {
		a.log.Debug("encapsulation incomplete", "problems", e.Problems)
	}
	a.out.put(&e)
	return errors.Join(errs...)
}

// recordOnNode allocates the tunnel addresses that pools need (wireguard.tabby's from
// wgPools, when WireGuard works), releases those that none needs any more, and records
// them, the VTEP MACs, the workload MTU and the WireGuard public key (unless wgKey is nil;
// "" removes it) on this node's Node resource. The snapshot brings the change back,
// which makes another pass.
func (a *encapSubsystem) recordOnNode(ctx context.Context, self *api.Node, e felix.Encap, mtu int, wgKey *string, wgPools []string) error {
	n := *self
	n.Spec.BGP = cloneBGP(self.Spec.BGP)
	n.Annotations = maps.Clone(self.Annotations)
	changed, err := a.recordVTEP(ctx, ipam.TunnelVXLAN, e.VXLANPools, felix.VXLANMAC(a.node), &n.Spec.IPv4VXLANTunnelAddr, &n.Spec.VXLANTunnelMACAddr)
	if err != nil {
		return err
	}
	// The IPv6 VTEP's failure is not fatal to the rest of the Node's record (IPv4 VXLAN, MTU).
	vtepChanged, vxlan6Err := a.recordVTEP(ctx, ipam.TunnelVXLANV6, e.VXLANPoolsV6, felix.VXLANMACV6(a.node), &n.Spec.IPv6VXLANTunnelAddr, &n.Spec.VXLANTunnelMACAddrV6)
	changed = changed || vtepChanged
	var ipipErr error
	if len(e.IPIPPools) > 0 {
		if n.Spec.BGP == nil {
			n.Spec.BGP = &api.NodeBGPSpec{}
		}
		// Not fatal to the rest of the Node's record (VXLAN, MTU).
		recorded, _ := netip.ParseAddr(n.Spec.BGP.IPv4IPIPTunnelAddr)
		addr, err := a.tunnels.Ensure(ctx, ipam.TunnelIPIP, recorded, e.IPIPPools)
		a.metrics.observeTunnelAllocation(err)
		if err != nil {
			ipipErr = err
		} else if s := addr.String(); n.Spec.BGP.IPv4IPIPTunnelAddr != s {
			n.Spec.BGP.IPv4IPIPTunnelAddr, changed = s, true
		}
	} else if n.Spec.BGP != nil && n.Spec.BGP.IPv4IPIPTunnelAddr != "" {
		a.tunnels.Release(ctx, ipam.TunnelIPIP)
		n.Spec.BGP.IPv4IPIPTunnelAddr, changed = "", true
	}
	var wgErr error
	if len(wgPools) > 0 {
		var recorded netip.Addr
		if w := n.Spec.Wireguard; w != nil {
			recorded, _ = netip.ParseAddr(w.InterfaceIPv4Address)
		}
		addr, err := a.tunnels.Ensure(ctx, ipam.TunnelWireGuard, recorded, wgPools)
		a.metrics.observeTunnelAllocation(err)
		if err != nil {
			wgErr = err
		} else if s := addr.String(); recorded != addr {
			n.Spec.Wireguard, changed = &api.NodeWireguardSpec{InterfaceIPv4Address: s}, true
		}
	} else if wgKey != nil && n.Spec.Wireguard != nil {
		a.tunnels.Release(ctx, ipam.TunnelWireGuard)
		n.Spec.Wireguard, changed = nil, true
	}
	ipipErr = errors.Join(ipipErr, vxlan6Err, wgErr)
	if have := wireguardKeyOf(self); wgKey != nil && *wgKey != have {
		n.Status, changed = nil, true
		if *wgKey != "" {
			n.Status = &api.NodeStatus{WireguardPublicKey: *wgKey}
		}
	}
	if v := strconv.Itoa(mtu); n.Annotations[api.AnnotationWorkloadMTU] != v {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[api.AnnotationWorkloadMTU], changed = v, true
	}
	if !changed {
		return ipipErr
	}
	if _, err := a.ds.Update(ctx, &n); err != nil && !errors.Is(err, datastore.ErrConflict) {
		return errors.Join(ipipErr, fmt.Errorf("record tunnel address and MTU on node %s: %w", a.node, err))
	}
	return ipipErr // a conflict: the snapshot brings the newer Node and another pass
}

// recordVTEP sets a VXLAN device's VTEP address (allocated for tun from pools) and MAC in
// the Node fields addr and mac, or, when no pool uses the device, releases the address
// and clears both. It reports whether it changed them.
func (a *encapSubsystem) recordVTEP(ctx context.Context, tun ipam.Tunnel, pools []string, hw net.HardwareAddr, addr, mac *string) (bool, error) {
	if len(pools) == 0 {
		if *addr == "" && *mac == "" {
			return false, nil
		}
		a.tunnels.Release(ctx, tun)
		*addr, *mac = "", ""
		return true, nil
	}
	recorded, _ := netip.ParseAddr(*addr)
	vtep, err := a.tunnels.Ensure(ctx, tun, recorded, pools)
	a.metrics.observeTunnelAllocation(err)
	if err != nil {
		return false, err
	}
	changed := false
	if s := vtep.String(); *addr != s {
		*addr, changed = s, true
	}
	if s := hw.String(); *mac != s {
		*mac, changed = s, true
	}
	return changed, nil
}

// wireguardKeyOf is the WireGuard public key n publishes ("" none).
func wireguardKeyOf(n *api.Node) string {
	if n.Status == nil {
		return ""
	}
	return n.Status.WireguardPublicKey
}

func encapNode(n *api.Node) felix.EncapNode {
	en := felix.EncapNode{Name: n.Name, VXLANMAC: n.Spec.VXLANTunnelMACAddr, VXLANMACV6: n.Spec.VXLANTunnelMACAddrV6}
	en.VXLANAddr, _ = netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr)
	en.VXLANAddrV6, _ = netip.ParseAddr(n.Spec.IPv6VXLANTunnelAddr)
	if b := n.Spec.BGP; b != nil {
		en.Addr, _ = b.IPv4Prefix()
		en.Addr6, _ = b.IPv6Prefix()
		en.IPIPAddr, _ = netip.ParseAddr(b.IPv4IPIPTunnelAddr)
	}
	return en
}

func cloneBGP(b *api.NodeBGPSpec) *api.NodeBGPSpec {
	if b == nil {
		return nil
	}
	c := *b
	return &c
}
