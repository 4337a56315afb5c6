package ops

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// outageNodes are the nodes of the outage lab.
var outageNodes = []string{"node1", "node2", "node3"}

// readiness is GET /readiness on node's agent health port: the code and the body.
func readiness(t testing.TB, l *labtest.Lab, node string) (int, string) {
	t.Helper()
	return labtest.Curl(t, l, node, "http://127.0.0.1:9099/readiness")
}

// allReady says which nodes' agents are not ready, and why ("" when all are).
func allReady(t testing.TB, l *labtest.Lab) string {
	t.Helper()
	for _, n := range outageNodes {
		if code, body := readiness(t, l, n); code != 200 {
			return fmt.Sprintf("%s: %d %s", n, code, body)
		}
	}
	return ""
}

// dataplane is what a node's agent programmed, as text to compare: every route of the
// main table, iptables rules (without counters), the nftables ruleset (stateless) and the
// ipsets with their members.
func dataplane(t testing.TB, l *labtest.Lab, node string) string {
	t.Helper()
	return l.OK("exec", node, "--", "sh", "-c", "ip route show; iptables-save | grep -v '^#'; ip6tables-save | grep -v '^#'; nft -s list ruleset; ipset save")
}

// cniFailure matches the plugin's log line of a failed ADD: its error and how long it took.
var cniFailure = regexp.MustCompile(`msg=failed cmd=ADD .*containerID=(\S+) .* err="([^"]*)" took=(\S+)`)

// failedAdd is the last failed ADD in the lab's CNI log: the error and how long it took.
func failedAdd(t testing.TB, l *labtest.Lab) (string, time.Duration) {
	t.Helper()
	b, err := os.ReadFile(l.StateDir() + "/cni.log")
	if err != nil {
		t.Fatal(err)
	}
	m := cniFailure.FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		t.Fatalf("no failed ADD in the CNI log")
	}
	last := m[len(m)-1]
	took, err := time.ParseDuration(last[3])
	if err != nil {
		t.Fatalf("CNI log: took=%q: %v", last[3], err)
	}
	return last[2], took
}

