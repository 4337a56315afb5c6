package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// TestNeverNeedsBGPRouter: two nodes on two subnets, an IPPool with ipipMode and
// vxlanMode Never, the node-to-node mesh off. The lab router knows no pod routes, so w1
// cannot reach w2. Then BIRD runs in the router namespace as the nodes' iBGP route
// reflector (next hop self, so each node routes the other's block via its gateway) and
// installs the learned blocks into the router's kernel: the same ping works, natively (a
// capture on the router's port to node1 sees plain ICMP between the workloads, no IPIP,
// no VXLAN).
func TestNeverNeedsBGPRouter(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/bin/tcpdump", Package: "tcpdump"})
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--subnets", "2", "--agent-binary", bgpAgent(t))
	l.Apply(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Never}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: node1-gateway}
spec: {node: node1, peerIP: 172.31.1.1, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: node2-gateway}
spec: {node: node2, peerIP: 172.31.2.1, asNumber: 64512}
`)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	w1, w2 := l.WorkloadIP("default", "w1"), l.WorkloadIP("default", "w2")
	if out, _, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", w2.String()); code == 0 {
		t.Fatalf("Never without BGP in the router: w1 reached w2 across a router that knows no pod routes: %s", out)
	}

	routerNS := "tby-" + l.Name + "-router"
	sock := startBIRD(t, routerNS, `router id 172.31.1.1;
protocol device {}
protocol direct { ipv4; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
template bgp node {
  local as 64512;
  rr client;
  direct;
  hold time 9; keepalive time 3; connect retry time 1;
  ipv4 { import all; export where source = RTS_BGP; next hop self; gateway direct; };
}
protocol bgp node1 from node { local 172.31.1.1; neighbor 172.31.1.10 as 64512; }
protocol bgp node2 from node { local 172.31.2.1; neighbor 172.31.2.11 as 64512; }
`)
	b1, b2 := labtest.BlockOf(w1), labtest.BlockOf(w2)
	took := labtest.Poll(t, "router kernel and nodes route both blocks", 40*time.Second, func() string {
		out, _, _ := l.Run("", "exec", "router", "--", "ip", "route", "show", "proto", "bird")
		if !strings.Contains(out, b1+" via 172.31.1.10") || !strings.Contains(out, b2+" via 172.31.2.11") {
			birdc, _, _ := l.Run("", "exec", "router", "--", "birdc", "-s", sock, "show", "route")
			return fmt.Sprintf("router kernel:\n%s\nbird:\n%s", out, birdc)
		}
		if gw := l.GatewayRoutes("node1")[b2]; gw != "172.31.1.1" {
			return fmt.Sprintf("node1: %s via %q, want the gateway 172.31.1.1", b2, gw)
		}
		if gw := l.GatewayRoutes("node2")[b1]; gw != "172.31.2.1" {
			return fmt.Sprintf("node2: %s via %q, want the gateway 172.31.2.1", b1, gw)
		}
		return ""
	})
	t.Logf("BIRD in the router: both blocks in its kernel and on the nodes after %v", took.Round(time.Millisecond))

	plain := `^\S+ IP ` + regexp.QuoteMeta(w1.String()) + ` > ` + regexp.QuoteMeta(w2.String()) + `: ICMP echo request`
	reply := `^\S+ IP ` + regexp.QuoteMeta(w2.String()) + ` > ` + regexp.QuoteMeta(w1.String()) + `: ICMP echo reply`
	c := l.StartCapture("node1")
	l.Ping("default/w1", w2.String())
	lines := c.Stop(t, plain, reply)
	tunnelled := labtest.Count(lines, `VXLAN|\.4789: |: IP \d|ipip`) // IPIP shows as an IP packet inside an IP packet
	t.Logf("capture on node1's link: %d plain echo requests w1 > w2, %d replies, %d tunnelled packets", labtest.Count(lines, plain), labtest.Count(lines, reply), tunnelled)
	if labtest.Count(lines, plain) == 0 || labtest.Count(lines, reply) == 0 || tunnelled != 0 {
		t.Errorf("want plain ICMP both ways and nothing encapsulated; capture:\n%s", strings.Join(lines, "\n"))
	}
}
