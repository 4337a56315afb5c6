package felix

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tabby-net/tabby/api"
)

func encapInput(mode api.EncapMode) EncapInput {
	return EncapInput{
		Node: "node1",
		Nodes: []EncapNode{
			{Name: "node1", Addr: netip.MustParsePrefix("172.31.1.10/24"), VXLANAddr: netip.MustParseAddr("10.244.0.0"), VXLANMAC: VXLANMAC("node1").String()},
			{Name: "node2", Addr: netip.MustParsePrefix("172.31.2.11/24"), VXLANAddr: netip.MustParseAddr("10.244.0.64"), VXLANMAC: VXLANMAC("node2").String()},
			{Name: "node3", Addr: netip.MustParsePrefix("172.31.1.12/24"), VXLANAddr: netip.MustParseAddr("10.244.0.128"), VXLANMAC: VXLANMAC("node3").String()},
			{Name: "node4", Addr: netip.MustParsePrefix("172.31.1.13/24")}, // no VTEP yet
		},
		Pools: []EncapPool{{Name: "p", CIDR: netip.MustParsePrefix("10.244.0.0/16"), VXLANMode: mode, IPIPMode: api.EncapNever}},
		Blocks: map[netip.Prefix]string{
			netip.MustParsePrefix("10.244.0.0/26"):   "node1",
			netip.MustParsePrefix("10.244.0.64/26"):  "node2",
			netip.MustParsePrefix("10.244.0.128/26"): "node3",
			netip.MustParsePrefix("10.244.0.192/26"): "node4",
			netip.MustParsePrefix("10.99.0.0/26"):    "node2", // in no VXLAN pool
		},
	}
}

func routeStrings(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return out
}

func TestDesiredEncapModes(t *testing.T) {
	for _, tc := range []struct {
		mode   api.EncapMode
		routes []string
	}{
		{api.EncapAlways, []string{
			"10.244.0.64/26 via 10.244.0.64 dev vxlan.tabby onlink",
			"10.244.0.128/26 via 10.244.0.128 dev vxlan.tabby onlink",
		}},
		// Same subnet (node3, node4) natively, across the router (node2) encapsulated.
		{api.EncapCrossSubnet, []string{
			"10.244.0.64/26 via 10.244.0.64 dev vxlan.tabby onlink",
			"10.244.0.128/26 via 172.31.1.12",
			"10.244.0.192/26 via 172.31.1.13",
		}},
		{api.EncapNever, nil},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			e := DesiredEncap(encapInput(tc.mode))
			if got := routeStrings(e.Routes); !slices.Equal(got, tc.routes) {
				t.Errorf("routes:\n got %q\nwant %q", got, tc.routes)
			}
			if tc.mode == api.EncapNever {
				if len(e.VXLANPeers) != 0 || len(e.VXLANPools) != 0 {
					t.Errorf("Never: peers %v pools %v, want none", e.VXLANPeers, e.VXLANPools)
				}
				return
			}
			var peers []string
			for _, p := range e.VXLANPeers {
				peers = append(peers, p.Node+" "+p.VTEP.String()+" "+p.Underlay.String())
			}
			want := []string{"node2 10.244.0.64 172.31.2.11", "node3 10.244.0.128 172.31.1.12"}
			if !slices.Equal(peers, want) {
				t.Errorf("peers %q, want %q", peers, want)
			}
			if !slices.ContainsFunc(e.Problems, func(p string) bool { return strings.Contains(p, "node4") }) {
				t.Errorf("problems %q do not name node4 (no VTEP)", e.Problems)
			}
			if got := WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)); got != 1450 {
				t.Errorf("WorkloadMTU = %d, want 1450", got)
			}
		})
	}
}

