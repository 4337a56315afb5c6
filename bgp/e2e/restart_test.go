package e2e

import (
	"fmt"
	"os"
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

// kill sends the agent sig (SIGKILL, as a crash; SIGTERM, as systemctl stop) and waits
// until it is gone.
func (a *agentProc) kill(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(a.pid, sig); err != nil {
		t.Fatalf("kill -%d %s's agent (pid %d): %v", sig, a.node, a.pid, err)
	}
	waitExit(t, a.pid, 10*time.Second)
}

// upgrade installs a new copy of the agent's program over the one it runs, as a package
// upgrade does: written beside it and renamed over it, so the running agent keeps the old
// file and the next start runs the new one.
func (a *agentProc) upgrade(t testing.TB) {
	t.Helper()
	path := a.argv[0]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// runsInstalled says whether the agent runs the program now installed at its argv[0]
// (after an upgrade: whether it was restarted onto the new one).
func (a *agentProc) runsInstalled(t testing.TB) bool {
	t.Helper()
	running, err := os.Stat(fmt.Sprintf("/proc/%d/exe", a.pid))
	if err != nil {
		t.Fatal(err)
	}
	installed, err := os.Stat(a.argv[0])
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(running, installed)
}

// start starts the agent again with the same command line; owner (the test that owns the
// lab) kills it at its end.
func (a *agentProc) start(t, owner testing.TB) {
	t.Helper()
	p := startIn(t, a.netns, a.argv, a.log)
	a.pid = p.Pid
	owner.Cleanup(func() { _ = p.Signal(syscall.SIGKILL) })
}

// step stops one node's agent with a signal, starts it again, or installs a new agent
// program (upgrade), after waiting.
type step struct {
	after   time.Duration  // since the previous step: the scenario's delay
	kill    syscall.Signal // stop the agent with it (SIGKILL: a crash); 0: start it
	upgrade bool           // install a new agent program instead
	node    string
}

type restartCase struct {
	name  string
	steps []step
}

// restartAfter is the case of one agent started again d after it was killed.
func restartAfter(node string, d time.Duration) restartCase {
	return restartCase{fmt.Sprintf("%s-after-%s", node, d), []step{{kill: syscall.SIGKILL, node: node}, {after: d, node: node}}}
}

// TestRestartDelays: a workload on node1 pings one on node2 every 50 ms while agents are
// killed with kill -9 and started again with the same command line, as systemd's
// Restart=always would, after a delay: node2's (the side that waits for the connection,
// node1's address being lower) after 0, 0.5, 1, 1.5, 2, 3 and 5 s, node1's (the side that
// dials) after 0, 1 and 2 s, both ends of the session in turn (node2's, then node1's
// while node2's sessions are still coming up), and node2's while node1's agent is away for
// 35 s, longer than the sync timeout (30 s); and upgrades as an operator does them: a new
// tabby-node installed over the old one, then SIGTERM and the same command line started
// again (systemctl restart), on node2, and on every node in turn (then each restarted
// agent must run the new file). For every case:
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
// case; the whole test takes 3-6 minutes (6 at a load average of 30 on 2 cores).
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
			{kill: syscall.SIGKILL, node: "node2"}, {after: time.Second, node: "node2"},
			{after: time.Second, kill: syscall.SIGKILL, node: "node1"}, {after: time.Second, node: "node1"}}},
		// node2 restarts while node1's agent is away for longer than the sync timeout
		// (30 s): node2 keeps its route to node1's block until node1 is back (node1's
		// restart time is 120 s), and node1's kernel forwards meanwhile.
		restartCase{"node2-while-node1-away-35s", []step{
			{kill: syscall.SIGKILL, node: "node1"}, {kill: syscall.SIGKILL, node: "node2"}, {node: "node2"},
			{after: 35 * time.Second, node: "node1"}}},
		// Upgrades, as an operator does them: a new tabby-node installed over the old,
		// then systemctl restart (SIGTERM, and the same command line started again), on
		// one node, and on every node in turn.
		restartCase{"node2-upgrade", []step{
			{upgrade: true, node: "node2"}, {kill: syscall.SIGTERM, node: "node2"}, {node: "node2"}}},
		restartCase{"rolling-upgrade", []step{
			{upgrade: true, node: "node1"},
			{kill: syscall.SIGTERM, node: "node1"}, {node: "node1"},
			{after: 3 * time.Second, kill: syscall.SIGTERM, node: "node2"}, {node: "node2"},
			{after: 3 * time.Second, kill: syscall.SIGTERM, node: "node3"}, {node: "node3"}}},
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
	started := map[string]bool{}
	for _, s := range c.steps {
		// The scenario's delay, not a wait for a condition.
		time.Sleep(s.after)
		switch a := agents[s.node]; {
		case s.upgrade:
			a.upgrade(t)
		case s.kill != 0:
			a.kill(t, s.kill)
		default:
			a.start(t, l.t)
			started[s.node] = true
		}
	}
	took := labtest.Poll(t, "sessions re-established and synced, routes in place", 60*time.Second, settled)
	for n := range started {
		if !agents[n].runsInstalled(t) {
			t.Errorf("%s's agent (pid %d) does not run the program installed at %s", n, agents[n].pid, agents[n].argv[0])
		}
	}
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
