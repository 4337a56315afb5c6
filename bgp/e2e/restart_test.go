package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// agentProc is one node's agent, restarted by the test with its original command line.
type agentProc struct {
	node, netns, dataDir, log string
	argv                      []string
	pid                       int
}

// kill kills the agent with SIGKILL, as a crash would, and waits until it is gone.
func (a *agentProc) kill(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(a.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s's agent (pid %d): %v", a.node, a.pid, err)
	}
	waitExit(t, a.pid, 10*time.Second)
}

// start starts the agent again with the same command line; owner (the test that owns the
// lab) kills it at its end.
func (a *agentProc) start(t, owner testing.TB) {
	t.Helper()
	p := startIn(t, a.netns, a.argv, a.log)
	a.pid = p.Pid
	owner.Cleanup(func() { _ = p.Signal(syscall.SIGKILL) })
}

// restartStep kills one node's agent and starts it again after delay; the next step
// begins after gap (from this step's restart).
type restartStep struct {
	node       string
	delay, gap time.Duration
}

type restartCase struct {
	name  string
	steps []restartStep
}

// TestRestartDelays: a workload on node1 pings one on node2 every 50 ms while agents are
// killed with kill -9 and started again with the same command line, as systemd's
// Restart=always would, after a delay: node2's (the side that waits for the connection,
// node1's address being lower) after 0, 0.5, 1, 1.5, 2, 3 and 5 s, node1's (the side that
// dials) after 0, 1 and 2 s, and both ends of the session in turn (node2's, then node1's
// while node2's sessions are still coming up). For every case:
//
//   - no ping is lost: graceful restart keeps each side's routes to the other (the
//     helper keeps the restarting agent's routes, the restarted agent keeps its previous
//     run's kernel routes until its peers sent End-of-RIB);
//   - the sessions re-establish and every agent syncs again (bounded by a deadline, the
//     time logged), the routes point at the right nodes, and pings keep being answered
//     through a grace period after that.
//
// The agents run with tabby-node's default timers, as in the probe (with
// labtest.FastBGP's it passes alike). The lab is built once and restarted case after
// case; the whole test takes about 2.5 minutes.
func TestRestartDelays(t *testing.T) {
	l := newLab(t)
	// tabby-node as an operator runs it: default timers (hold 90 s, connect retry 5 s).
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", labtest.Bin(t, "tabby-node"))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	ip1, ip2 := l.WorkloadIP("default", "w1"), l.WorkloadIP("default", "w2")
	st := l.State()
	agents := map[string]*agentProc{}
	addr := map[string]string{}
	for _, n := range st.Nodes {
		agents[n.Name] = &agentProc{node: n.Name, netns: n.Netns, dataDir: n.DataDir,
			log: filepath.Join(l.StateDir(), n.Name+".log"), argv: cmdline(t, n.Agent.PID), pid: n.Agent.PID}
		addr[n.Name] = n.Address.Addr().String()
	}
	if addr["node1"] >= addr["node2"] {
		t.Fatalf("node1 %s, node2 %s: the test wants node1's address lower (node1 dials)", addr["node1"], addr["node2"])
	}

	// settled: every agent has both sessions Established and has synced, and node1 and
	// node2 route each other's workload block via each other.
	settled := func() string {
		for _, n := range []string{"node1", "node2", "node3"} {
			up, s := l.established(n, agents[n].dataDir)
			if len(up) != 2 || s == nil || !s.Synced {
				return fmt.Sprintf("%s: established %v, status %+v", n, up, s)
			}
		}
		for _, r := range []struct{ node, dst, via string }{
			{"node1", labtest.BlockOf(ip2), addr["node2"]},
			{"node2", labtest.BlockOf(ip1), addr["node1"]},
		} {
			if gw := l.GatewayRoutes(r.node)[r.dst]; gw != r.via {
				return fmt.Sprintf("%s: route to %s via %q, want via %s", r.node, r.dst, gw, r.via)
			}
		}
		return ""
	}
	labtest.Poll(t, "mesh converges", 60*time.Second, settled)
	l.Ping("default/w1", ip2.String())

	var cases []restartCase
	for _, d := range []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second, 5 * time.Second} {
		cases = append(cases, restartCase{fmt.Sprintf("node2-after-%s", d), []restartStep{{node: "node2", delay: d}}})
	}
	for _, d := range []time.Duration{0, time.Second, 2 * time.Second} {
		cases = append(cases, restartCase{fmt.Sprintf("node1-after-%s", d), []restartStep{{node: "node1", delay: d}}})
	}
	cases = append(cases, restartCase{"node2-then-node1", []restartStep{
		{node: "node2", delay: time.Second, gap: time.Second}, {node: "node1", delay: time.Second}}})

	const interval = 50 * time.Millisecond
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			labtest.Poll(t, "settled before the case", 60*time.Second, settled)
			p := l.With(t).StartPinger("w-default.w1", ip2.String(), interval)
			labtest.Poll(t, "ping from w1 answered", 10*time.Second, func() string {
				if len(p.Replies()) == 0 {
					return "no reply yet"
				}
				return ""
			})
			var killed time.Time
			for i, s := range c.steps {
				a := agents[s.node]
				a.kill(t)
				if i == 0 {
					killed = time.Now()
				}
				// The scenario's delay between the crash and the restart.
				time.Sleep(s.delay)
				a.start(t, l.t)
				time.Sleep(s.gap)
			}
			took := labtest.Poll(t, "sessions re-established and synced, routes in place", 60*time.Second, settled)
			done := time.Now()
			// Grace: the re-converged state holds and pings keep being answered after it.
			labtest.Steady(t, "routes stay after re-sync", 2*time.Second, 100*time.Millisecond, settled)
			replies, out := p.Stop(t)
			after := 0
			for _, r := range replies {
				if r.At.After(done) {
					after++
				}
			}
			lost := labtest.Lost(replies)
			t.Logf("%s: settled %s after the last restart (%s after the first kill); %d replies, %d lost, %d after settling",
				c.name, took.Round(time.Millisecond), done.Sub(killed).Round(time.Millisecond), len(replies), len(lost), after)
			if len(lost) > 0 || after == 0 {
				lines := strings.Split(out, "\n")
				t.Errorf("%s: %d pings lost (icmp_seq %v), %d answered after settling; ping output (tail):\n%s",
					c.name, len(lost), lost, after, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		})
	}
}
