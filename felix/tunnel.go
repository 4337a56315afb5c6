package felix

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// Tunnel devices, their parameters and what each costs a workload's MTU.
const (
	VXLANDevice   = "vxlan.tabby"
	VXLANVNI      = 4096
	VXLANPort     = 4789
	VXLANOverhead = 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
	// VXLANDeviceV6 carries IPv6 pools' traffic over the IPv6 underlay, with VXLAN's VNI
	// and port (a VXLAN device of the other family does not clash with them).
	VXLANDeviceV6   = "vxlan-v6.tabby"
	VXLANOverheadV6 = 70 // outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14
	IPIPDevice      = "tunl0"
	IPIPOverhead    = 20 // outer IPv4 header
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
	// Addr6 is spec.bgp.ipv6Address: the node's IPv6 address with its subnet's length.
	Addr6       netip.Prefix
	VXLANAddrV6 netip.Addr // spec.ipv6VXLANTunnelAddr
	VXLANMACV6  string     // spec.vxlanTunnelMACAddrV6
}

// EncapInput is the cluster state encapsulation is derived from.
type EncapInput struct {
	Node   string // this node
	Nodes  []EncapNode
	Pools  []EncapPool
	Blocks map[netip.Prefix]string // every confirmed block affinity: block -> node
}

// VXLANPeer is a remote VTEP: a neighbor entry (VTEP -> MAC) and an FDB entry (MAC ->
// the node's underlay address) on VXLANDevice, or on VXLANDeviceV6 for IPv6.
type VXLANPeer struct {
	Node     string
	VTEP     netip.Addr
	MAC      string
	Underlay netip.Addr
}

