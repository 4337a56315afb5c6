package felix

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

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
}

// The reconciler creates vxlan.tabby as specified, programs neighbor and FDB entries, and
// converges: a second pass writes nothing; a peer removed is removed.
func TestVXLANReconcilerNetns(t *testing.T) {
	ns := newTestNS(t)
	ns.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ns.ip(t, "addr", "add", "172.31.1.10/24", "dev", "eth0")
	ns.ip(t, "link", "set", "eth0", "up")
	r := NewVXLANReconciler(ns.h, nil)
	cfg := &VXLANDeviceConfig{VTEP: netip.MustParseAddr("10.244.0.0"), MAC: VXLANMAC("node1"), Underlay: netip.MustParseAddr("172.31.1.10"), MTU: 1450}
	peers := []VXLANPeer{
		{Node: "node2", VTEP: netip.MustParseAddr("10.244.0.64"), MAC: VXLANMAC("node2").String(), Underlay: netip.MustParseAddr("172.31.2.11")},
		{Node: "node3", VTEP: netip.MustParseAddr("10.244.0.128"), MAC: VXLANMAC("node3").String(), Underlay: netip.MustParseAddr("172.31.1.12")},
	}
	if _, err := r.Apply(cfg, peers); err != nil {
		t.Fatal(err)
	}
	link := ns.ip(t, "-d", "link", "show", VXLANDevice)
	for _, want := range []string{"mtu 1450", "vxlan id 4096", "dstport 4789", "nolearning", "local 172.31.1.10", VXLANMAC("node1").String(), "UP"} {
		if !strings.Contains(link, want) {
			t.Errorf("link lacks %q:\n%s", want, link)
		}
	}
	if a := ns.ip(t, "-4", "addr", "show", VXLANDevice); !strings.Contains(a, "10.244.0.0/32") {
		t.Errorf("address: %s", a)
	}
	neigh := ns.ip(t, "neigh", "show", "dev", VXLANDevice)
	fdb := run(t, "ip", "netns", "exec", ns.name, "bridge", "fdb", "show", "dev", VXLANDevice)
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
	if neigh := ns.ip(t, "neigh", "show", "dev", VXLANDevice); strings.Contains(neigh, "10.244.0.128") {
		t.Errorf("removed peer's neighbor left:\n%s", neigh)
	}
	if fdb := run(t, "ip", "netns", "exec", ns.name, "bridge", "fdb", "show", "dev", VXLANDevice); strings.Contains(fdb, "172.31.1.12") {
		t.Errorf("removed peer's fdb left:\n%s", fdb)
	}
	if _, err := r.Apply(nil, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.h.LinkByName(VXLANDevice); err == nil {
		t.Errorf("device left: %v", out)
	}
}
