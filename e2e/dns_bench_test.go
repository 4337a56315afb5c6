package e2e

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// benchServices is how many Services BenchmarkAgentDNS loads; half as many external names
// are served by its upstream.
const benchServices = 10000

// benchLatencyQPS is the fixed rate at which BenchmarkAgentDNS reads each server's latency
// percentiles: well under every server's maximum, so queues do not dominate.
const benchLatencyQPS = 20000

// BenchmarkAgentDNS measures the agent's node-local DNS in a one-node lab against dnsmasq
// (a hosts file with the same names, forwarding the rest) and, when a coredns binary is on
// PATH or in $TABBY_COREDNS, CoreDNS (the hosts plugin for the zone, forward and cache for
// the rest). All three run on the node itself (the agent on 169.254.20.10, dnsmasq on
// 127.0.0.82, CoreDNS on 127.0.0.84), each in a session of its own (the scheduler's
// autogroups, as services run), and are queried by dnsperf from the node's namespace (8
// client sockets, 2 threads, 100 queries in flight, 10 s), interleaved twice per mix:
// "cluster" (every Service's A record, shuffled), "nxdomain" (half of them, half names in
// the zone that do not exist) and "external" (names that every server forwards to one
// upstream, a dnsmasq on 127.0.0.83, and answers from its cache: one pass warms it). Each
// server's latency percentiles are read at a fixed rate of benchLatencyQPS (dnsperf -Q, -v).
//
// It runs twice: without the Service proxy, and with it in nftables mode, programming the
// same 10k Services beside the DNS server as on a real node. BGP is off (no peers). It
// also prints the agent's RSS before and after the 10k Services (when the last one
// resolves, and settled) and its Go heap. Printed, never asserted.
func BenchmarkAgentDNS(b *testing.B) {
	labtest.Need(b)
	testenv.RequireTools(b, testenv.Tool{Cmd: "dnsperf", Package: "dnsperf"}, testenv.Tool{Cmd: "dnsmasq", Package: "dnsmasq-base"},
		testenv.Tool{Cmd: "dig", Package: "dnsutils"})
	coredns := os.Getenv("TABBY_COREDNS")
	if coredns == "" {
		coredns, _ = exec.LookPath("coredns")
	}
	if coredns == "" {
		b.Log("no coredns on PATH or in $TABBY_COREDNS: CoreDNS is left out")
	}
	for _, mode := range []string{"none", "nftables"} {
		b.Run("proxy="+mode, func(b *testing.B) { benchAgentDNS(b, mode, coredns) })
	}
}

// dnsBenchServer is one server BenchmarkAgentDNS queries.
type dnsBenchServer struct {
	name, addr string
	pid        int
}

