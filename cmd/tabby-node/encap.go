package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/ipam"
)

// encapResync is the period of full passes over the tunnel devices.
const encapResync = 10 * time.Second

// encapAgent watches Nodes, IPPools and every block affinity, allocates this node's tunnel
// addresses, keeps vxlan.tabby right and hands felix the encapsulation state.
type encapAgent struct {
	node     string
	underlay netip.Prefix // this node's address
	ds       *datastore.Client
	ipamc    *ipam.Client
	out      chan *felix.Encap
	// nat, when set, receives the natOutgoing nat-table state on each change (the policy
	// subsystem's syncer writes it).
	nat     chan *felix.FilterState
	lastNAT *felix.FilterState
	log     *slog.Logger
	vxlan   *felix.VXLANReconciler
	ipip    *felix.IPIPReconciler
	// ipipMissing is set once the kernel was found without ipip (warned once); it is
	// checked again whenever the set of IPIP pools changes (a module may have been
	// loaded meanwhile).
	ipipMissing bool
	ipipPools   []string // the IPIP pools of the last pass
	// allocated is the tunnel address this agent last allocated, per handle: a pass that
	// runs before the Node watch brings its own write back must not take it for lost.
	allocated map[string]netip.Addr
	// synced, when set, is marked after the first pass without error (readiness).
	synced *syncedOnce
}

// encapProblems are the encapsulation problems the status socket reports beside BGP's.
var encapProblems struct {
	mu    sync.Mutex
	lines []string
}

func setEncapProblems(lines []string) {
	encapProblems.mu.Lock()
	encapProblems.lines = lines
	encapProblems.mu.Unlock()
}

// encapProblemLines returns the current encapsulation problems.
func encapProblemLines() []string {
	encapProblems.mu.Lock()
	defer encapProblems.mu.Unlock()
	return append([]string(nil), encapProblems.lines...)
}

func (a *encapAgent) run(ctx context.Context) error {
	nodesC := a.ds.Watch(ctx, kindNodes, "", 0)
	poolsC := a.ds.Watch(ctx, kindIPPools, "", 0)
	affC := a.ipamc.WatchAllAffinities(ctx)
	nodes := map[string]*api.Node{}
	pools := map[string]*api.IPPool{}
	synced := map[*api.Kind]bool{}
	var blocks map[netip.Prefix]string
	tick := time.NewTicker(encapResync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-nodesC:
			if !ok {
				return ctx.Err()
			}
			applyEvent(ev, nodes, synced, kindNodes, a.log)
		case ev, ok := <-poolsC:
			if !ok {
				return ctx.Err()
			}
			applyEvent(ev, pools, synced, kindIPPools, a.log)
		case b, ok := <-affC:
			if !ok {
				return ctx.Err()
			}
			blocks = b
		case <-tick.C:
		}
		if len(synced) < 2 || blocks == nil {
			continue
		}
		if err := a.reconcile(ctx, nodes, pools, blocks); err != nil {
			a.log.Warn("encapsulation pass", "err", err)
		} else if a.synced != nil {
			a.synced.set()
		}
	}
}

