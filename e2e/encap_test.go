package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
)

// TestVXLAN: two subnets joined by a router that knows no pod routes; node1 and node3 share
// subnet 1, node2 is across the router. With vxlanMode CrossSubnet, node1 reaches node3's
// workload natively and node2's through vxlan.tabby, and a capture on node1's underlay link
// shows UDP 4789 only towards node2 and plain ICMP only towards node3. With Always, both go
// through the tunnel. Workloads get the underlay MTU less 50: a 1400-byte ping with DF
// crosses, a 1451-byte one is refused at the sender. With Never (and no BGP in the
// router), node2's workload is unreachable.
func TestVXLAN(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "2", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.VXLANPool("CrossSubnet", "false"))
	// A workload takes the MTU its node's agent has recorded when it is attached; wait for
	// the agents to record the VXLAN one, as an operator creates a pool before workloads.
	labtest.Poll(t, "workload MTU recorded on every Node", 30*time.Second, func() string {
		nodes := l.OK("ctl", "get", "nodes", "-o", "yaml")
		if n := strings.Count(nodes, api.AnnotationWorkloadMTU+`: "1450"`); n != 3 {
			return fmt.Sprintf("%d of 3 nodes record MTU 1450:\n%s", n, nodes)
		}
		return ""
	})
	for i := 1; i <= 3; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
	}
	w1, w2, w3 := l.WorkloadIP("default", "w1"), l.WorkloadIP("default", "w2"), l.WorkloadIP("default", "w3")
	routeTo := func(node string, dst netip.Addr) string {
		out, _, _ := l.Run("", "exec", node, "--", "ip", "route", "show", "proto", "116", labtest.BlockOf(dst))
		return strings.TrimSpace(out)
	}
	wantRoutes := func(cross, same string) func() string {
		return func() string {
			r2, r3 := routeTo("node1", w2), routeTo("node1", w3)
			if !strings.Contains(r2, cross) || !strings.Contains(r3, same) {
				return fmt.Sprintf("node1: to node2's block %q (want %q), to node3's %q (want %q)", r2, cross, r3, same)
			}
			return ""
		}
	}
	took := labtest.Poll(t, "CrossSubnet routes on node1", 30*time.Second, wantRoutes("dev vxlan.tabby onlink", "via 172.31.1.12 dev eth0"))
	t.Logf("CrossSubnet routes in %v", took.Round(time.Millisecond))

	// MTU: the agent's decision reached the workload.
	if out := l.OK("exec", "default/w1", "--", "cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(out) != "1450" {
		t.Errorf("w1 eth0 mtu %q, want 1450 (1500 underlay less VXLAN's 50)", strings.TrimSpace(out))
	}

	pingBoth := func(seen ...string) []string {
		c := l.StartCapture("node1")
		l.Ping("default/w1", w2.String())
		l.Ping("default/w1", w3.String())
		return c.Stop(t, seen...)
	}
	toW := func(w netip.Addr) string {
		return `^\S+ IP ` + regexp.QuoteMeta(w1.String()) + ` > ` + regexp.QuoteMeta(w.String()) + `: ICMP`
	}
	const vxTo2, vxTo3 = `172\.31\.1\.10\.\d+ > 172\.31\.2\.11\.4789: VXLAN`, `172\.31\.1\.10\.\d+ > 172\.31\.1\.12\.4789: VXLAN`
	checkCrossSubnet(t, pingBoth(vxTo2, toW(w3)), vxTo2, vxTo3, toW(w3), toW(w2))

	// 1400 bytes with DF fit through the tunnel; 1451 do not fit the workload's link.
	checkDFPings(t, l, "default/w1", w2, 1400, 1451)

	l.Apply(labtest.VXLANPool("Always", "false"))
	labtest.Poll(t, "Always routes on node1", 30*time.Second, wantRoutes("dev vxlan.tabby onlink", "dev vxlan.tabby onlink"))
	lines := pingBoth(vxTo2, vxTo3)
	vx3, plain3 := labtest.Count(lines, vxTo3), labtest.Count(lines, toW(w3))
	t.Logf("Always capture on node1's link: %d VXLAN to node3, %d plain ICMP to w3", vx3, plain3)
	if vx3 == 0 || plain3 != 0 {
		t.Errorf("Always: want same-subnet traffic encapsulated too; capture:\n%s", strings.Join(lines, "\n"))
	}

	l.Apply(labtest.VXLANPool("Never", "false"))
	labtest.Poll(t, "Never: no tunnel route on node1", 30*time.Second, func() string {
		if r := routeTo("node1", w2); strings.Contains(r, "vxlan.tabby") {
			return "still " + r
		}
		return ""
	})
	if out, _, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", w2.String()); code == 0 {
		t.Errorf("Never: w1 reached w2 across a router that knows no pod routes: %s", out)
	}
}

// checkCrossSubnet checks a capture on node1's underlay link while its workload pinged
// node2's (across the router) and node3's (on its subnet) under CrossSubnet: VXLAN
// (regular expressions vxTo2, vxTo3) only towards node2, plain ICMP (plainTo3, plainTo2)
// only towards node3's workload.
func checkCrossSubnet(t *testing.T, lines []string, vxTo2, vxTo3, plainTo3, plainTo2 string) {
	t.Helper()
	vx2, vx3, plain3, plain2 := labtest.Count(lines, vxTo2), labtest.Count(lines, vxTo3), labtest.Count(lines, plainTo3), labtest.Count(lines, plainTo2)
	t.Logf("CrossSubnet capture on node1's link: %d VXLAN to node2, %d VXLAN to node3, %d plain ICMP to w3, %d plain to w2", vx2, vx3, plain3, plain2)
	if vx2 == 0 || vx3 != 0 || plain3 == 0 || plain2 != 0 {
		t.Errorf("CrossSubnet: want VXLAN only towards node2 and plain ICMP only towards w3; capture:\n%s", strings.Join(lines, "\n"))
	}
}

// checkDFPings checks that a ping of fits bytes (IP packet) with DF set crosses from a lab
// workload to dst and one of refused bytes is refused at the sender for its size.
func checkDFPings(t *testing.T, l *labtest.Lab, from string, dst netip.Addr, fits, refused int) {
	t.Helper()
	headers := 20 + 8 // IPv4, ICMP
	if dst.Is6() {
		headers = 40 + 8 // IPv6, ICMPv6
	}
	ping := func(size int) (string, int) {
		out, stderr, code := l.Run("", "exec", from, "--", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(size-headers), dst.String())
		return out + stderr, code
	}
	if out, code := ping(fits); code != 0 {
		t.Errorf("%d-byte DF ping to %s through the tunnel: %s", fits, dst, out)
	}
	if out, code := ping(refused); code == 0 {
		t.Errorf("%d-byte DF ping to %s through the tunnel succeeded, want refused: %s", refused, dst, out)
	} else if !strings.Contains(out, "mtu") && !strings.Contains(out, "too long") {
		t.Errorf("%d-byte DF ping to %s failed, but not for its size: %s", refused, dst, out)
	}
}
