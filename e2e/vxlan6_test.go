package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// vxlanPool6 is the lab's default IPv6 pool with a vxlanMode.
func vxlanPool6(mode string) string {
	return `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv6-ippool}
spec: {cidr: "fd00:10:244::/64", vxlanMode: ` + mode + `}
`
}

// TestVXLANIPv6: VXLAN over the IPv6 underlay, in a dual-stack lab of two subnets joined by
// a router that knows no pod routes (node1 and node3 on subnet 1, node2 across the
// router). With the IPv6 pool at vxlanMode CrossSubnet, every Node records an IPv6 VTEP
// and MAC, node1 keeps vxlan-v6.tabby (over its IPv6 address, MTU 1500 - 70), routes node2's
// IPv6 block through it and node3's natively, and a capture on node1's underlay link
// shows UDP 4789 over IPv6 only towards node2 and plain ICMPv6 only towards node3.
// Workloads get MTU 1430: a 1430-byte DF ping crosses the tunnel, a 1431-byte one is
// refused at the sender. With Always, both go through the tunnel. ip6tables drops VXLAN
// from non-nodes (tby-tunnel-peers6 holds the nodes' IPv6 addresses). With Never, the
// device and the IPv6 VTEPs go, w2 is unreachable over IPv6 again, and once the workloads
// are gone the pool can be deleted.
func TestVXLANIPv6(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "ping", Package: "iputils-ping"}, testenv.Tool{Cmd: "ip6tables-nft-restore", Package: "iptables"}, testenv.Tool{Cmd: "ipset", Package: "ipset"})
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "2", "--ipv6", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(vxlanPool6("CrossSubnet"))
	type node struct {
		Metadata struct {
			Name        string            `json:"name"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec api.NodeSpec `json:"spec"`
	}
	nodes := func() []node {
		var list struct{ Items []node }
		out := l.OK("ctl", "get", "nodes", "-o", "json")
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("tabbyctl get nodes: %v: %s", err, out)
		}
		return list.Items
	}
	// A workload takes the MTU its node's agent has recorded when it is attached.
	labtest.Poll(t, "every Node records an IPv6 VTEP, its MAC and MTU 1430", 30*time.Second, func() string {
		for _, n := range nodes() {
			s := n.Spec
			vtep, err := netip.ParseAddr(s.IPv6VXLANTunnelAddr)
			if err != nil || !netip.MustParsePrefix("fd00:10:244::/64").Contains(vtep) || s.VXLANTunnelMACAddrV6 != felix.VXLANMACV6(n.Metadata.Name).String() ||
				n.Metadata.Annotations[api.AnnotationWorkloadMTU] != "1430" || s.IPv4VXLANTunnelAddr != "" {
				return fmt.Sprintf("%s: ipv6VXLANTunnelAddr %q, vxlanTunnelMACAddrV6 %q, MTU %q, ipv4VXLANTunnelAddr %q", n.Metadata.Name,
					s.IPv6VXLANTunnelAddr, s.VXLANTunnelMACAddrV6, n.Metadata.Annotations[api.AnnotationWorkloadMTU], s.IPv4VXLANTunnelAddr)
			}
		}
		return ""
	})
	for i := 1; i <= 3; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
	}
	_, w1 := l.WorkloadIPs("default", "w1")
	_, w2 := l.WorkloadIPs("default", "w2")
	_, w3 := l.WorkloadIPs("default", "w3")
	addr6 := map[string]string{}
	for _, n := range l.State().Nodes {
		addr6[n.Name] = n.Address6.Addr().String()
	}
	vtep6 := func(name string) string {
		for _, n := range nodes() {
			if n.Metadata.Name == name {
				return n.Spec.IPv6VXLANTunnelAddr
			}
		}
		t.Fatalf("no Node %s", name)
		return ""
	}

	link := l.OK("exec", "node1", "--", "ip", "-d", "link", "show", felix.VXLANDeviceV6)
	for _, want := range []string{"mtu 1430", "vxlan id 4096", "local " + addr6["node1"], "dstport 4789", "nolearning"} {
		if !strings.Contains(link, want) {
			t.Errorf("node1's %s lacks %q:\n%s", felix.VXLANDeviceV6, want, link)
		}
	}
	routeTo := func(dst netip.Addr) string {
		out, _, _ := l.Run("", "exec", "node1", "--", "ip", "-6", "route", "show", "proto", "116", labtest.BlockOf6(dst))
		return strings.TrimSpace(out)
	}
	// cross and same are regular expressions for the routes to node2's and node3's blocks.
	wantRoutes := func(cross, same string) func() string {
		return func() string {
			r2, r3 := routeTo(w2), routeTo(w3)
			if !regexp.MustCompile(cross).MatchString(r2) || !regexp.MustCompile(same).MatchString(r3) {
				return fmt.Sprintf("node1: to node2's block %q (want %q), to node3's %q (want %q)", r2, cross, r3, same)
			}
			return ""
		}
	}
	tunnelled := func(node string) string {
		return `^\S+ via ` + regexp.QuoteMeta(vtep6(node)) + ` dev ` + regexp.QuoteMeta(felix.VXLANDeviceV6) + ` .*onlink`
	}
	labtest.Poll(t, "CrossSubnet routes on node1", 30*time.Second,
		wantRoutes(tunnelled("node2"), `^\S+ via `+regexp.QuoteMeta(addr6["node3"])+` dev eth0 `))
	if out := l.OK("exec", "default/w1", "--", "cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(out) != "1430" {
		t.Errorf("w1 eth0 mtu %q, want 1430 (1500 underlay less VXLAN over IPv6's 70)", strings.TrimSpace(out))
	}

	pingBoth := func(seen ...string) []string {
		c := l.StartCapture6("node1")
		l.Ping("default/w1", w2.String())
		l.Ping("default/w1", w3.String())
		return c.Stop(t, seen...)
	}
	toW := func(w netip.Addr) string {
		return `^\S+ IP6 ` + regexp.QuoteMeta(w1.String()) + ` > ` + regexp.QuoteMeta(w.String()) + `: ICMP6, echo request`
	}
	vxTo := func(node string) string {
		return regexp.QuoteMeta(addr6["node1"]) + `\.\d+ > ` + regexp.QuoteMeta(addr6[node]) + `\.4789: VXLAN`
	}
	checkCrossSubnet(t, pingBoth(vxTo("node2"), toW(w3)), vxTo("node2"), vxTo("node3"), toW(w3), toW(w2))

	// 1430 bytes with DF fit through the tunnel; 1431 do not fit the workload's link.
	checkDFPings(t, l, "default/w1", w2, 1430, 1431)

	// The guard: VXLAN to node1 over IPv6 only from the nodes' IPv6 addresses.
	if rules := l.OK("exec", "node1", "--", "ip6tables-save", "-t", "filter"); !strings.Contains(rules, "--dport 4789 -m addrtype --dst-type LOCAL -m set ! --match-set tby-tunnel-peers6 src") {
		t.Errorf("node1's ip6tables has no VXLAN guard:\n%s", rules)
	}
	set := l.OK("exec", "node1", "--", "ipset", "list", "tby-tunnel-peers6")
	for _, a := range addr6 {
		if !strings.Contains(set, "\n"+a+"\n") && !strings.HasSuffix(strings.TrimSpace(set), "\n"+a) {
			t.Errorf("tby-tunnel-peers6 lacks %s:\n%s", a, set)
		}
	}

	l.Apply(vxlanPool6("Always"))
	labtest.Poll(t, "Always routes on node1", 30*time.Second, wantRoutes(tunnelled("node2"), tunnelled("node3")))
	lines := pingBoth(vxTo("node2"), vxTo("node3"))
	vx3, plain3 := labtest.Count(lines, vxTo("node3")), labtest.Count(lines, toW(w3))
	t.Logf("Always capture on node1's link: %d VXLAN to node3, %d plain ICMPv6 to w3", vx3, plain3)
	if vx3 == 0 || plain3 != 0 {
		t.Errorf("Always: want same-subnet traffic encapsulated too; capture:\n%s", strings.Join(lines, "\n"))
	}

	vteps := []string{vtep6("node1"), vtep6("node2"), vtep6("node3")}
	if out := l.OK("ctl", "ipam", "show", "--ip", vteps[0]); !strings.Contains(out, "vxlan-v6-tunnel-addr-") || !strings.Contains(out, "vxlanV6TunnelAddress") {
		t.Errorf("IPAM on %s: want its vxlan-v6 handle and type:\n%s", vteps[0], out)
	}

	l.Apply(vxlanPool6("Never"))
	labtest.Poll(t, "Never: the device and the IPv6 VTEPs go", 30*time.Second, func() string {
		if out, _, code := l.Run("", "exec", "node1", "--", "ip", "link", "show", felix.VXLANDeviceV6); code == 0 {
			return "node1 still has " + out
		}
		for _, n := range nodes() {
			if n.Spec.IPv6VXLANTunnelAddr != "" || n.Spec.VXLANTunnelMACAddrV6 != "" || n.Metadata.Annotations[api.AnnotationWorkloadMTU] != "1500" {
				return fmt.Sprintf("%s still records %q %q, MTU %q", n.Metadata.Name, n.Spec.IPv6VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddrV6,
					n.Metadata.Annotations[api.AnnotationWorkloadMTU])
			}
		}
		if r := routeTo(w2); strings.Contains(r, felix.VXLANDeviceV6) {
			return "node1 still routes " + r
		}
		return ""
	})
	l.NoPing("default/w1", w2.String())
	for _, a := range vteps {
		if out, _, _ := l.Run("", "ctl", "ipam", "show", "--ip", a); strings.Contains(out, "vxlan-v6-tunnel-addr-") {
			t.Errorf("IPAM still holds the IPv6 VTEP %s:\n%s", a, out)
		}
	}
	// Nothing of the tunnel keeps the pool: once its workloads are gone, it can be deleted.
	for i := 1; i <= 3; i++ {
		l.OK("workload", "del", fmt.Sprintf("default/w%d", i))
	}
	l.OK("ctl", "delete", "ippool", "default-ipv6-ippool")
}

// TestVXLANIPv6Only: nodes with an IPv6 address only (--ip none, without BGP), on two
// subnets behind a router that knows no pod routes: with the IPv6 pool at vxlanMode
// Always, a workload on node1 reaches one on node2 over IPv6 through vxlan-v6.tabby, and
// no IPv4 tunnel is made (the IPv4 pool at Always too: its Nodes have no IPv4 address).
func TestVXLANIPv6Only(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "ping", Package: "iputils-ping"})
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "2", "--ipv6", "--agent-binary", labtest.AgentScript(t, "--ip", "none", "--bgp=false", "--route-refresh-interval", "2s"))
	l.Apply(vxlanPool6("Always"))
	l.Apply(labtest.VXLANPool("Always", "false"))
	labtest.Poll(t, "node1 records its IPv6 VTEP and the IPv6 tunnel's MTU, and no IPv4 address", 30*time.Second, func() string {
		out := l.OK("ctl", "get", "node", "node1", "-o", "yaml")
		if !strings.Contains(out, "ipv6VXLANTunnelAddr:") || !strings.Contains(out, api.AnnotationWorkloadMTU+`: "1430"`) ||
			strings.Contains(out, "ipv4Address") || strings.Contains(out, "ipv4VXLANTunnelAddr") {
			return out
		}
		return ""
	})
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	_, w2 := l.WorkloadIPs("default", "w2")
	labtest.Poll(t, "w1 pings w2 over IPv6 through the tunnel", 30*time.Second, func() string {
		if r, _, _ := l.Run("", "exec", "node1", "--", "ip", "-6", "route", "show", "proto", "116", labtest.BlockOf6(w2)); !strings.Contains(r, "dev "+felix.VXLANDeviceV6+" ") {
			return "node1's route to w2's block: " + r
		}
		if out, _, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", w2.String()); code != 0 {
			return out
		}
		return ""
	})
	if out, _, code := l.Run("", "exec", "node1", "--", "ip", "link", "show", felix.VXLANDevice); code == 0 {
		t.Errorf("an IPv6-only node made %s:\n%s", felix.VXLANDevice, out)
	}
}