func (a *encapAgent) reconcile(ctx context.Context, nodes map[string]*api.Node, pools map[string]*api.IPPool, blocks map[netip.Prefix]string) error {
	in := felix.EncapInput{Node: a.node, Blocks: blocks}
	for _, n := range nodes {
		in.Nodes = append(in.Nodes, encapNode(n))
	}
	for _, p := range pools {
		cidr, err := p.Prefix()
		if err != nil {
			continue
		}
		in.Pools = append(in.Pools, felix.EncapPool{Name: p.Name, CIDR: cidr, IPIPMode: p.Spec.IPIPMode,
			VXLANMode: p.Spec.VXLANMode, NATOutgoing: p.Spec.NATOutgoing, Disabled: p.Spec.Disabled})
	}
	if a.nat != nil {
		if ns := felix.RenderNATOutgoing(in.Pools); !reflect.DeepEqual(ns, a.lastNAT) {
			a.lastNAT = ns
			sendLatest(a.nat, ns)
		}
	}
	e := felix.DesiredEncap(in)
	self := nodes[a.node]
	if self == nil {
		return errors.New("own Node resource not found")
	}
	underlayMTU, err := linkMTUOf(a.underlay.Addr())
	if err != nil {
		return err
	}
	mtu := felix.WorkloadMTU(underlayMTU, e)
	var errs []error
	if err := a.recordOnNode(ctx, self, e, mtu); err != nil {
		errs = append(errs, err)
	}
	var cfg *felix.VXLANDeviceConfig
	if len(e.VXLANPools) > 0 {
		if vtep := encapNode(self).VXLANAddr; vtep.IsValid() {
			cfg = &felix.VXLANDeviceConfig{VTEP: vtep, MAC: felix.VXLANMAC(a.node), Underlay: a.underlay.Addr(), MTU: underlayMTU - felix.VXLANOverhead}
		}
	}
	var problems []string
	if cfg != nil || len(e.VXLANPools) == 0 {
		if n, err := a.vxlan.Apply(cfg, e.VXLANPeers); errors.Is(err, unix.EOPNOTSUPP) {
			// Tried again every pass: the problem goes once the kernel can.
			problems = append(problems, fmt.Sprintf("encapsulation: VXLAN pools %s need the kernel's vxlan support, which this kernel lacks (%v): their tunnelled routes do not work",
				strings.Join(e.VXLANPools, ", "), err))
		} else if err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			a.log.Info("vxlan updated", "writes", n, "peers", len(e.VXLANPeers), "routes", len(e.Routes))
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
			// Not allocated yet: recordOnNode did it; the Node watch brings it back.
		} else if n, err := a.ipip.Apply(ipipAddr, underlayMTU-felix.IPIPOverhead); errors.Is(err, felix.ErrNoIPIP) {
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
	setEncapProblems(problems)
	if len(e.Problems) > 0 {
		a.log.Debug("encapsulation incomplete", "problems", e.Problems)
	}
	sendLatest(a.out, &e)
	return errors.Join(errs...)
}

// recordOnNode allocates the tunnel addresses that pools need, releases those that none
// needs any more, and records them, the VTEP MAC and the workload MTU on this node's Node
// resource. The Node watch brings the change back, which makes another pass.
func (a *encapAgent) recordOnNode(ctx context.Context, self *api.Node, e felix.Encap, mtu int) error {
	n := *self
	n.Spec.BGP = cloneBGP(self.Spec.BGP)
	n.Annotations = cloneMap(self.Annotations)
	changed := false
	if len(e.VXLANPools) > 0 {
		addr, err := a.tunnelAddr(ctx, "vxlan-tunnel-addr-"+a.node, n.Spec.IPv4VXLANTunnelAddr, e.VXLANPools, "vxlanTunnelAddress")
		if err != nil {
			return err
		}
		if s := addr.String(); n.Spec.IPv4VXLANTunnelAddr != s {
			n.Spec.IPv4VXLANTunnelAddr, changed = s, true
		}
		if mac := felix.VXLANMAC(a.node).String(); n.Spec.VXLANTunnelMACAddr != mac {
			n.Spec.VXLANTunnelMACAddr, changed = mac, true
		}
	} else if n.Spec.IPv4VXLANTunnelAddr != "" || n.Spec.VXLANTunnelMACAddr != "" {
		// No pool needs VXLAN here any more: give the address back, or it would keep its
		// pool from being deleted.
		a.releaseHandle(ctx, "vxlan-tunnel-addr-"+a.node)
		delete(a.allocated, "vxlan-tunnel-addr-"+a.node)
		n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr, changed = "", "", true
	}
	var ipipErr error
	if len(e.IPIPPools) > 0 {
		if n.Spec.BGP == nil {
			n.Spec.BGP = &api.NodeBGPSpec{}
		}
		// Not fatal to the rest of the Node's record (VXLAN, MTU).
		addr, err := a.tunnelAddr(ctx, "ipip-tunnel-addr-"+a.node, n.Spec.BGP.IPv4IPIPTunnelAddr, e.IPIPPools, "ipipTunnelAddress")
		if err != nil {
			ipipErr = err
		} else if s := addr.String(); n.Spec.BGP.IPv4IPIPTunnelAddr != s {
			n.Spec.BGP.IPv4IPIPTunnelAddr, changed = s, true
		}
	} else if n.Spec.BGP != nil && n.Spec.BGP.IPv4IPIPTunnelAddr != "" {
		a.releaseHandle(ctx, "ipip-tunnel-addr-"+a.node) // as for VXLAN above
		delete(a.allocated, "ipip-tunnel-addr-"+a.node)
		n.Spec.BGP.IPv4IPIPTunnelAddr, changed = "", true
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
	return ipipErr // a conflict: the watch brings the newer Node and another pass
}

// tunnelAddr returns the address handle holds: the one the Node records or, while the Node
// watch has not brought this agent's own write back yet, the one it allocated last; if
// the handle holds neither, a new one from pools.
func (a *encapAgent) tunnelAddr(ctx context.Context, handle, recorded string, pools []string, kind string) (netip.Addr, error) {
	cur, _ := netip.ParseAddr(recorded)
	if !cur.IsValid() {
		cur = a.allocated[handle]
	}
	if a.holds(ctx, cur, handle) {
		return cur, nil
	}
	a.releaseHandle(ctx, handle)
	res, err := a.ipamc.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: handle, Node: a.node,
		IPv4Pools: pools, Use: api.IPPoolAllowedUseTunnel, Attrs: map[string]string{"type": kind}})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate tunnel address (handle %s) from pools %v: %w", handle, pools, err)
	}
	addr := res.IPv4[0].Addr
	if a.allocated == nil {
		a.allocated = map[string]netip.Addr{}
	}
	a.allocated[handle] = addr
	a.log.Info("tunnel address allocated", "handle", handle, "addr", addr)
	return addr, nil
}

// releaseHandle frees whatever a tunnel handle holds: before a new allocation (a pass that
// read an older Node, whose update then lost the compare-and-swap, would otherwise leave
// the handle with a second address that no Node records), and when no pool needs it.
func (a *encapAgent) releaseHandle(ctx context.Context, handle string) {
	if addrs, err := a.ipamc.ReleaseByHandle(ctx, handle); err != nil {
		a.log.Debug("release tunnel handle", "handle", handle, "err", err)
	} else if len(addrs) > 0 {
		a.log.Info("tunnel addresses released before a new allocation", "handle", handle, "addrs", addrs)
	}
}

// holds says whether addr is allocated to handle.
func (a *encapAgent) holds(ctx context.Context, addr netip.Addr, handle string) bool {
	if !addr.IsValid() {
		return false
	}
	al, err := a.ipamc.GetAllocation(ctx, addr)
	return err == nil && al != nil && al.Handle == handle
}

func encapNode(n *api.Node) felix.EncapNode {
	en := felix.EncapNode{Name: n.Name, VXLANMAC: n.Spec.VXLANTunnelMACAddr}
	en.VXLANAddr, _ = netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr)
	if b := n.Spec.BGP; b != nil {
		en.Addr, _ = b.IPv4Prefix()
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

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// linkMTUOf is the MTU of the interface holding addr (the underlay).
func linkMTUOf(addr netip.Addr) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("underlay interface of %s: %w", addr, err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("no interface has the node address %s", addr)
}
