package felix

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/tabby-net/tabby/api"
)

// Tunnel devices, their parameters and what each costs a workload's MTU.
const (
	VXLANDevice   = "vxlan.tabby"
	VXLANVNI      = 4096
	VXLANPort     = 4789
	VXLANOverhead = 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
	IPIPDevice    = "tunl0"
	IPIPOverhead  = 20 // outer IPv4 header
)

// EncapPool is what encapsulation needs to know of an IPPool.
type EncapPool struct {
	Name        string
	CIDR        netip.Prefix
	IPIPMode    api.EncapMode
	VXLANMode   api.EncapMode
	NATOutgoing bool
	Disabled    bool
}

// EncapNode is what encapsulation needs to know of a Node.
type EncapNode struct {
	Name string
	// Addr is spec.bgp.ipv4Address: the node's address with its subnet's length.
	Addr      netip.Prefix
	VXLANAddr netip.Addr // spec.ipv4VXLANTunnelAddr
	VXLANMAC  string     // spec.vxlanTunnelMACAddr
	IPIPAddr  netip.Addr // spec.bgp.ipv4IPIPTunnelAddr
}

// EncapInput is the cluster state encapsulation is derived from.
type EncapInput struct {
	Node   string // this node
	Nodes  []EncapNode
	Pools  []EncapPool
	Blocks map[netip.Prefix]string // every confirmed block affinity: block -> node
}

// VXLANPeer is a remote VTEP: a neighbor entry (VTEP -> MAC) and an FDB entry (MAC ->
// the node's underlay address) on VXLANDevice.
type VXLANPeer struct {
	Node     string
	VTEP     netip.Addr
	MAC      string
	Underlay netip.Addr
}

// Encap is this node's desired encapsulation state.
type Encap struct {
	// LocalSubnet is this node's underlay subnet (spec.bgp.ipv4Address, masked).
	LocalSubnet netip.Prefix
	// VXLANPools and IPIPPools are the enabled IPv4 pools using each tunnel (names).
	VXLANPools, IPIPPools []string
	// VXLANPeers are the remote VTEPs, sorted by node.
	VXLANPeers []VXLANPeer
	// Routes are routes to remote blocks of VXLAN pools, from block affinities: through
	// VXLANDevice where the pool's mode says so, natively via the node otherwise. They win
	// over learned routes for the same destination.
	Routes []Route
	// ipip are the IPIP pools whose learned routes are rewritten through IPIPDevice.
	ipip []EncapPool
	// Problems are what kept a route or peer out (a node without a VTEP yet, say).
	Problems []string
}

// Encapsulates says whether traffic to a node at remote, from this node's subnet local,
// goes through the tunnel under mode: Always does, CrossSubnet does when remote is outside
// local, Never never does.
func Encapsulates(mode api.EncapMode, local netip.Prefix, remote netip.Addr) bool {
	switch mode {
	case api.EncapAlways:
		return true
	case api.EncapCrossSubnet:
		return !local.IsValid() || !local.Masked().Contains(remote)
	}
	return false
}

