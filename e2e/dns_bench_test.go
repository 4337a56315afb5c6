package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// benchServices is how many Services BenchmarkAgentDNS loads.
const benchServices = 10000

// BenchmarkAgentDNS measures the agent's node-local DNS in a one-node lab against dnsmasq
// serving the same names from a hosts file, both on the node itself (the agent on
// 169.254.20.10, dnsmasq on 127.0.0.82) and queried by dnsperf from the node's namespace
// (8 client sockets, 2 threads, 100 queries in flight, 10 s), interleaved twice per mix:
// "cluster" (every Service's A record, shuffled) and "nxdomain" (half of them, half names
// in the zone that do not exist). The agent runs without BGP and without the Service
// proxy, whose 10k Services would otherwise share its memory and CPU (a full nftables pass
// at 10k takes seconds). Both servers run in sessions of their own (the
// scheduler's autogroups), so neither shares dnsperf's CPU share. It also prints the
// agent's RSS before and after the 10,000 Services (when the last one resolves, and
// settled), and its Go heap. Printed, never asserted.
func BenchmarkAgentDNS(b *testing.B) {
	labtest.Need(b)
	testenv.RequireTools(b, testenv.Tool{Cmd: "dnsperf", Package: "dnsperf"}, testenv.Tool{Cmd: "dnsmasq", Package: "dnsmasq-base"},
		testenv.Tool{Cmd: "dig", Package: "dnsutils"})
	l := labtest.New(b)
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", labtest.AgentScript(b, "--bgp=false", "--proxy-mode", "none", "--log-level", "info"))
	agent := l.State().Nodes[0].Agent.PID
	labtest.Poll(b, "node1 ready", 60*time.Second, func() string {
		if out, _, code := l.Tabbyctl("node1", "node", "readiness", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock")); code != 0 {
			return out
		}
		return ""
	})
	rssBefore := rssMiB(b, agent)

	dir := b.TempDir()
	var hosts, names strings.Builder
	for i := range benchServices {
		ip := fmt.Sprintf("10.100.%d.%d", i>>8, i&255)
		fmt.Fprintf(&hosts, "%s s%d.bench.svc.cluster.local\n", ip, i)
		fmt.Fprintf(&names, "s%d.bench.svc.cluster.local\n", i)
	}
	for start := 0; start < benchServices; start += 1000 {
		var m strings.Builder
		for i := start; i < min(start+1000, benchServices); i++ {
			fmt.Fprintf(&m, "---\napiVersion: v1\nkind: Service\nmetadata: {name: s%d, namespace: bench}\n"+
				"spec: {clusterIP: 10.100.%d.%d, ports: [{name: http, port: 80}]}\n", i, i>>8, i&255)
		}
		l.Apply(m.String())
	}
	last := fmt.Sprintf("s%d.bench.svc.cluster.local", benchServices-1)
	took := labtest.Poll(b, "the last Service resolves", 120*time.Second, func() string {
		out, _, _ := l.Run("", "exec", "node1", "--", "dig", "@169.254.20.10", "+short", "+time=2", last)
		if strings.TrimSpace(out) == "" {
			return "no answer for " + last
		}
		return ""
	})
	rssAfter := rssMiB(b, agent)
	// The agent returns a burst's idle heap to the OS once its snapshot has been quiet
	// for 2 s (memoryTrim): sample its RSS for 4 s (a measurement, not a wait) and keep
	// the least as the settled figure.
	settled := rssAfter
	for range 16 {
		time.Sleep(250 * time.Millisecond)
		settled = min(settled, rssMiB(b, agent))
	}
	heap := labtest.Metrics(b, l, "node1")
	mib := func(name string) float64 { return heap[name+"{}"] / (1 << 20) }
	b.Logf("agent Go heap with %d Services: spans in use %.1f MiB (objects allocated %.1f MiB, next GC at %.1f MiB), idle %.1f MiB of which %.1f MiB released to the OS",
		benchServices, mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_alloc_bytes"), mib("go_memstats_next_gc_bytes"),
		mib("go_memstats_heap_idle_bytes"), mib("go_memstats_heap_released_bytes"))

	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	hostsFile := write("hosts", hosts.String())
	all := strings.Fields(names.String())
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	var cluster, nx strings.Builder
	for i, n := range all {
		fmt.Fprintf(&cluster, "%s A\n", n)
		if i%2 == 0 {
			fmt.Fprintf(&nx, "%s A\n", n)
		} else {
			fmt.Fprintf(&nx, "x%d.bench.svc.cluster.local A\n", i)
		}
	}
	mixes := map[string]string{"cluster": write("cluster", cluster.String()), "nxdomain": write("nxdomain", nx.String())}

	// setsid: dnsmasq in a session (and so a scheduler autogroup) of its own, as the agent
	// is; in the benchmark's own group it would share dnsperf's CPU share unevenly.
	dnsmasq := l.Command("exec", "node1", "--", "setsid", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--addn-hosts="+hostsFile,
		"--listen-address=127.0.0.82", "--bind-interfaces", "--local-ttl=5", "--local=/cluster.local/",
		"--cache-size="+strconv.Itoa(2*benchServices), "--user=root", "--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-facility=/dev/null")
	if err := dnsmasq.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dnsmasq.Process.Kill(); dnsmasq.Wait() })
	labtest.Poll(b, "dnsmasq answers", 30*time.Second, func() string {
		out, _, _ := l.Run("", "exec", "node1", "--", "dig", "@127.0.0.82", "+short", "+time=1", last)
		if strings.TrimSpace(out) == "" {
			return "no answer"
		}
		return ""
	})
	b.ResetTimer()
	for _, mix := range []string{"cluster", "nxdomain"} {
		for run := 1; run <= 2; run++ {
			tabby := dnsperf(b, l, "169.254.20.10", mixes[mix])
			other := dnsperf(b, l, "127.0.0.82", mixes[mix])
			b.Logf("%s, run %d: tabby %.0f QPS, dnsmasq %.0f QPS: %.2fx", mix, run, tabby, other, tabby/other)
			b.ReportMetric(tabby/other, mix+"-ratio-run"+strconv.Itoa(run))
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rssAfter-rssBefore, "added-rss-MiB")
	b.ReportMetric(settled-rssBefore, "added-rss-settled-MiB")
	b.Logf("agent RSS %.1f MiB before, %.1f MiB with %d Services (+%.1f) when the last resolved, %.1f MiB settled (+%.1f), %.1f MiB after the runs; the last Service resolved %v after its apply",
		rssBefore, rssAfter, benchServices, rssAfter-rssBefore, settled, settled-rssBefore, rssMiB(b, agent), took.Round(time.Millisecond))
}

var qpsRE = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)

// dnsperf runs dnsperf from node1 against server:53 with the queries in file; it returns QPS.
func dnsperf(b *testing.B, l *labtest.Lab, server, file string) float64 {
	b.Helper()
	out, stderr, code := l.Run("", "exec", "node1", "--", "dnsperf", "-s", server, "-d", file, "-l", "10", "-c", "8", "-T", "2", "-q", "100")
	m := qpsRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		b.Fatalf("dnsperf against %s: exit %d\n%s%s", server, code, out, stderr)
	}
	qps, _ := strconv.ParseFloat(m[1], 64)
	return qps
}

// rssMiB is a process's resident set, in MiB.
func rssMiB(b *testing.B, pid int) float64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