func benchAgentDNS(b *testing.B, proxyMode, coredns string) {
	l := labtest.New(b)
	const upstream = "127.0.0.83"
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", labtest.AgentScript(b, "--bgp=false", "--proxy-mode", proxyMode,
		"--dns-upstream", upstream, "--dns-cache-size", strconv.Itoa(benchServices), "--log-level", "info"))
	agent := l.State().Nodes[0].Agent.PID
	labtest.Poll(b, "node1 ready", 60*time.Second, func() string {
		if out, _, code := l.Tabbyctl("node1", "node", "readiness", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock")); code != 0 {
			return out
		}
		return ""
	})
	rssBefore := rssMiB(b, agent)

	dir := b.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	var hosts, external strings.Builder
	var names, externalNames []string
	for i := range benchServices {
		fmt.Fprintf(&hosts, "10.100.%d.%d s%d.bench.svc.cluster.local\n", i>>8, i&255, i)
		names = append(names, fmt.Sprintf("s%d.bench.svc.cluster.local", i))
	}
	for i := range benchServices / 2 {
		fmt.Fprintf(&external, "192.0.%d.%d e%d.example.test\n", i>>8&255, i&255, i)
		externalNames = append(externalNames, fmt.Sprintf("e%d.example.test", i))
	}
	hostsFile, externalFile := write("hosts", hosts.String()), write("external", external.String())

	for start := 0; start < benchServices; start += 1000 {
		var m strings.Builder
		for i := start; i < min(start+1000, benchServices); i++ {
			fmt.Fprintf(&m, "---\napiVersion: v1\nkind: Service\nmetadata: {name: s%d, namespace: bench}\n"+
				"spec: {clusterIP: 10.100.%d.%d, ports: [{name: http, port: 80}]}\n", i, i>>8, i&255)
		}
		l.Apply(m.String())
	}
	last := names[len(names)-1]
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

	queries := func(name string, list []string) string {
		var q strings.Builder
		for _, n := range list {
			fmt.Fprintf(&q, "%s A\n", n)
		}
		return write("queries-"+name, q.String())
	}
	shuffled := func(list []string) []string {
		list = slices.Clone(list)
		rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
		return list
	}
	nx := shuffled(names)
	for i := 1; i < len(nx); i += 2 {
		nx[i] = fmt.Sprintf("x%d.bench.svc.cluster.local", i)
	}
	mixes := map[string]string{"cluster": queries("cluster", shuffled(names)), "nxdomain": queries("nxdomain", nx),
		"external": queries("external", shuffled(externalNames))}

	// setsid: each server in a session (and so a scheduler autogroup) of its own, as the
	// agent is; in the benchmark's own group it would share dnsperf's CPU share unevenly.
	l.StartExec(b, "node1", "setsid", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--addn-hosts="+externalFile,
		"--listen-address="+upstream, "--bind-interfaces", "--local-ttl=3600", "--local=/example.test/",
		"--user=root", "--pid-file="+filepath.Join(dir, "upstream.pid"), "--log-facility=/dev/null")
	compared := l.StartExec(b, "node1", "setsid", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--addn-hosts="+hostsFile,
		"--listen-address=127.0.0.82", "--bind-interfaces", "--local-ttl=5", "--local=/cluster.local/", "--server="+upstream,
		"--cache-size="+strconv.Itoa(2*benchServices), "--user=root", "--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-facility=/dev/null")
	// tabby-lab exec, ip netns exec and setsid each exec the next: the pid is the server's.
	servers := []dnsBenchServer{{"tabby", "169.254.20.10", agent}, {"dnsmasq", "127.0.0.82", compared.Process.Pid}}
	if coredns != "" {
		corefile := write("Corefile", fmt.Sprintf(".:53 {\n  bind 127.0.0.84\n  hosts %s cluster.local {\n    ttl 5\n    no_reverse\n  }\n"+
			"  forward . %s\n  cache 3600\n}\n", hostsFile, upstream))
		cmd := l.StartExec(b, "node1", "setsid", coredns, "-conf", corefile, "-quiet")
		servers = append(servers, dnsBenchServer{"coredns", "127.0.0.84", cmd.Process.Pid})
	}
	for _, s := range servers[1:] {
		labtest.Poll(b, s.name+" answers", 30*time.Second, func() string {
			out, _, _ := l.Run("", "exec", "node1", "--", "dig", "@"+s.addr, "+short", "+time=1", last)
			if strings.TrimSpace(out) == "" {
				return "no answer"
			}
			return ""
		})
	}

	b.ResetTimer()
	for _, mix := range []string{"cluster", "nxdomain", "external"} {
		if mix == "external" {
			for _, s := range servers { // warm the caches
				dnsperfRun(b, l, s.addr, mixes[mix], "-n", "1")
			}
		}
		for run := 1; run <= 2; run++ {
			qps := map[string]float64{}
			var line []string
			for _, s := range servers {
				var codes string
				qps[s.name], codes = dnsperfQPS(b, l, s.addr, mixes[mix])
				line = append(line, fmt.Sprintf("%s %.0f (%s)", s.name, qps[s.name], codes))
			}
			b.Logf("%s, run %d: QPS %s: tabby/dnsmasq %.2fx", mix, run, strings.Join(line, ", "), qps["tabby"]/qps["dnsmasq"])
			b.ReportMetric(qps["tabby"]/qps["dnsmasq"], mix+"-ratio-run"+strconv.Itoa(run))
			if c := qps["coredns"]; c > 0 {
				b.Logf("%s, run %d: tabby/coredns %.2fx", mix, run, qps["tabby"]/c)
			}
		}
		var line []string
		for _, s := range servers {
			p50, p99 := dnsperfLatency(b, l, s.addr, mixes[mix])
			line = append(line, fmt.Sprintf("%s p50 %v p99 %v", s.name, p50, p99))
		}
		b.Logf("%s, latency at %d QPS: %s", mix, benchLatencyQPS, strings.Join(line, ", "))
	}
	b.StopTimer()
	var rss []string
	for _, s := range servers {
		rss = append(rss, fmt.Sprintf("%s %.1f MiB", s.name, rssMiB(b, s.pid)))
	}
	b.Logf("RSS after the runs: %s", strings.Join(rss, ", "))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rssAfter-rssBefore, "added-rss-MiB")
	b.ReportMetric(settled-rssBefore, "added-rss-settled-MiB")
	b.Logf("agent RSS %.1f MiB before, %.1f MiB with %d Services (+%.1f) when the last resolved, %.1f MiB settled (+%.1f); the last Service resolved %v after its apply",
		rssBefore, rssAfter, benchServices, rssAfter-rssBefore, settled, settled-rssBefore, took.Round(time.Millisecond))
}