// Encap is this node's desired encapsulation state.
type Encap struct {
	// LocalSubnet is this node's underlay subnet (spec.bgp.ipv4Address, masked), and
	// LocalSubnetV6 its IPv6 one (spec.bgp.ipv6Address, masked).
	LocalSubnet, LocalSubnetV6 netip.Prefix
	// VXLANPools and IPIPPools are the enabled IPv4 pools using each tunnel (names).
	VXLANPools, IPIPPools []string
	// VXLANPoolsV6 are the enabled IPv6 pools using VXLAN (over the IPv6 underlay); none
	// while this node has no IPv6 address.
	VXLANPoolsV6 []string
	// VXLANPeers are the remote VTEPs, sorted by node; VXLANPeersV6 those of
	// VXLANDeviceV6.
	VXLANPeers, VXLANPeersV6 []VXLANPeer
	// Routes are routes to remote blocks of VXLAN pools, from block affinities: through
	// VXLANDevice (VXLANDeviceV6 for IPv6 blocks) where the pool's mode says so, natively
	// via the node otherwise. They win over learned routes for the same destination.
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
func VXLANMAC(node string) net.HardwareAddr { return derivedMAC("tabby-vxlan/" + node) }

// VXLANMACV6 is VXLANMAC for VXLANDeviceV6: another MAC, as the devices are apart.
func VXLANMACV6(node string) net.HardwareAddr { return derivedMAC("tabby-vxlan-v6/" + node) }

func derivedMAC(seed string) net.HardwareAddr {
	h := sha256.Sum256([]byte(seed))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// vxlanFamily is what differs between VXLAN over the IPv4 underlay and over the IPv6 one.
type vxlanFamily struct {
	v6     bool
	device string
}

var (
	vxlanV4 = vxlanFamily{v6: false, device: VXLANDevice}
	vxlanV6 = vxlanFamily{v6: true, device: VXLANDeviceV6}
)

func familyOf(p netip.Prefix) vxlanFamily {
	if p.Addr().Is6() {
		return vxlanV6
	}
	return vxlanV4
}

func (f vxlanFamily) String() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// underlay is n's address of the family, with its subnet's length.
func (f vxlanFamily) underlay(n EncapNode) netip.Prefix {
	if f.v6 {
		return n.Addr6
	}
	return n.Addr
}

// vtep is n's VTEP address and MAC on the family's device.
func (f vxlanFamily) vtep(n EncapNode) (netip.Addr, string) {
	if f.v6 {
		return n.VXLANAddrV6, n.VXLANMACV6
	}
	return n.VXLANAddr, n.VXLANMAC
}

// vxlanPeers are the remote VTEPs of the family, sorted by node, and the problems of the
// nodes left out.
func vxlanPeers(in EncapInput, f vxlanFamily) ([]VXLANPeer, []string) {
	var peers []VXLANPeer
	var problems []string
	for _, n := range in.Nodes {
		if n.Name == in.Node {
			continue
		}
		vtep, macText := f.vtep(n)
		mac, err := net.ParseMAC(macText)
		switch {
		case !vtep.IsValid() || err != nil:
			problems = append(problems, fmt.Sprintf("node %s has no %s VXLAN tunnel address and MAC yet", n.Name, f))
			continue
		case !f.underlay(n).IsValid():
			problems = append(problems, fmt.Sprintf("node %s has no %s address", n.Name, f))
			continue
		}
		peers = append(peers, VXLANPeer{Node: n.Name, VTEP: vtep, MAC: mac.String(), Underlay: f.underlay(n).Addr()})
	}
	slices.SortFunc(peers, func(a, b VXLANPeer) int { return cmp.Compare(a.Node, b.Node) })
	return peers, problems
}

// DesiredEncap derives this node's encapsulation state from the cluster's Nodes, pools and
// block affinities. It is pure.
func DesiredEncap(in EncapInput) Encap {
	var e Encap
	nodes := make(map[string]EncapNode, len(in.Nodes))
	for _, n := range in.Nodes {
		nodes[n.Name] = n
	}
	self := nodes[in.Node]
	if self.Addr.IsValid() {
		e.LocalSubnet = self.Addr.Masked()
	}
	if self.Addr6.IsValid() {
		e.LocalSubnetV6 = self.Addr6.Masked()
	}
	pools := slices.Clone(in.Pools)
	slices.SortFunc(pools, func(a, b EncapPool) int { return cmp.Compare(a.Name, b.Name) })
	var vxlanPools []EncapPool               // of both families: a block overlaps pools of its own only
	noUnderlay := map[vxlanFamily][]string{} // tunnelled pools of a family this node has no address of
	for _, p := range pools {
		if p.Disabled || !p.CIDR.IsValid() {
			continue
		}
		f := familyOf(p.CIDR)
		vxlan := p.VXLANMode == api.EncapAlways || p.VXLANMode == api.EncapCrossSubnet
		ipip := !f.v6 && (p.IPIPMode == api.EncapAlways || p.IPIPMode == api.EncapCrossSubnet)
		switch {
		case (vxlan || ipip) && !f.underlay(self).IsValid():
			noUnderlay[f] = append(noUnderlay[f], p.Name)
		case vxlan && f.v6:
			e.VXLANPoolsV6 = append(e.VXLANPoolsV6, p.Name)
			vxlanPools = append(vxlanPools, p)
		case vxlan:
			e.VXLANPools = append(e.VXLANPools, p.Name)
			vxlanPools = append(vxlanPools, p)
		case ipip:
			e.IPIPPools = append(e.IPIPPools, p.Name)
			e.ipip = append(e.ipip, p)
		}
	}
	for _, f := range []vxlanFamily{vxlanV4, vxlanV6} {
		if len(noUnderlay[f]) > 0 {
			e.Problems = append(e.Problems, fmt.Sprintf("this node has no %s address: pools %s need one to tunnel over %s",
				f, strings.Join(noUnderlay[f], ", "), f))
		}
	}
	var problems []string
	if len(e.VXLANPools) > 0 {
		e.VXLANPeers, problems = vxlanPeers(in, vxlanV4)
		e.Problems = append(e.Problems, problems...)
	}
	if len(e.VXLANPoolsV6) > 0 {
		e.VXLANPeersV6, problems = vxlanPeers(in, vxlanV6)
		e.Problems = append(e.Problems, problems...)
	}
	for block, owner := range in.Blocks {
		if owner == in.Node {
			continue
		}
		i := slices.IndexFunc(vxlanPools, func(p EncapPool) bool { return p.CIDR.Overlaps(block) && p.CIDR.Bits() <= block.Bits() })
		if i < 0 {
			continue
		}
		f, local := familyOf(block), e.LocalSubnet
		if f.v6 {
			local = e.LocalSubnetV6
		}
		n, ok := nodes[owner]
		if !ok || !f.underlay(n).IsValid() {
			e.Problems = append(e.Problems, fmt.Sprintf("block %s: node %s has no %s address", block, owner, f))
			continue
		}
		if under := f.underlay(n).Addr(); !Encapsulates(vxlanPools[i].VXLANMode, local, under) {
			e.Routes = append(e.Routes, Route{Dst: block, Type: RouteGateway, Gateway: under})
			continue
		}
		vtep, _ := f.vtep(n)
		if !vtep.IsValid() {
			e.Problems = append(e.Problems, fmt.Sprintf("block %s: node %s has no %s VXLAN tunnel address yet", block, owner, f))
			continue
		}
		e.Routes = append(e.Routes, Route{Dst: block, Type: RouteGateway, Interface: f.device, Gateway: vtep, OnLink: true})
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
	Underlay, VXLAN, VXLANV6, IPIP int
}

// NewTunnelMTUs returns the tunnels' MTUs over an underlay of MTU underlay: vxlan and
// ipip as given (Calico's vxlanMTU and ipipMTU), or when 0 the underlay's less the
// tunnel's header; VXLAN over IPv6's is always the underlay's less its header.
func NewTunnelMTUs(underlay, vxlan, ipip int) TunnelMTUs {
	t := TunnelMTUs{Underlay: underlay, VXLAN: vxlan, VXLANV6: underlay - VXLANOverheadV6, IPIP: ipip}
	if t.VXLAN == 0 {
		t.VXLAN = underlay - VXLANOverhead
	}
	if t.IPIP == 0 {
		t.IPIP = underlay - IPIPOverhead
	}
	return t
}

// WorkloadMTU is the MTU workloads get: the smallest MTU of the tunnels an enabled pool
// uses (VXLAN over IPv6, VXLAN over IPv4, IPIP), or the underlay's when none does.
func WorkloadMTU(e Encap, t TunnelMTUs) int {
	mtu := t.Underlay
	if len(e.VXLANPoolsV6) > 0 {
		mtu = min(mtu, t.VXLANV6)
	}
	if len(e.VXLANPools) > 0 {
		mtu = min(mtu, t.VXLAN)
	}
	if len(e.IPIPPools) > 0 {
		mtu = min(mtu, t.IPIP)
	}
	return mtu
}