// TestEtcdOutage stops the lab's etcd (tabby-lab etcd stop) while workloads talk, and
// starts it again:
//
//   - a sweep of short outages (2 s), etcd stopped 0, 1, 2 and 5 s after a workload was
//     added, and once while a workload is being added (its ADD may fail: it is retried
//     as a runtime does): when etcd is back every agent is ready again by itself, and
//     the workload added before the outage answers from the other nodes;
//   - one 60 s outage: the agents say why they are not ready ("datastore: unreachable"),
//     a CNI ADD fails within its timeout naming etcd, and all along new pings on the same
//     node and across nodes, new connections to a Service's ClusterIP and cluster DNS
//     answer; what the agents programmed (routes, iptables, nftables, ipsets) is the same
//     at the end as before; once etcd is back, the agents are ready without a restart and
//     a workload added then answers from every node.
//
// Two pings every 50 ms (same node, across nodes) run through all of it and lose
// nothing; tabbyctl ipam check is clean at the end. The figures (ping loss, time to
// readiness after etcd returns, CNI error latency) are logged; the README reports them.
func TestEtcdOutage(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "dig", Package: "dnsutils"}, testenv.Tool{Cmd: "curl", Package: "curl"},
		testenv.Tool{Cmd: "nft", Package: "nftables"}, testenv.Tool{Cmd: "ipset", Package: "ipset"})
	probe := labtest.Build(t, "../testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/a1")
	l.OK("workload", "add", "node1", "default/a2")
	l.OK("workload", "add", "node2", "default/b1")
	l.OK("workload", "add", "node3", "shop/web1", "--labels", "app=web")
	l.StartExec(t, "shop/web1", probe, "serve", "web1", "8080")
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.30.1
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
`)
	a2, b1 := l.WorkloadIP("default", "a2").String(), l.WorkloadIP("default", "b1").String()

	// paths checks every path from a1 with new traffic: a new ping on the same node and
	// across nodes, new connections to the Service, and the Service's name.
	paths := func(t *testing.T) string {
		l := l.With(t)
		for _, dst := range []string{a2, b1} {
			if out, _, code := l.Run("", "exec", "default/a1", "--", "ping", "-c1", "-W1", dst); code != 0 {
				return "ping " + dst + ": " + out
			}
		}
		if out, _, code := l.Run("", "exec", "default/a1", "--", probe, "tcp", "5", "1s", "10.96.30.1:80"); code != 0 || !strings.Contains(out, "web1 5") {
			return fmt.Sprintf("5 connections to the Service: exit %d: %s", code, out)
		}
		if got := labtest.Dig(t, l, "default/a1", "+short", "web.shop.svc.cluster.local"); got != "10.96.30.1" {
			return "dig web.shop.svc.cluster.local: " + got
		}
		return ""
	}
	labtest.Poll(t, "every path from a1 answers", 60*time.Second, func() string { return paths(t) })
	labtest.Poll(t, "every agent ready", 60*time.Second, func() string { return allReady(t, l) })

	const interval = 50 * time.Millisecond
	pingers := map[string]*labtest.Pinger{
		"same node (a1 -> a2)":    l.StartPinger("w-default.a1", a2, interval),
		"across nodes (a1 -> b1)": l.StartPinger("w-default.a1", b1, interval),
	}
	labtest.Poll(t, "both pings answered", 10*time.Second, func() string {
		for what, p := range pingers {
			if len(p.Replies()) == 0 {
				return what + ": no reply yet"
			}
		}
		return ""
	})

	// back starts etcd again and returns how long the agents took to be ready after it.
	back := func(t *testing.T) time.Duration {
		t.Helper()
		l := l.With(t)
		l.OK("etcd", "start")
		return labtest.Poll(t, "every agent ready again after etcd returned", 15*time.Second, func() string { return allReady(t, l) })
	}
	// answers waits until a workload answers pings from a1 and b1, and returns how long.
	answers := func(t *testing.T, name string) time.Duration {
		t.Helper()
		l := l.With(t)
		ip := l.WorkloadIP("default", name).String()
		return labtest.Poll(t, name+" answers from node1 and node2", 15*time.Second, func() string {
			for _, from := range []string{"default/a1", "default/b1"} {
				if out, _, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W1", ip); code != 0 {
					return from + ": " + out
				}
			}
			return ""
		})
	}

	for i, d := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		t.Run(fmt.Sprintf("stopped-%s-after-add", d), func(t *testing.T) {
			l := l.With(t)
			name := fmt.Sprintf("s%d", i)
			l.OK("workload", "add", outageNodes[i%3], "default/"+name)
			time.Sleep(d) // the point of the outage swept, not a wait for a condition
			l.OK("etcd", "stop")
			time.Sleep(2 * time.Second) // the outage itself
			ready := back(t)
			t.Logf("etcd stopped %s after adding %s: agents ready %s after etcd returned, %s answering %s later",
				d, name, ready.Round(time.Millisecond), name, answers(t, name).Round(time.Millisecond))
		})
	}
	t.Run("stopped-during-add", func(t *testing.T) {
		l := l.With(t)
		var wg sync.WaitGroup
		var out []byte
		var err error
		wg.Go(func() { out, err = l.Command("workload", "add", "node2", "default/race").CombinedOutput() })
		l.OK("etcd", "stop")
		wg.Wait()
		time.Sleep(time.Second) // the outage itself
		back(t)
		if err != nil {
			t.Logf("the ADD racing etcd's stop failed (%v; a runtime retries it): %s", err, strings.TrimSpace(string(out)))
			l.OK("workload", "add", "node2", "default/race")
		}
		t.Logf("the workload added while etcd stopped answers %s after the agents were ready again", answers(t, "race").Round(time.Millisecond))
	})

	t.Run("60s", func(t *testing.T) {
		l := l.With(t)
		before := map[string]string{}
		for _, n := range outageNodes {
			before[n] = dataplane(t, l, n)
		}
		l.OK("etcd", "stop")
		stopped := time.Now()
		for _, n := range outageNodes {
			labtest.Poll(t, n+" says etcd is unreachable", 20*time.Second, func() string {
				if code, body := readiness(t, l, n); code != 503 || !strings.Contains(body, "datastore: unreachable") {
					return fmt.Sprintf("%d %s", code, body)
				}
				return ""
			})
		}
		stderr := l.Fails("workload", "add", "node3", "default/refused")
		msg, took := failedAdd(t, l)
		if !strings.Contains(msg, "etcd at ") || !strings.Contains(msg, "unreachable") {
			t.Errorf("CNI ADD with etcd stopped failed with %q, want it to name etcd as unreachable (tabby-lab: %s)", msg, stderr)
		}
		t.Logf("CNI ADD with etcd stopped failed after %s: %s", took.Round(time.Millisecond), msg)
		// New traffic on every path, all through the outage.
		for time.Since(stopped) < 60*time.Second {
			if wrong := paths(t); wrong != "" {
				t.Fatalf("%s into the outage: %s", time.Since(stopped).Round(time.Second), wrong)
			}
			time.Sleep(2 * time.Second) // spacing the checks over the outage, not a wait
		}
		for _, n := range outageNodes {
			if after := dataplane(t, l, n); after != before[n] {
				t.Errorf("%s's dataplane changed during the outage:\nbefore:\n%s\nafter:\n%s", n, before[n], after)
			}
		}
		ready := back(t)
		l.OK("workload", "add", "node3", "default/late")
		t.Logf("60 s outage: agents ready %s after etcd returned; a workload added then answers from node1 and node2 %s after its ADD",
			ready.Round(time.Millisecond), answers(t, "late").Round(time.Millisecond))
	})

	for what, p := range pingers {
		replies, out := p.Stop(t)
		lost := labtest.Lost(replies)
		t.Logf("ping %s every %s: %d replies, %d lost", what, interval, len(replies), len(lost))
		if len(lost) > 0 {
			lines := strings.Split(out, "\n")
			t.Errorf("ping %s: %d lost (icmp_seq %v); output (tail):\n%s", what, len(lost), lost, strings.Join(lines[max(0, len(lines)-20):], "\n"))
		}
	}
	if out := l.OK("ctl", "ipam", "check"); !strings.Contains(out, "No problems found.") {
		t.Errorf("tabbyctl ipam check:\n%s", out)
	}
}