var qpsRE = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)

// dnsperfRun runs dnsperf from node1 against server:53 with the queries in file (8 client
// sockets, 2 threads, 100 in flight) and the extra arguments; it returns dnsperf's output.
func dnsperfRun(b *testing.B, l *labtest.Lab, server, file string, args ...string) string {
	b.Helper()
	argv := append([]string{"exec", "node1", "--", "dnsperf", "-s", server, "-d", file, "-c", "8", "-T", "2", "-q", "100"}, args...)
	out, stderr, code := l.Run("", argv...)
	if code != 0 || !qpsRE.MatchString(out) {
		b.Fatalf("dnsperf against %s: exit %d\n%s%s", server, code, out, stderr)
	}
	return out
}

var codesRE = regexp.MustCompile(`Response codes:\s+(.*)`)

// dnsperfQPS is the QPS of a 10 s dnsperf run against server with the queries in file,
// and the response codes dnsperf counted.
func dnsperfQPS(b *testing.B, l *labtest.Lab, server, file string) (float64, string) {
	b.Helper()
	out := dnsperfRun(b, l, server, file, "-l", "10")
	qps, _ := strconv.ParseFloat(qpsRE.FindStringSubmatch(out)[1], 64)
	var codes string
	if m := codesRE.FindStringSubmatch(out); m != nil {
		codes = m[1]
	}
	return qps, codes
}

// dnsperfLatency is the median and 99th percentile latency of a 5 s dnsperf run against
// server at benchLatencyQPS (dnsperf prints no percentiles, but -v prints each answer's
// latency in seconds as its last field).
func dnsperfLatency(b *testing.B, l *labtest.Lab, server, file string) (p50, p99 time.Duration) {
	b.Helper()
	out := dnsperfRun(b, l, server, file, "-l", "5", "-Q", strconv.Itoa(benchLatencyQPS), "-v")
	var lat []time.Duration
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != ">" {
			continue
		}
		if s, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lat = append(lat, time.Duration(s*float64(time.Second)))
		}
	}
	if len(lat) == 0 {
		b.Fatalf("dnsperf -v against %s printed no latencies:\n%s", server, out)
	}
	slices.SortFunc(lat, cmp.Compare)
	at := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Microsecond) }
	return at(0.50), at(0.99)
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