// VXLANMAC is the VTEP MAC address of a node: locally administered, unicast, derived from
// the node's name so that every run of the agent picks the same one.
func VXLANMAC(node string) net.HardwareAddr {
	h := sha256.Sum256([]byte("tabby-vxlan/" + node))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// DesiredEncap derives this node's encapsulation state from the cluster's Nodes, pools and
// block affinities. It is pure.
func DesiredEncap(in EncapInput) Encap {
	var e Encap
	nodes := make(map[string]EncapNode, len(in.Nodes))
	for _, n := range in.Nodes {
		nodes[n.Name] = n
	}
	if self, ok := nodes[in.Node]; ok && self.Addr.IsValid() {
		e.LocalSubnet = self.Addr.Masked()
	}
	pools := slices.Clone(in.Pools)
	slices.SortFunc(pools, func(a, b EncapPool) int { return cmp.Compare(a.Name, b.Name) })
	var vxlanPools []EncapPool
	for _, p := range pools {
		if p.Disabled || !p.CIDR.Addr().Is4() {
			continue
		}
		if p.VXLANMode == api.EncapAlways || p.VXLANMode == api.EncapCrossSubnet {
			e.VXLANPools = append(e.VXLANPools, p.Name)
			vxlanPools = append(vxlanPools, p)
		}
		if p.IPIPMode == api.EncapAlways || p.IPIPMode == api.EncapCrossSubnet {
			e.IPIPPools = append(e.IPIPPools, p.Name)
			e.ipip = append(e.ipip, p)
		}
	}
	if len(vxlanPools) > 0 {
		for _, n := range in.Nodes {
			if n.Name == in.Node {
				continue
			}
			mac, err := net.ParseMAC(n.VXLANMAC)
			switch {
			case !n.VXLANAddr.IsValid() || err != nil:
				e.Problems = append(e.Problems, fmt.Sprintf("node %s has no VXLAN tunnel address and MAC yet", n.Name))
				continue
			case !n.Addr.IsValid():
				e.Problems = append(e.Problems, fmt.Sprintf("node %s has no IPv4 address", n.Name))
				continue
			}
			e.VXLANPeers = append(e.VXLANPeers, VXLANPeer{Node: n.Name, VTEP: n.VXLANAddr, MAC: mac.String(), Underlay: n.Addr.Addr()})
		}
		slices.SortFunc(e.VXLANPeers, func(a, b VXLANPeer) int { return cmp.Compare(a.Node, b.Node) })
	}
	for block, owner := range in.Blocks {
		if owner == in.Node {
			continue
		}
		i := slices.IndexFunc(vxlanPools, func(p EncapPool) bool { return p.CIDR.Overlaps(block) && p.CIDR.Bits() <= block.Bits() })
		if i < 0 {
			continue
		}
		n, ok := nodes[owner]
		if !ok || !n.Addr.IsValid() {
			e.Problems = append(e.Problems, fmt.Sprintf("block %s: node %s has no IPv4 address", block, owner))
			continue
		}
		if !Encapsulates(vxlanPools[i].VXLANMode, e.LocalSubnet, n.Addr.Addr()) {
			e.Routes = append(e.Routes, Route{Dst: block, Type: RouteGateway, Gateway: n.Addr.Addr()})
			continue
		}
		if !n.VXLANAddr.IsValid() {
			e.Problems = append(e.Problems, fmt.Sprintf("block %s: node %s has no VXLAN tunnel address yet", block, owner))
			continue
		}
		e.Routes = append(e.Routes, Route{Dst: block, Type: RouteGateway, Interface: VXLANDevice, Gateway: n.VXLANAddr, OnLink: true})
	}
	slices.SortFunc(e.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.Sort(e.Problems)
	return e
}

// encapLearned rewrites a learned route to a block of an IPIP pool through IPIPDevice, with
// the remote node's address as an onlink next hop, when the pool's mode says to encapsulate.
func (e *Encap) encapLearned(r Route) Route {
	if e == nil || r.Type != RouteGateway || !r.Dst.Addr().Is4() {
		return r
	}
	for _, p := range e.ipip {
		if p.CIDR.Overlaps(r.Dst) && p.CIDR.Bits() <= r.Dst.Bits() {
			if Encapsulates(p.IPIPMode, e.LocalSubnet, r.Gateway) {
				r.Interface, r.OnLink = IPIPDevice, true
			}
			return r
		}
	}
	return r
}

// TunnelMTUs are the MTUs of the underlay and of the tunnel devices.
type TunnelMTUs struct {
	Underlay, VXLAN, IPIP int
}

// NewTunnelMTUs returns the tunnels' MTUs over an underlay of MTU underlay: vxlan and
// ipip as given (Calico's vxlanMTU and ipipMTU), or when 0 the underlay's less the
// tunnel's header.
func NewTunnelMTUs(underlay, vxlan, ipip int) TunnelMTUs {
	t := TunnelMTUs{Underlay: underlay, VXLAN: vxlan, IPIP: ipip}
	if t.VXLAN == 0 {
		t.VXLAN = underlay - VXLANOverhead
	}
	if t.IPIP == 0 {
		t.IPIP = underlay - IPIPOverhead
	}
	return t
}

// WorkloadMTU is the MTU workloads get: the smallest MTU of the tunnels an enabled pool
// uses, or the underlay's when none does.
func WorkloadMTU(e Encap, t TunnelMTUs) int {
	mtu := t.Underlay
	if len(e.VXLANPools) > 0 {
		mtu = min(mtu, t.VXLAN)
	}
	if len(e.IPIPPools) > 0 {
		mtu = min(mtu, t.IPIP)
	}
	return mtu
}
