package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
)

// TestMesh: three nodes on one L2 subnet form a full iBGP mesh (every session Established,
// shown by tabbyctl node status), each learns the others' blocks into its kernel with the
// owning node as next hop, and workloads on different nodes ping each other. Then:
//
//   - kill -9 of node3's agent: node1 keeps node3's route (graceful restart), traffic to
//     node3's workload keeps flowing, and after the restart the route is confirmed
//     without ever having been withdrawn;
//   - a fourth node (a host running tabby-node) joins: everyone peers with it, and the
//     established sessions among the first three are not reset;
//   - node3 is removed (agent stopped, Node deleted): its routes are withdrawn everywhere.
func TestMesh(t *testing.T) {
	l := newLab(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.Apply(labtest.Pool)
	start := time.Now()
	for i := 1; i <= 3; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
	}
	ips := map[int]netip.Addr{}
	for i := 1; i <= 3; i++ {
		ips[i] = l.WorkloadIP("default", fmt.Sprintf("w%d", i))
	}
	nodeAddr := func(i int) string { return fmt.Sprintf("172.31.1.%d", 9+i) }

	// Every node has a route to every other node's block, via that node.
	converged := func(nodes ...int) func() string {
		return func() string {
			for _, i := range nodes {
				routes := l.GatewayRoutes(fmt.Sprintf("node%d", i))
				for _, j := range nodes {
					if j == i {
						continue
					}
					if gw := routes[labtest.BlockOf(ips[j])]; gw != nodeAddr(j) {
						return fmt.Sprintf("node%d: route to %s via %q, want via %s (routes %v)", i, labtest.BlockOf(ips[j]), gw, nodeAddr(j), routes)
					}
				}
			}
			return ""
		}
	}
	took := labtest.Poll(t, "mesh converges", 60*time.Second, converged(1, 2, 3))
	t.Logf("3-node mesh: all routes installed %s after the workloads were added (%s after the first)", took, time.Since(start).Round(time.Millisecond))
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("node%d", i)
		up, s := l.established(node, l.NodeDataDir(node))
		if len(up) != 2 {
			t.Fatalf("%s: established peers %v; status %+v", node, up, s)
		}
		for _, p := range s.Peers {
			if p.Type != "node-to-node mesh" || p.Received != 1 || p.Advertised != 1 {
				t.Errorf("%s: peer row %+v", node, p)
			}
		}
	}
	for i := 1; i <= 3; i++ {
		for j := 1; j <= 3; j++ {
			if i != j {
				l.Ping(fmt.Sprintf("default/w%d", i), ips[j].String())
			}
		}
	}
	out := l.OK("exec", "node1", "--", labtest.Bin(t, "tabbyctl"), "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
	for _, want := range []string{"PEER ADDRESS", "node-to-node mesh", "Established", nodeAddr(2), nodeAddr(3)} {
		if !strings.Contains(out, want) {
			t.Errorf("node status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("tabbyctl node status on node1:\n%s", out)
	if out := l.OK("ctl", "node", "list"); !strings.Contains(out, "node3") || !strings.Contains(out, "64512") {
		t.Errorf("node list:\n%s", out)
	}

	// Graceful restart: kill -9 node3's agent.
	st := l.State()
	n3 := st.Nodes[2]
	argv := cmdline(t, n3.Agent.PID)
	_, before1 := l.established("node1", l.NodeDataDir("node1"))
	sinceOf := func(s *nodestatus.Status, addr string) time.Time {
		for _, p := range s.Peers {
			if p.Address == addr {
				return p.Since
			}
		}
		return time.Time{}
	}
	if err := syscall.Kill(n3.Agent.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, n3.Agent.PID, 10*time.Second)
	// Hold time (9 s) passes: without GR node1 would have dropped the route by now.
	labtest.Steady(t, "node1 keeps node3's route during graceful restart", 11*time.Second, 500*time.Millisecond, func() string {
		if gw := l.GatewayRoutes("node1")[labtest.BlockOf(ips[3])]; gw != nodeAddr(3) {
			return fmt.Sprintf("node1 dropped node3's route (route via %q)", gw)
		}
		return ""
	})
	l.Ping("default/w1", ips[3].String())
	p := startIn(t, n3.Netns, argv, filepath.Join(l.StateDir(), "node3.log"))
	t.Cleanup(func() { _ = p.Signal(syscall.SIGKILL) })
	restart := time.Now()
	labtest.Poll(t, "node3 re-establishes with node1 and node2", 30*time.Second, func() string {
		up, s := l.established("node3", n3.DataDir)
		if len(up) != 2 || s == nil || !s.Synced {
			return fmt.Sprintf("%v %+v", up, s)
		}
		if gw := l.GatewayRoutes("node1")[labtest.BlockOf(ips[3])]; gw != nodeAddr(3) {
			return "node1 lost node3's route"
		}
		return ""
	})
	t.Logf("node3's agent restarted after kill -9: sessions up and synced in %s", time.Since(restart).Round(time.Millisecond))
	labtest.Poll(t, "mesh converges after the restart", 20*time.Second, converged(1, 2, 3))
	l.Ping("default/w3", ips[1].String())
	_, after1 := l.established("node1", l.NodeDataDir("node1"))
	if !sinceOf(after1, nodeAddr(2)).Equal(sinceOf(before1, nodeAddr(2))) {
		t.Errorf("node1's session to node2 was reset by node3's restart: since %v, then %v", sinceOf(before1, nodeAddr(2)), sinceOf(after1, nodeAddr(2)))
	}

	// A fourth node joins.
	l.OK("host", "add", "n4", "--subnet", "1")
	st = l.State()
	var n4ns, n4addr string
	for _, h := range st.Hosts {
		if h.Name == "n4" {
			n4ns, n4addr = h.Netns, h.Address.Addr().String()
		}
	}
	n4data := filepath.Join(l.DataDir(), "node4")
	p4 := startIn(t, n4ns, []string{bgpAgent(t), "--node-name", "node4", "--etcd-endpoints", st.Etcd.Endpoint,
		"--data-dir", n4data, "--log-level", "debug"}, filepath.Join(l.StateDir(), "node4.log"))
	t.Cleanup(func() { _ = p4.Signal(syscall.SIGKILL) })
	labtest.Poll(t, "everyone peers with node4", 30*time.Second, func() string {
		for i := 1; i <= 3; i++ {
			node := fmt.Sprintf("node%d", i)
			if up, _ := l.established(node, l.NodeDataDir(node)); !up[n4addr] {
				return node + " has no session to node4"
			}
		}
		return ""
	})
	_, after4 := l.established("node1", l.NodeDataDir("node1"))
	for _, peer := range []string{nodeAddr(2), nodeAddr(3)} {
		if !sinceOf(after4, peer).Equal(sinceOf(after1, peer)) {
			t.Errorf("node1's session to %s was reset when node4 joined", peer)
		}
	}

	// node3 leaves: its agent stops and its Node is deleted; its routes go everywhere.
	pid3 := p.Pid
	_ = syscall.Kill(pid3, syscall.SIGTERM)
	waitExit(t, pid3, 15*time.Second)
	l.OK("ctl", "delete", "node", "node3")
	left := time.Now()
	labtest.Poll(t, "node3's routes withdrawn", 20*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			if gw, ok := l.GatewayRoutes(n)[labtest.BlockOf(ips[3])]; ok {
				return n + " still routes node3's block via " + gw
			}
		}
		return ""
	})
	t.Logf("node3 left: its routes withdrawn everywhere in %s", time.Since(left).Round(time.Millisecond))
	l.Ping("default/w1", ips[2].String())
}
