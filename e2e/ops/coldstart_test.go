package ops

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/internal/testenv"
)

// maxSeq is the highest sequence number answered so far.
func maxSeq(p *labtest.Pinger) int {
	last := 0
	for _, r := range p.Replies() {
		last = max(last, r.Seq)
	}
	return last
}

// lostBetween counts the requests after from and up to to that got no reply.
func lostBetween(replies []labtest.Reply, from, to int) int {
	n := 0
	for _, seq := range labtest.Lost(replies) {
		if seq > from && seq <= to {
			n++
		}
	}
	return n
}

// TestAgentStartsWithoutEtcd: an agent killed (SIGKILL, a crash) and started again while
// etcd is stopped runs from its snapshot cache. In a 3-node lab with workloads pinging
// across nodes every 50 ms through a network policy, node2's agent is killed once with
// etcd running (the same-run baseline: what a kill and a normal start cost), then etcd is
// stopped and node2's agent is killed and started again 0, 1, 2 and 5 s after each kill.
// Each time, with etcd still stopped, the new agent must re-establish its BGP sessions to
// node1 and node3, say why it is not ready (the datastore, the cache and its age) on
// /readiness and in tabbyctl node status, and leave node2's routes, iptables, nftables
// and ipsets as they were; no more pings may be lost than in the baseline. Then etcd
// starts: node2's agent becomes ready by itself (its deferred writes made), and a
// workload added on node2 afterwards answers from node1 and node3. The figures (pings
// lost per restart, time to BGP Established, time to readiness after etcd returns) are
// logged; OPERATIONS.md reports them.
func TestAgentStartsWithoutEtcd(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "curl", Package: "curl"},
		testenv.Tool{Cmd: "nft", Package: "nftables"}, testenv.Tool{Cmd: "ipset", Package: "ipset"})
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.Apply(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: clients-only, namespace: default}
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress: [{action: Allow, protocol: ICMP, source: {selector: app == 'client'}}]
`)
	l.OK("workload", "add", "node1", "default/a1", "--labels", "app=client")
	l.OK("workload", "add", "node2", "default/b1", "--labels", "app=server")
	l.OK("workload", "add", "node3", "default/c1", "--labels", "app=client")
	b1, c1 := l.WorkloadIP("default", "b1").String(), l.WorkloadIP("default", "c1").String()
	labtest.Poll(t, "a1 and c1 reach b1", 60*time.Second, func() string {
		for _, from := range []string{"default/a1", "default/c1"} {
			if out, _, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W1", b1); code != 0 {
				return from + ": " + out
			}
		}
		return ""
	})
	labtest.Poll(t, "every agent ready", 60*time.Second, func() string { return allReady(t, l) })
	cache := filepath.Join(l.NodeDataDir("node2"), "snapshot-cache.json")
	labtest.Poll(t, "node2's snapshot cache holds b1", 30*time.Second, func() string {
		b, err := os.ReadFile(cache)
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(string(b), `"b1"`) {
			return "no b1 in the cache yet"
		}
		return ""
	})
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot cache %s: %v, mode %v; want 0600", cache, err, fi.Mode().Perm())
	}
	before := dataplane(t, l, "node2")

	const interval = 50 * time.Millisecond
	pingers := map[string]*labtest.Pinger{
		"node1 -> node2 (a1 -> b1)": l.StartPinger("w-default.a1", b1, interval),
		"node2 -> node3 (b1 -> c1)": l.StartPinger("w-default.b1", c1, interval),
	}
	labtest.Poll(t, "both pings answered", 10*time.Second, func() string {
		for what, p := range pingers {
			if len(p.Replies()) == 0 {
				return what + ": no reply yet"
			}
		}
		return ""
	})

	// established waits until node2's agent has its sessions to node1 and node3
	// Established, and returns its status.
	socket := filepath.Join(l.NodeDataDir("node2"), "status.sock")
	established := func(t *testing.T) nodestatus.Status {
		var st nodestatus.Status
		labtest.Poll(t, "node2's BGP sessions to node1 and node3 Established", 30*time.Second, func() string {
			out, stderr, code := l.Tabbyctl("node2", "node", "status", "--socket", socket, "-o", "json")
			if code != 0 {
				return stderr
			}
			st = nodestatus.Status{}
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				return err.Error()
			}
			n := 0
			for _, p := range st.Peers {
				if p.State == "Established" {
					n++
				}
			}
			if n != 2 {
				return fmt.Sprintf("%d Established: %+v", n, st.Peers)
			}
			return ""
		})
		return st
	}
	// restart kills node2's agent, starts it again after d and waits until its sessions
	// are Established; it returns the pings lost meanwhile (each pinger) and how long the
	// sessions took after the start.
	restart := func(t *testing.T, d time.Duration) (map[string]int, time.Duration) {
		from := map[string]int{}
		for what, p := range pingers {
			from[what] = maxSeq(p)
		}
		l.With(t).OK("agent", "kill", "node2")
		time.Sleep(d) // the point of the sweep: how long the agent stays down, not a wait
		l.With(t).OK("agent", "start", "node2")
		started := time.Now()
		established(t)
		took := time.Since(started)
		time.Sleep(time.Second) // a second of pings after the sessions are back is counted too
		lost := map[string]int{}
		for what, p := range pingers {
			lost[what] = lostBetween(p.Replies(), from[what], maxSeq(p))
		}
		return lost, took
	}

	baseline, took := restart(t, 0)
	t.Logf("baseline, etcd running: node2's agent killed and started again: sessions Established %s after the start; pings lost %v",
		took.Round(time.Millisecond), baseline)
	labtest.Poll(t, "every agent ready after the baseline restart", 60*time.Second, func() string { return allReady(t, l) })

	l.OK("etcd", "stop")
	labtest.Poll(t, "node2 says etcd is unreachable", 20*time.Second, func() string {
		if code, body := readiness(t, l, "node2"); code != 503 || !strings.Contains(body, "datastore: unreachable") {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	for _, d := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		t.Run(fmt.Sprintf("etcd-stopped-restart-%s-after-kill", d), func(t *testing.T) {
			lost, took := restart(t, d)
			code, body := readiness(t, l, "node2")
			if code != 503 || !strings.Contains(body, "datastore: running from the snapshot cache "+cache+", written ") ||
				!strings.Contains(body, "datastore: unreachable") || !strings.Contains(body, "datastore: writes wait for etcd") {
				t.Errorf("node2's readiness from the cache: %d %s", code, body)
			}
			st := established(t)
			if st.Ready || !slices.ContainsFunc(st.NotReady, func(r string) bool { return strings.HasPrefix(r, "datastore: running from the snapshot cache "+cache) }) {
				t.Errorf("tabbyctl node status on node2 from the cache: ready %v, %q; want not ready, naming the cache", st.Ready, st.NotReady)
			}
			if after := dataplane(t, l, "node2"); after != before {
				t.Errorf("node2's dataplane changed across the restart from the cache:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			t.Logf("etcd stopped, agent down %s: sessions Established %s after the start; pings lost %v (baseline %v)",
				d, took.Round(time.Millisecond), lost, baseline)
			for what, n := range lost {
				if n > baseline[what] {
					t.Errorf("ping %s: %d lost across the restart from the cache, %d in the baseline restart", what, n, baseline[what])
				}
			}
		})
	}

	l.OK("etcd", "start")
	ready := labtest.Poll(t, "node2 ready by itself after etcd returned", 30*time.Second, func() string {
		if code, body := readiness(t, l, "node2"); code != 200 {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	log, err := os.ReadFile(filepath.Join(l.StateDir(), "node2.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"starting from the snapshot cache", "the live datastore state replaces the cached snapshot", "datastore writes resume"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("node2's log has no %q", want)
		}
	}
	l.OK("workload", "add", "node2", "default/b2", "--labels", "app=server")
	b2 := l.WorkloadIP("default", "b2").String()
	answers := labtest.Poll(t, "b2 answers from a1 and c1", 30*time.Second, func() string {
		for _, from := range []string{"default/a1", "default/c1"} {
			if out, _, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W1", b2); code != 0 {
				return from + ": " + out
			}
		}
		return ""
	})
	t.Logf("etcd back: node2 ready %s after etcd start returned; b2, added then on node2, answers from node1 and node3 %s after its ADD",
		ready.Round(time.Millisecond), answers.Round(time.Millisecond))

	for what, p := range pingers {
		replies, _ := p.Stop(t)
		t.Logf("ping %s every %s: %d replies, %d lost over the whole test", what, interval, len(replies), len(labtest.Lost(replies)))
	}
}