// encapInputV6 is encapInput's cluster dual stack: an IPv4 pool at Never and an IPv6 pool
// at mode, node2 across the router in both families.
func encapInputV6(mode api.EncapMode) EncapInput {
	in := encapInput(api.EncapNever)
	v6 := []struct{ addr, vtep string }{
		{"fd00:172:31:1::10/64", "fd00:10:244::"},
		{"fd00:172:31:2::11/64", "fd00:10:244::40"},
		{"fd00:172:31:1::12/64", "fd00:10:244::80"},
		{"fd00:172:31:1::13/64", ""}, // no VTEP yet
	}
	for i, a := range v6 {
		n := &in.Nodes[i]
		n.Addr6 = netip.MustParsePrefix(a.addr)
		if a.vtep != "" {
			n.VXLANAddrV6, n.VXLANMACV6 = netip.MustParseAddr(a.vtep), VXLANMACV6(n.Name).String()
		}
	}
	in.Pools = append(in.Pools, EncapPool{Name: "p6", CIDR: netip.MustParsePrefix("fd00:10:244::/64"), VXLANMode: mode, IPIPMode: api.EncapNever})
	for i, owner := range []string{"node1", "node2", "node3", "node4"} {
		b := netip.MustParsePrefix(fmt.Sprintf("fd00:10:244::%x/122", i*64))
		in.Blocks[b] = owner
	}
	return in
}

// IPv6 pools with a vxlanMode tunnel through vxlan-v6.tabby to the remote IPv6 VTEPs over
// the IPv6 underlay (CrossSubnet by the IPv6 subnet), beside IPv4 pools, and workloads
// get the IPv6 tunnel's larger overhead.
func TestDesiredEncapV6(t *testing.T) {
	for _, tc := range []struct {
		mode   api.EncapMode
		routes []string
	}{
		{api.EncapAlways, []string{
			"fd00:10:244::40/122 via fd00:10:244::40 dev vxlan-v6.tabby onlink",
			"fd00:10:244::80/122 via fd00:10:244::80 dev vxlan-v6.tabby onlink",
		}},
		{api.EncapCrossSubnet, []string{
			"fd00:10:244::40/122 via fd00:10:244::40 dev vxlan-v6.tabby onlink",
			"fd00:10:244::80/122 via fd00:172:31:1::12",
			"fd00:10:244::c0/122 via fd00:172:31:1::13",
		}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			e := DesiredEncap(encapInputV6(tc.mode))
			if got := routeStrings(e.Routes); !slices.Equal(got, tc.routes) {
				t.Errorf("routes:\n got %q\nwant %q", got, tc.routes)
			}
			if !slices.Equal(e.VXLANPoolsV6, []string{"p6"}) || len(e.VXLANPools) != 0 || len(e.VXLANPeers) != 0 {
				t.Errorf("pools v6 %v v4 %v, peers v4 %v: want only p6", e.VXLANPoolsV6, e.VXLANPools, e.VXLANPeers)
			}
			var peers []string
			for _, p := range e.VXLANPeersV6 {
				peers = append(peers, p.Node+" "+p.VTEP.String()+" "+p.MAC+" "+p.Underlay.String())
			}
			want := []string{
				"node2 fd00:10:244::40 " + VXLANMACV6("node2").String() + " fd00:172:31:2::11",
				"node3 fd00:10:244::80 " + VXLANMACV6("node3").String() + " fd00:172:31:1::12",
			}
			if !slices.Equal(peers, want) {
				t.Errorf("peers %q, want %q", peers, want)
			}
			if !slices.ContainsFunc(e.Problems, func(p string) bool { return strings.Contains(p, "node4 has no IPv6 VXLAN tunnel address") }) {
				t.Errorf("problems %q do not name node4 (no IPv6 VTEP)", e.Problems)
			}
			if got := WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)); got != 1430 {
				t.Errorf("WorkloadMTU = %d, want 1430", got)
			}
		})
	}

	// Both families tunnelled: each block through its own family's device.
	in := encapInputV6(api.EncapAlways)
	in.Pools[0].VXLANMode = api.EncapAlways
	e := DesiredEncap(in)
	got := routeStrings(e.Routes)
	for _, want := range []string{"10.244.0.64/26 via 10.244.0.64 dev vxlan.tabby onlink", "fd00:10:244::40/122 via fd00:10:244::40 dev vxlan-v6.tabby onlink"} {
		if !slices.Contains(got, want) {
			t.Errorf("dual-stack routes %q lack %q", got, want)
		}
	}
	if len(e.VXLANPeers) != 2 || len(e.VXLANPeersV6) != 2 || WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)) != 1430 {
		t.Errorf("dual stack: %d IPv4 peers, %d IPv6 peers, MTU %d; want 2, 2, 1430", len(e.VXLANPeers), len(e.VXLANPeersV6), WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)))
	}

	// This node without an IPv6 address cannot tunnel over IPv6: no device, a problem.
	in = encapInputV6(api.EncapAlways)
	in.Nodes[0].Addr6 = netip.Prefix{}
	e = DesiredEncap(in)
	if len(e.VXLANPoolsV6) != 0 || len(e.VXLANPeersV6) != 0 || len(e.Routes) != 0 {
		t.Errorf("without an IPv6 address: pools %v peers %v routes %q; want none", e.VXLANPoolsV6, e.VXLANPeersV6, routeStrings(e.Routes))
	}
	if !slices.Contains(e.Problems, "this node has no IPv6 address: pools p6 need one to tunnel over IPv6") {
		t.Errorf("problems %q", e.Problems)
	}

	// Nor one without an IPv4 address over IPv4 (an IPv6-only node), while it tunnels over
	// IPv6 to the others.
	in = encapInputV6(api.EncapAlways)
	in.Pools[0].VXLANMode = api.EncapAlways
	in.Nodes[0].Addr = netip.Prefix{}
	e = DesiredEncap(in)
	if len(e.VXLANPools) != 0 || len(e.VXLANPeers) != 0 || !slices.Equal(e.VXLANPoolsV6, []string{"p6"}) || len(e.VXLANPeersV6) != 2 {
		t.Errorf("IPv6-only node: pools %v/%v, peers %d/%d; want IPv6 only", e.VXLANPools, e.VXLANPoolsV6, len(e.VXLANPeers), len(e.VXLANPeersV6))
	}
	for _, r := range e.Routes {
		if r.Dst.Addr().Is4() {
			t.Errorf("IPv6-only node routes %s", r)
		}
	}
	if !slices.Contains(e.Problems, "this node has no IPv4 address: pools p need one to tunnel over IPv4") {
		t.Errorf("problems %q", e.Problems)
	}
}

