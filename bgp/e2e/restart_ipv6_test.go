package e2e

import (
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestRestartDelaysDualStack: TestRestartDelays' cases on the IPv6 sessions too. In a
// two-node lab up with --ipv6 (default timers), a workload on node1 pings one on node2
// every 50 ms over IPv4 and over IPv6 while node2's agent (the side that waits on both
// sessions) is killed and started again after 0, 1, 2 and 5 s, and node1's (the side
// that dials) after 1 s: no ping of either family is lost, and both sessions come back
// with each family's routes via the other node's address of that family.
func TestRestartDelaysDualStack(t *testing.T) {
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--ipv6", "--agent-binary", labtest.Bin(t, "tabby-node"))
	ips := l.dualStackWorkloads()
	st := l.State()
	agents := map[string]*agentProc{}
	for _, n := range st.Nodes {
		agents[n.Name] = &agentProc{node: n.Name, netns: n.Netns, dataDir: n.DataDir,
			log: filepath.Join(l.StateDir(), n.Name+".log"), argv: cmdline(t, n.Agent.PID), pid: n.Agent.PID}
	}
	settled := func() string {
		for _, c := range [][2]string{{"node1", "node2"}, {"node2", "node1"}} {
			up, s := l.established(c[0], agents[c[0]].dataDir)
			if len(up) != 2 || s == nil || !s.Synced {
				return fmt.Sprintf("%s: established %v, status %+v", c[0], up, s)
			}
			routes := l.GatewayRoutes(c[0])
			maps.Copy(routes, l.GatewayRoutes6(c[0]))
			peer := st.Node(c[1])
			b4, b6 := labtest.BlockOf(ips[c[1]][0]), labtest.BlockOf6(ips[c[1]][1])
			if routes[b4] != peer.Address.Addr().String() || routes[b6] != peer.Address6.Addr().String() {
				return fmt.Sprintf("%s: routes %v, want %s via %s and %s via %s", c[0], routes, b4, peer.Address.Addr(), b6, peer.Address6.Addr())
			}
		}
		return ""
	}
	labtest.Poll(t, "both sessions up, both families routed", 60*time.Second, settled)
	var cases []restartCase
	for _, d := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		cases = append(cases, restartAfter("node2", d))
	}
	cases = append(cases, restartAfter("node1", time.Second))
	pings := []pingTarget{{"w-default.w1", ips["node2"][0].String()}, {"w-default.w1", ips["node2"][1].String()}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runRestartCase(t, l, agents, c, settled, pings...)
		})
	}
}

// dualStackWorkloads adds workload default/w1 on node1 and default/w2 on node2 to a lab
// up with --ipv6 and returns each node's workload's IPv4 and IPv6 addresses.
func (l *lab) dualStackWorkloads() map[string][]netip.Addr {
	l.t.Helper()
	ips := map[string][]netip.Addr{}
	for _, node := range []string{"node1", "node2"} {
		w := "w" + strings.TrimPrefix(node, "node")
		l.OK("workload", "add", node, "default/"+w)
		v4, v6 := l.WorkloadIPs("default", w)
		ips[node] = []netip.Addr{v4, v6}
	}
	return ips
}
