package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
)

// hostAgent is a tabby-node run in a lab host namespace (a route reflector host, or a node
// the lab did not start).
type hostAgent struct {
	name, netns, addr, dataDir, log string
	proc                            *os.Process
	argv                            []string
}

// startHostAgent adds a host to subnet 1 and runs the lab's agent binary in it as node
// name, with extra flags; the agent is killed at cleanup (down would stop it too).
func (l *lab) startHostAgent(name string, extra ...string) *hostAgent {
	l.t.Helper()
	l.OK("host", "add", name, "--subnet", "1")
	st := l.State()
	h := &hostAgent{name: name, dataDir: filepath.Join(l.DataDir(), name), log: filepath.Join(l.StateDir(), name+".log")}
	for _, x := range st.Hosts {
		if x.Name == name {
			h.netns, h.addr = x.Netns, x.Address.Addr().String()
		}
	}
	h.argv = append([]string{bgpAgent(l.t), "--node-name", name, "--etcd-endpoints", st.Etcd.Endpoint,
		"--data-dir", h.dataDir, "--log-level", "debug"}, extra...)
	h.start(l.t)
	l.t.Cleanup(func() {
		if l.t.Failed() {
			if b, err := os.ReadFile(h.log); err == nil {
				lines := strings.Split(string(b), "\n")
				l.t.Logf("%s (tail):\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	})
	return h
}

func (h *hostAgent) start(t testing.TB) {
	t.Helper()
	h.proc = startIn(t, h.netns, h.argv, h.log)
	p := h.proc
	t.Cleanup(func() { _ = p.Signal(syscall.SIGKILL) })
}

func (h *hostAgent) kill(t testing.TB) {
	t.Helper()
	// The process is `ip netns exec`, which execs the agent: one pid.
	if err := h.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, h.proc.Pid, 10*time.Second)
}

// peerRows returns a status's peers: address -> "type/state".
func peerRows(s *nodestatus.Status) map[string]string {
	out := map[string]string{}
	if s == nil {
		return out
	}
	for _, p := range s.Peers {
		out[p.Address] = p.Type + "/" + p.State
	}
	return out
}

// TestRouteReflectors: two dedicated route reflector hosts (tabby-node --role
// route-reflector, cluster ID 1.0.0.1, label route-reflector=true) and five client nodes
// with the node-to-node mesh off and one global BGPPeer selecting the reflectors. Every node
// has sessions to the two reflectors and to nothing else, each reflector to the five nodes
// and the other reflector,
// every node learns every other node's block with the owner as next hop, and workloads
// reach each other. Then one reflector is killed (graceful restart off on the reflectors,
// so its routes go at once when its sessions drop): the nodes see that session go down
// and keep full reachability through the other reflector; node5's first workload, added
// only now, gets its block to every node through the surviving reflector alone.
// reflectorMesh turns the node mesh off and peers every node with the nodes labelled
// route-reflector, of which it makes rr1 one (cluster ID 1.0.0.1).
const reflectorMesh = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: to-reflectors}
spec: {peerSelector: "route-reflector == 'true'"}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: rr1, labels: {route-reflector: "true"}}
spec: {bgp: {routeReflectorClusterID: 1.0.0.1}}
`

func TestRouteReflectors(t *testing.T) {
	l := newLab(t)
	l.OK("up", "--nodes", "5", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.Apply(labtest.Pool + "---\n" + reflectorMesh + `---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: rr2, labels: {route-reflector: "true"}}
spec: {bgp: {routeReflectorClusterID: 1.0.0.1}}
`)
	rrs := []*hostAgent{
		l.startHostAgent("rr1", "--role", "route-reflector", "--bgp-no-graceful-restart"),
		l.startHostAgent("rr2", "--role", "route-reflector", "--bgp-no-graceful-restart"),
	}
	start := time.Now()
	ips := map[int]netip.Addr{}
	for i := 1; i <= 4; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
		ips[i] = l.WorkloadIP("default", fmt.Sprintf("w%d", i))
	}
	nodeAddr := func(i int) string { return fmt.Sprintf("172.31.1.%d", 9+i) }
	converged := func() string {
		for i := 1; i <= 4; i++ {
			routes := l.GatewayRoutes(fmt.Sprintf("node%d", i))
			for j := 1; j <= 4; j++ {
				if j != i && routes[labtest.BlockOf(ips[j])] != nodeAddr(j) {
					return fmt.Sprintf("node%d: route to %s via %q, want %s", i, labtest.BlockOf(ips[j]), routes[labtest.BlockOf(ips[j])], nodeAddr(j))
				}
			}
		}
		return ""
	}
	// sessions: every node has exactly the reflectors in up as Established route reflector
	// peers (and, while a reflector is down, it as a non-Established one).
	sessions := func(up ...*hostAgent) func() string {
		return func() string {
			for i := 1; i <= 5; i++ {
				node := fmt.Sprintf("node%d", i)
				_, s := l.established(node, l.NodeDataDir(node))
				rows := peerRows(s)
				want := map[string]string{}
				for _, rr := range rrs {
					want[rr.addr] = "route reflector/"
				}
				for _, rr := range up {
					want[rr.addr] = "route reflector/Established"
				}
				for a, w := range want {
					if !strings.HasPrefix(rows[a], w) || (w == "route reflector/" && strings.HasSuffix(rows[a], "Established")) {
						return fmt.Sprintf("%s: peers %v, want %v", node, rows, want)
					}
				}
				if len(rows) != len(want) {
					return fmt.Sprintf("%s: peers %v, want only the reflectors %v", node, rows, want)
				}
			}
			return ""
		}
	}
	labtest.Poll(t, "every node peers with both reflectors and nothing else", 40*time.Second, sessions(rrs...))
	took := labtest.Poll(t, "every node learns every block through the reflectors", 40*time.Second, converged)
	t.Logf("route reflectors: all blocks in every node's kernel %s after the last workload (%s after the first)", took, time.Since(start).Round(time.Millisecond))
	// Each reflector has the five nodes as clients and the other reflector (same cluster
	// ID, selected by the same BGPPeer) as a non-client peer.
	// The reflectors' session to each other may be settling a connection collision (both
	// sides connect at once), so it is polled for, as the clients' sessions are above.
	for k, rr := range rrs {
		want := []string{nodeAddr(1), nodeAddr(2), nodeAddr(3), nodeAddr(4), nodeAddr(5), rrs[1-k].addr}
		slices.Sort(want)
		labtest.Poll(t, rr.name+" established with the five clients and the other reflector", 40*time.Second, func() string {
			_, s := l.established(rr.name, rr.dataDir)
			var peers []string
			for _, p := range s.Peers {
				if p.State == "Established" && p.Type == "route reflector" {
					peers = append(peers, p.Address)
				}
			}
			slices.Sort(peers)
			if !slices.Equal(peers, want) {
				return fmt.Sprintf("established peers %v, want %v; status %+v", peers, want, s)
			}
			return ""
		})
	}
	pingAll := func() {
		for i := 1; i <= 4; i++ {
			for j := 1; j <= 4; j++ {
				if i != j {
					l.Ping(fmt.Sprintf("default/w%d", i), ips[j].String())
				}
			}
		}
	}
	pingAll()
	out := l.OK("exec", "node1", "--", labtest.Bin(t, "tabbyctl"), "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
	t.Logf("tabbyctl node status on node1:\n%s", out)

	// One reflector dies; the other keeps the fabric whole.
	rrs[0].kill(t)
	killed := time.Now()
	labtest.Poll(t, "the nodes see rr1's sessions drop", 30*time.Second, sessions(rrs[1]))
	t.Logf("rr1 killed: its sessions down on every node after %s", time.Since(killed).Round(time.Millisecond))
	labtest.Poll(t, "every block still routed through rr2", 10*time.Second, converged)
	pingAll()
	// A block that appears now (node5's first workload) reaches everyone through rr2 alone.
	l.OK("workload", "add", "node5", "default/w5")
	ip5 := l.WorkloadIP("default", "w5")
	labtest.Poll(t, "node5's block reaches every node through rr2", 30*time.Second, func() string {
		for i := 1; i <= 4; i++ {
			if gw := l.GatewayRoutes(fmt.Sprintf("node%d", i))[labtest.BlockOf(ip5)]; gw != nodeAddr(5) {
				return fmt.Sprintf("node%d: %s via %q", i, labtest.BlockOf(ip5), gw)
			}
		}
		return ""
	})
	for i := 1; i <= 4; i++ {
		l.Ping("default/w5", ips[i].String())
		l.Ping(fmt.Sprintf("default/w%d", i), ip5.String())
	}
}