// Encapsulated routes win over BGP's learned route to the same block; learned routes to an
// IPIP pool's blocks go through tunl0 only across subnets under CrossSubnet.
func TestDesiredRoutesEncap(t *testing.T) {
	e := DesiredEncap(encapInput(api.EncapAlways))
	learned := []Route{{Dst: netip.MustParsePrefix("10.244.0.64/26"), Type: RouteGateway, Gateway: netip.MustParseAddr("172.31.2.11")}}
	routes, _ := DesiredRoutes(LocalState{Learned: learned, Encap: &e})
	if got := routeStrings(routes); !slices.Contains(got, "10.244.0.64/26 via 10.244.0.64 dev vxlan.tabby onlink") {
		t.Errorf("VXLAN route lost to the learned one: %q", got)
	}

	in := encapInput(api.EncapNever)
	in.Pools[0].IPIPMode = api.EncapCrossSubnet
	e = DesiredEncap(in)
	if !slices.Equal(e.IPIPPools, []string{"p"}) || WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)) != 1480 {
		t.Fatalf("IPIP pools %v, MTU %d", e.IPIPPools, WorkloadMTU(e, NewTunnelMTUs(1500, 0, 0)))
	}
	learned = append(learned, Route{Dst: netip.MustParsePrefix("10.244.0.128/26"), Type: RouteGateway, Gateway: netip.MustParseAddr("172.31.1.12")},
		Route{Dst: netip.MustParsePrefix("10.99.0.0/26"), Type: RouteGateway, Gateway: netip.MustParseAddr("172.31.2.11")})
	routes, _ = DesiredRoutes(LocalState{Learned: learned, Encap: &e})
	want := []string{
		"10.99.0.0/26 via 172.31.2.11",
		"10.244.0.64/26 via 172.31.2.11 dev tunl0 onlink",
		"10.244.0.128/26 via 172.31.1.12",
	}
	if got := routeStrings(routes); !slices.Equal(got, want) {
		t.Errorf("routes:\n got %q\nwant %q", got, want)
	}
}

