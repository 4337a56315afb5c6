package e2e

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// birdPrefix6 matches the IPv6 prefixes in the first column of `birdc show route` lines.
var birdPrefix6 = regexp.MustCompile(`(?m)^([0-9a-f:]+:[0-9a-f:]*/\d+)\s`)

// TestBIRDToRIPv6: BIRD 2 as an eBGP top-of-rack router of a dual-stack lab, peering
// with every node over IPv6 only, through a global BGPPeer whose peerIP is BIRD's IPv6
// address. The session carries IPv6 unicast: BIRD learns each node's IPv6 block from its
// owner with the owner's IPv6 address as next hop, and BIRD's own IPv6 prefix reaches
// every node's kernel via BIRD. No IPv4 route crosses it.
func TestBIRDToRIPv6(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--ipv6", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", "tor", "--subnet", "1")
	st := l.State()
	var torNS, tor4, tor6 string
	for _, h := range st.Hosts {
		if h.Name == "tor" {
			torNS, tor4, tor6 = h.Netns, h.Address.Addr().String(), h.Address6.Addr().String()
		}
	}
	if tor6 == "" {
		t.Fatalf("host tor has no IPv6 address in a lab up with --ipv6: %+v", st.Hosts)
	}
	n1, n2 := st.Node("node1").Address6.Addr().String(), st.Node("node2").Address6.Addr().String()
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor6}
spec: {peerIP: "` + tor6 + `", asNumber: 65001}
`)
	ips := l.dualStackWorkloads()
	want := map[string]string{labtest.BlockOf6(ips["node1"][1]): n1, labtest.BlockOf6(ips["node2"][1]): n2}
	sock := startBIRD(t, torNS, `router id `+tor4+`;
protocol device {}
protocol static own6 { ipv6; route 2001:db8:77::/48 blackhole; }
template bgp tabby {
  local `+tor6+` as 65001;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart;
  ipv6 { import all; export where proto = "own6"; };
}
protocol bgp node1 from tabby { neighbor `+n1+` as 64512; }
protocol bgp node2 from tabby { neighbor `+n2+` as 64512; }
`)
	took := labtest.Poll(t, "BIRD learns each node's IPv6 block from its owner, and nothing else", 40*time.Second, func() string {
		out, stderr, code := l.Run("", "exec", "tor", "--", "birdc", "-s", sock, "show", "route", "all", "where", "proto", "!=", `"own6"`)
		if code != 0 {
			return "birdc: " + stderr
		}
		var got []string
		for _, m := range birdPrefix6.FindAllStringSubmatch(out, -1) {
			got = append(got, m[1])
		}
		slices.Sort(got)
		if !slices.Equal(got, slices.Sorted(maps.Keys(want))) || birdPrefix.MatchString(out) {
			return fmt.Sprintf("BIRD has %v, want %v and no IPv4 prefix:\n%s", got, slices.Sorted(maps.Keys(want)), out)
		}
		for block, owner := range want {
			// "BGP.next_hop: <owner>" in the block's attributes.
			i := strings.Index(out, block)
			if next := out[i:]; !strings.Contains(next[:min(len(next), 600)], "BGP.next_hop: "+owner) {
				return fmt.Sprintf("%s: next hop is not its owner %s:\n%s", block, owner, out)
			}
		}
		return ""
	})
	t.Logf("BIRD learned both IPv6 blocks %s after the workloads", took)
	labtest.Poll(t, "BIRD's IPv6 prefix in every node's kernel via BIRD", 20*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			if gw := l.GatewayRoutes6(n)["2001:db8:77::/48"]; gw != tor6 {
				return fmt.Sprintf("%s: 2001:db8:77::/48 via %q, want via %s", n, gw, tor6)
			}
		}
		return ""
	})
	for _, n := range []string{"node1", "node2"} {
		if routes := l.GatewayRoutes(n); routes["2001:db8:77::/48"] != "" || slices.Contains(slices.Collect(maps.Values(routes)), tor4) {
			t.Errorf("%s: an IPv4 route via BIRD over its IPv6 session: %v", n, routes)
		}
	}
}
