package felix

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/vmtest"
)

// TestIPIPCrossSubnetVM is issue 6's lab at the felix level, in a VM with Debian's kernel
// (this host has no ipip). Three node namespaces: n1 and n2 on subnet A (192.168.50.0/24,
// ports of a bridge in a router namespace), n3 on subnet B (192.168.60.0/24) behind the
// router, which routes between the subnets and knows no pod route. Each node has a
// workload-like address (10.245.X.10/32 on lo) in its block 10.245.X.0/26 of an ipipMode
// CrossSubnet pool; IPIPReconciler brings tunl0 up and a Dataplane installs the routes to
// the other blocks (learned via the owner's node address, as BGP gives them) with Encap
// from DesiredEncap, fed as the agent feeds it (Nodes with their bgp.ipv4Address
// prefixes, the pool, the block affinities). Then:
//   - n1's workload pings n2's natively: on the underlay (nft counters on n1's port in the
//     router, at ingress, so bridged frames count too) plain ICMP to 10.245.2.10 and no IP
//     protocol 4; tunl0's counters on n1 (TX) and n2 (RX) do not move;
//   - n1's workload pings n3's through the tunnel: protocol 4 to 192.168.60.3 on n1's
//     port and in the router's FORWARD, never ICMP to 10.245.3.10 in clear, nothing to or
//     from the pool forwarded in clear, n1's tunl0 TX and n3's tunl0 RX grow;
//   - the router has no route to the pool throughout.
func TestIPIPCrossSubnetVM(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.Run(t, vmtest.Options{Modules: []string{"ipip", "veth", "bridge", "nf_tables", "nft_objref"}})
		return
	}
	r := vmNS(t)
	ns := []*testNS{vmNS(t), vmNS(t), vmNS(t)}
	under := []string{"192.168.50.1/24", "192.168.50.2/24", "192.168.60.3/24"}
	gw := []string{"192.168.50.254", "192.168.50.254", "192.168.60.254"}

	r.ip(t, "link", "add", "brA", "type", "bridge")
	r.ip(t, "addr", "add", "192.168.50.254/24", "dev", "brA")
	r.ip(t, "link", "set", "brA", "up")
	for i, n := range ns {
		port := fmt.Sprintf("r%d", i+1)
		run(t, "ip", "link", "add", "eth0", "netns", n.name, "type", "veth", "peer", "name", port, "netns", r.name)
		if i < 2 {
			r.ip(t, "link", "set", port, "master", "brA")
		} else {
			r.ip(t, "addr", "add", "192.168.60.254/24", "dev", port)
		}
		r.ip(t, "link", "set", port, "up")
		n.ip(t, "addr", "add", under[i], "dev", "eth0")
		n.ip(t, "link", "set", "eth0", "up")
		n.ip(t, "route", "add", "default", "via", gw[i])
		n.ip(t, "addr", "add", fmt.Sprintf("10.245.%d.10/32", i+1), "dev", "lo")
	}
	rh, err := netns.GetFromName(r.name)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	if err := inNetNS(rh, func() error {
		_, err := ensureSysctl(Sysctl{Path: "net/ipv4/ip_forward", Value: "1"})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The router's counters. At ingress of r1 (n1's port, before the bridge) every packet
	// n1 puts on the underlay passes; FORWARD sees what the router routes between subnets.
	counters := []string{"ipip_to_n2", "ipip_to_n3", "icmp_to_n2_block", "icmp_to_n3_block", "fwd_ipip", "fwd_pool_clear"}
	counterFamily := func(i int) string { return map[bool]string{true: "netdev", false: "ip"}[i < 4] }
	rules := []string{
		"add table netdev tby", "add table ip tby",
		`add chain netdev tby in_r1 { type filter hook ingress device "r1" priority 0; }`,
		"add chain ip tby routed { type filter hook forward priority 0; }",
	}
	for i, c := range counters {
		rules = append(rules, fmt.Sprintf("add counter %s tby %s", counterFamily(i), c))
	}
	rules = append(rules,
		"add rule netdev tby in_r1 ip protocol 4 ip daddr 192.168.50.2 counter name ipip_to_n2",
		"add rule netdev tby in_r1 ip protocol 4 ip daddr 192.168.60.3 counter name ipip_to_n3",
		"add rule netdev tby in_r1 ip protocol icmp ip daddr 10.245.2.10 counter name icmp_to_n2_block",
		"add rule netdev tby in_r1 ip protocol icmp ip daddr 10.245.3.10 counter name icmp_to_n3_block",
		"add rule ip tby routed ip protocol 4 counter name fwd_ipip",
		"add rule ip tby routed ip daddr 10.245.0.0/16 counter name fwd_pool_clear",
		"add rule ip tby routed ip saddr 10.245.0.0/16 counter name fwd_pool_clear",
	)
	run(t, "ip", "netns", "exec", r.name, "nft", strings.Join(rules, "; "))
	packets := regexp.MustCompile(`packets (\d+)`)
	count := func() map[string]uint64 {
		t.Helper()
		got := map[string]uint64{}
		for i, c := range counters {
			out := run(t, "ip", "netns", "exec", r.name, "nft", "list", "counter", counterFamily(i), "tby", c)
			m := packets.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("counter %s: %s", c, out)
			}
			got[c], _ = strconv.ParseUint(m[1], 10, 64)
		}
		return got
	}
	tunl0 := func(n *testNS) (rx, tx uint64) {
		t.Helper()
		l, err := n.h.LinkByName(IPIPDevice)
		if err != nil {
			t.Fatal(err)
		}
		s := l.Attrs().Statistics
		return s.RxPackets, s.TxPackets
	}

	nodes := []EncapNode{
		{Name: "n1", Addr: netip.MustParsePrefix(under[0]), IPIPAddr: netip.MustParseAddr("10.245.1.1")},
		{Name: "n2", Addr: netip.MustParsePrefix(under[1]), IPIPAddr: netip.MustParseAddr("10.245.2.1")},
		{Name: "n3", Addr: netip.MustParsePrefix(under[2]), IPIPAddr: netip.MustParseAddr("10.245.3.1")},
	}
	block := func(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.245.%d.0/26", i+1)) }
	blocks := map[netip.Prefix]string{block(0): "n1", block(1): "n2", block(2): "n3"}
	pools := []EncapPool{{Name: "ipip-cross", CIDR: netip.MustParsePrefix("10.245.0.0/16"), IPIPMode: api.EncapCrossSubnet}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	for i, n := range ns {
		self := nodes[i]
		if _, err := NewIPIPReconciler(n.h, log).Apply(self.IPIPAddr, 1500-IPIPOverhead); err != nil {
			t.Fatalf("%s: Apply: %v", self.Name, err)
		}
		e := DesiredEncap(EncapInput{Node: self.Name, Nodes: nodes, Pools: pools, Blocks: blocks})
		var learned []Route
		want := []string{"blackhole " + block(i).String()}
		for j, other := range nodes {
			if j == i {
				continue
			}
			gw := other.Addr.Addr()
			learned = append(learned, Route{Dst: block(j), Type: RouteGateway, Gateway: gw})
			if self.Addr.Masked().Contains(gw) {
				want = append(want, fmt.Sprintf("%s via %s dev eth0", block(j), gw))
			} else {
				want = append(want, fmt.Sprintf("%s via %s dev %s onlink", block(j), gw, IPIPDevice))
			}
		}
		slices.Sort(want)
		d := startDataplane(t, n, time.Minute)
		d.Update(LocalState{Blocks: []netip.Prefix{block(i)}, Learned: learned, Encap: &e})
		waitRoutes(t, n, self.Name+"'s routes", want...)
	}

	noPoolRoutes := func() {
		t.Helper()
		if out := r.ip(t, "route", "show"); strings.Contains(out, "10.245.") {
			t.Errorf("the router has a route to the pool:\n%s", out)
		}
	}
	// ping retries until a reply comes back or the deadline passes: the first request
	// may wait on ARP, and a bridge port may still be coming up.
	ping := func(dst string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := exec.Command("ip", "netns", "exec", ns[0].name, "ping", "-c", "1", "-W", "1", "-I", "10.245.1.10", dst).CombinedOutput()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ping 10.245.1.10 -> %s: %v\n%s", dst, err, out)
			}
		}
	}
	noPoolRoutes()

	// Same subnet: native.
	before := count()
	_, n1tx := tunl0(ns[0])
	n2rx, _ := tunl0(ns[1])
	ping("10.245.2.10")
	after := count()
	_, n1tx2 := tunl0(ns[0])
	n2rx2, _ := tunl0(ns[1])
	if after["icmp_to_n2_block"] == before["icmp_to_n2_block"] {
		t.Errorf("n1 -> n2: no plain ICMP to 10.245.2.10 on n1's underlay link: %v", after)
	}
	if after["ipip_to_n2"] != 0 {
		t.Errorf("n1 -> n2 (same subnet): %d IP protocol 4 packets to 192.168.50.2 on n1's underlay link; want none", after["ipip_to_n2"])
	}
	if n1tx2 != n1tx || n2rx2 != n2rx {
		t.Errorf("n1 -> n2 (same subnet) went through tunl0: n1 TX %d -> %d, n2 RX %d -> %d", n1tx, n1tx2, n2rx, n2rx2)
	}

	// Across the router: IPIP.
	before = after
	n3rx, _ := tunl0(ns[2])
	ping("10.245.3.10")
	after = count()
	_, n1tx3 := tunl0(ns[0])
	n3rx2, _ := tunl0(ns[2])
	if after["ipip_to_n3"] == before["ipip_to_n3"] || after["fwd_ipip"] == before["fwd_ipip"] {
		t.Errorf("n1 -> n3 (across the router): no IP protocol 4 on n1's underlay link or through the router: before %v, after %v", before, after)
	}
	if after["icmp_to_n3_block"] != 0 || after["fwd_pool_clear"] != 0 {
		t.Errorf("pod addresses crossed the underlay in clear: %v", after)
	}
	if after["ipip_to_n2"] != 0 {
		t.Errorf("IP protocol 4 to n2 on n1's underlay link: %v", after)
	}
	if n1tx3 <= n1tx2 || n3rx2 <= n3rx {
		t.Errorf("n1 -> n3 did not go through tunl0: n1 TX %d -> %d, n3 RX %d -> %d", n1tx2, n1tx3, n3rx, n3rx2)
	}
	noPoolRoutes()
	t.Logf("router counters: %v; n1 tunl0 TX %d -> %d -> %d", after, n1tx, n1tx2, n1tx3)
}