func TestVXLANMAC(t *testing.T) {
	a, b := VXLANMAC("node1"), VXLANMAC("node2")
	if a.String() == b.String() || a.String() != VXLANMAC("node1").String() {
		t.Errorf("MACs %s %s: want distinct and stable", a, b)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("MAC %s: want unicast, locally administered", a)
	}
	if v6 := VXLANMACV6("node1"); v6.String() == a.String() || v6[0]&1 != 0 || v6[0]&2 == 0 || v6.String() != VXLANMACV6("node1").String() {
		t.Errorf("IPv6 VTEP MAC %s: want stable, unicast, locally administered and not the IPv4 one %s", v6, a)
	}
}

// The reconciler creates vxlan.tabby (over IPv4) and vxlan-v6.tabby (over IPv6) as
// specified, programs neighbor and FDB entries, and converges: a second pass writes
// nothing; a peer removed is removed; the kernel's IPv6 link-local address stays.
func TestVXLANReconcilerNetns(t *testing.T) {
	for _, tc := range []struct {
		name, dev, underlay string
		newR                func(*netlink.Handle) *VXLANReconciler
		cfg                 VXLANDeviceConfig
		peers               []VXLANPeer
		addr                string // the VTEP as `ip addr` shows it
	}{
		{"IPv4", VXLANDevice, "172.31.1.10/24", func(h *netlink.Handle) *VXLANReconciler { return NewVXLANReconciler(h, nil) },
			VXLANDeviceConfig{VTEP: netip.MustParseAddr("10.244.0.0"), MAC: VXLANMAC("node1"), Underlay: netip.MustParseAddr("172.31.1.10"), MTU: 1450},
			[]VXLANPeer{
				{Node: "node2", VTEP: netip.MustParseAddr("10.244.0.64"), MAC: VXLANMAC("node2").String(), Underlay: netip.MustParseAddr("172.31.2.11")},
				{Node: "node3", VTEP: netip.MustParseAddr("10.244.0.128"), MAC: VXLANMAC("node3").String(), Underlay: netip.MustParseAddr("172.31.1.12")},
			}, "10.244.0.0/32"},
		{"IPv6", VXLANDeviceV6, "fd00:172:31:1::10/64", func(h *netlink.Handle) *VXLANReconciler { return NewVXLANReconcilerV6(h, nil) },
			VXLANDeviceConfig{VTEP: netip.MustParseAddr("fd00:10:244::"), MAC: VXLANMACV6("node1"), Underlay: netip.MustParseAddr("fd00:172:31:1::10"), MTU: 1430},
			[]VXLANPeer{
				{Node: "node2", VTEP: netip.MustParseAddr("fd00:10:244::40"), MAC: VXLANMACV6("node2").String(), Underlay: netip.MustParseAddr("fd00:172:31:2::11")},
				{Node: "node3", VTEP: netip.MustParseAddr("fd00:10:244::80"), MAC: VXLANMACV6("node3").String(), Underlay: netip.MustParseAddr("fd00:172:31:1::12")},
			}, "fd00:10:244::/128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newTestNS(t)
			ns.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
			ns.ip(t, "addr", "add", tc.underlay, "dev", "eth0", "nodad")
			ns.ip(t, "link", "set", "eth0", "up")
			r := tc.newR(ns.h)
			cfg, peers := &tc.cfg, tc.peers
			if _, err := r.Apply(cfg, peers); err != nil {
				t.Fatal(err)
			}
			local := netip.MustParsePrefix(tc.underlay).Addr().String()
			link := ns.ip(t, "-d", "link", "show", tc.dev)
			for _, want := range []string{fmt.Sprintf("mtu %d", cfg.MTU), "vxlan id 4096", "dstport 4789", "nolearning", "local " + local, cfg.MAC.String(), "UP"} {
				if !strings.Contains(link, want) {
					t.Errorf("link lacks %q:\n%s", want, link)
				}
			}
			if a := ns.ip(t, "addr", "show", tc.dev); !strings.Contains(a, tc.addr) {
				t.Errorf("address %s missing: %s", tc.addr, a)
			}
			neigh := ns.ip(t, "neigh", "show", "dev", tc.dev)
			fdb := run(t, "ip", "netns", "exec", ns.name, "bridge", "fdb", "show", "dev", tc.dev)
			for _, p := range peers {
				if !strings.Contains(neigh, p.VTEP.String()+" lladdr "+p.MAC+" PERMANENT") {
					t.Errorf("neighbors lack %s:\n%s", p.VTEP, neigh)
				}
				if !strings.Contains(fdb, p.MAC+" dst "+p.Underlay.String()) {
					t.Errorf("fdb lacks %s:\n%s", p.MAC, fdb)
				}
			}
			if n, err := r.Apply(cfg, peers); err != nil || n != 0 {
				t.Errorf("second pass: %d writes, %v; want 0, nil", n, err)
			}
			if _, err := r.Apply(cfg, peers[:1]); err != nil {
				t.Fatal(err)
			}
			if neigh := ns.ip(t, "neigh", "show", "dev", tc.dev); strings.Contains(neigh, peers[1].VTEP.String()) {
				t.Errorf("removed peer's neighbor left:\n%s", neigh)
			}
			if fdb := run(t, "ip", "netns", "exec", ns.name, "bridge", "fdb", "show", "dev", tc.dev); strings.Contains(fdb, peers[1].Underlay.String()) {
				t.Errorf("removed peer's fdb left:\n%s", fdb)
			}
			// The node's address changed (a restart with another --ip/--ip6): the device is
			// made again from that address, with its VTEP and peers.
			moved := *cfg
			moved.Underlay = moved.Underlay.Next()
			ns.ip(t, "addr", "add", netip.PrefixFrom(moved.Underlay, netip.MustParsePrefix(tc.underlay).Bits()).String(), "dev", "eth0", "nodad")
			if _, err := r.Apply(&moved, peers[:1]); err != nil {
				t.Fatal(err)
			}
			if link := ns.ip(t, "-d", "link", "show", tc.dev); !strings.Contains(link, "local "+moved.Underlay.String()+" ") {
				t.Errorf("device not moved to %s:\n%s", moved.Underlay, link)
			}
			if a := ns.ip(t, "addr", "show", tc.dev); !strings.Contains(a, tc.addr) {
				t.Errorf("address %s missing after the move: %s", tc.addr, a)
			}
			if neigh := ns.ip(t, "neigh", "show", "dev", tc.dev); !strings.Contains(neigh, peers[0].VTEP.String()+" lladdr "+peers[0].MAC+" PERMANENT") {
				t.Errorf("peer's neighbor missing after the move:\n%s", neigh)
			}
			if _, err := r.Apply(nil, nil); err != nil {
				t.Fatal(err)
			}
			if out, err := ns.h.LinkByName(tc.dev); err == nil {
				t.Errorf("device left: %v", out)
			}
		})
	}
}

