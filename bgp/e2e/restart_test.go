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

// step kills one node's agent (kill -9) or starts it again, after waiting.
type step struct {
	after time.Duration // since the previous step: the scenario's delay
	kill  bool          // kill, else start
	node  string
}

type restartCase struct {
	name  string
	steps []step
}

// restartAfter is the case of one agent started again d after it was killed.
func restartAfter(node string, d time.Duration) restartCase {
	return restartCase{fmt.Sprintf("%s-after-%s", node, d), []step{{kill: true, node: node}, {after: d, node: node}}}
}

// TestRestartDelays: a workload on node1 pings one on node2 every 50 ms while agents are
// killed with kill -9 and started again with the same command line, as systemd's
// Restart=always would, after a delay: node2's (the side that waits for the connection,
// node1's address being lower) after 0, 0.5, 1, 1.5, 2, 3 and 5 s, node1's (the side that
// dials) after 0, 1 and 2 s, both ends of the session in turn (node2's, then node1's
// while node2's sessions are still coming up), and node2's while node1's agent is away for
// 35 s, longer than the sync timeout (30 s). For every case:
//
//   - no ping is lost: graceful restart keeps each side's routes to the other (the
//     helper keeps the restarting agent's routes, the restarted agent keeps its previous
//     run's kernel routes until its peers sent End-of-RIB, or a peer that stays away
//     for its restart time);
//   - the sessions re-establish and every agent syncs again (bounded by a deadline, the
//     time logged), the routes point at the right nodes, and pings keep being answered
//     through a grace period after that.
//
// The agents run with tabby-node's default timers, as in the probe (with
// labtest.FastBGP's it passes alike). The lab is built once and restarted case after
// case; the whole test takes about 3 minutes.
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
		cases = append(cases, restartAfter("node2", d))
	}
	for _, d := range []time.Duration{0, time.Second, 2 * time.Second} {
		cases = append(cases, restartAfter("node1", d))
	}
	cases = append(cases,
		restartCase{"node2-then-node1", []step{
			{kill: true, node: "node2"}, {after: time.Second, node: "node2"},
			{after: time.Second, kill: true, node: "node1"}, {after: time.Second, node: "node1"}}},
		// node2 restarts while node1's agent is away for longer than the sync timeout
		// (30 s): node2 keeps its route to node1's block until node1 is back (node1's
		// restart time is 120 s), and node1's kernel forwards meanwhile.
		restartCase{"node2-while-node1-away-35s", []step{
			{kill: true, node: "node1"}, {kill: true, node: "node2"}, {node: "node2"},
			{after: 35 * time.Second, node: "node1"}}},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runRestartCase(t, l, agents, c, settled, pingTarget{"w-default.w1", ip2.String()})
		})
	}
}

// pingTarget is a ping kept running through a restart case: from a lab namespace (its
// suffix) to an address.
type pingTarget struct{ from, to string }

// runRestartCase runs one case's steps while each ping of pings runs every 50 ms, waits
// until settled holds again (and keeps holding for a grace period), and fails the test if
// any ping lost a reply, or none was answered after settling.
func runRestartCase(t *testing.T, l *lab, agents map[string]*agentProc, c restartCase, settled func() string, pings ...pingTarget) {
	const interval = 50 * time.Millisecond
	labtest.Poll(t, "settled before the case", 60*time.Second, settled)
	pingers := make([]*labtest.Pinger, len(pings))
	for i, pt := range pings {
		p := l.With(t).StartPinger(pt.from, pt.to, interval)
		labtest.Poll(t, "ping to "+pt.to+" answered", 10*time.Second, func() string {
			if len(p.Replies()) == 0 {
				return "no reply yet"
			}
			return ""
		})
		pingers[i] = p
	}
	killed := time.Now()
	for _, s := range c.steps {
		// The scenario's delay, not a wait for a condition.
		time.Sleep(s.after)
		if s.kill {
			agents[s.node].kill(t)
		} else {
			agents[s.node].start(t, l.t)
		}
	}
	took := labtest.Poll(t, "sessions re-established and synced, routes in place", 60*time.Second, settled)
	done := time.Now()
	// Grace: the re-converged state holds and pings keep being answered after it.
	labtest.Steady(t, "routes stay after re-sync", 2*time.Second, 100*time.Millisecond, settled)
	for i, p := range pingers {
		replies, out := p.Stop(t)
		after := 0
		for _, r := range replies {
			if r.At.After(done) {
				after++
			}
		}
		lost := labtest.Lost(replies)
		t.Logf("%s: ping to %s: settled %s after the last restart (%s after the first kill); %d replies, %d lost, %d after settling",
			c.name, pings[i].to, took.Round(time.Millisecond), done.Sub(killed).Round(time.Millisecond), len(replies), len(lost), after)
		if len(lost) > 0 || after == 0 {
			lines := strings.Split(out, "\n")
			t.Errorf("%s: ping to %s: %d pings lost (icmp_seq %v), %d answered after settling; ping output (tail):\n%s",
				c.name, pings[i].to, len(lost), lost, after, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	}
}