// TestWorkloadMTUConfigured: with the tunnels' MTUs set (vxlanMTU, ipipMTU), workloads
// get the smallest of the tunnels their node's pools use; an unused tunnel's setting
// does not count, and 0 is the underlay's less the header.
func TestWorkloadMTUConfigured(t *testing.T) {
	vxlan, ipip := []string{"v"}, []string{"i"}
	for _, tc := range []struct {
		e                 Encap
		vxlanMTU, ipipMTU int
		want              int
	}{
		{Encap{}, 1300, 1300, 1500},
		{Encap{VXLANPools: vxlan}, 1400, 0, 1400},
		{Encap{IPIPPools: ipip}, 1300, 0, 1480},
		{Encap{VXLANPools: vxlan, IPIPPools: ipip}, 0, 0, 1450},
		{Encap{VXLANPools: vxlan, IPIPPools: ipip}, 0, 1420, 1420},
		{Encap{VXLANPools: vxlan, IPIPPools: ipip}, 1490, 1480, 1480},
		{Encap{VXLANPoolsV6: vxlan, IPIPPools: ipip}, 0, 1490, 1430},
	} {
		if got := WorkloadMTU(tc.e, NewTunnelMTUs(1500, tc.vxlanMTU, tc.ipipMTU)); got != tc.want {
			t.Errorf("%+v with vxlanMTU %d, ipipMTU %d: MTU %d, want %d", tc.e, tc.vxlanMTU, tc.ipipMTU, got, tc.want)
		}
	}
}
