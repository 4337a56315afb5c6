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
// run also reads the server's CPU time per query and the CPUs dnsperf used: on 2 cores
// dnsperf often takes its whole share first, and then both servers answer about as fast
// as it asks, and what sets them apart is what each query cost. Each server's latency
// percentiles are read at a fixed rate of benchLatencyQPS (dnsperf -Q, -v).
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
			qps, cost := map[string]float64{}, map[string]float64{}
			var line []string
			for _, s := range servers {
				r := dnsperfLoad(b, l, s, mixes[mix])
				qps[s.name], cost[s.name] = r.qps, r.serverMicros
				line = append(line, fmt.Sprintf("%s %.0f (%.1f µs of server CPU a query, dnsperf %.2f CPUs; %s)", s.name, r.qps, r.serverMicros, r.clientCPUs, r.codes))
			}
			b.Logf("%s, run %d: QPS %s: tabby/dnsmasq %.2fx, server CPU a query dnsmasq/tabby %.2fx", mix, run, strings.Join(line, ", "),
				qps["tabby"]/qps["dnsmasq"], cost["dnsmasq"]/cost["tabby"])
			b.ReportMetric(qps["tabby"]/qps["dnsmasq"], mix+"-ratio-run"+strconv.Itoa(run))
			b.ReportMetric(cost["dnsmasq"]/cost["tabby"], mix+"-cpu-ratio-run"+strconv.Itoa(run))
			if c := qps["coredns"]; c > 0 {
				b.Logf("%s, run %d: tabby/coredns QPS %.2fx, server CPU a query coredns/tabby %.2fx", mix, run, qps["tabby"]/c, cost["coredns"]/cost["tabby"])
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
// sockets, 2 threads, 100 in flight) and the extra arguments; it returns dnsperf's output,
// then bash's times (the CPU time dnsperf used, as the shell's children's).
func dnsperfRun(b *testing.B, l *labtest.Lab, server, file string, args ...string) string {
	b.Helper()
	argv := append([]string{"exec", "node1", "--", "bash", "-c", `dnsperf "$@"; rc=$?; times; exit $rc`, "dnsperf",
		"-s", server, "-d", file, "-c", "8", "-T", "2", "-q", "100"}, args...)
	out, stderr, code := l.Run("", argv...)
	if code != 0 || !qpsRE.MatchString(out) {
		b.Fatalf("dnsperf against %s: exit %d\n%s%s", server, code, out, stderr)
	}
	return out
}

var (
	codesRE     = regexp.MustCompile(`Response codes:\s+(.*)`)
	completedRE = regexp.MustCompile(`Queries completed:\s+([0-9]+)`)
	// bash's times: the shell's user and system time, then its children's.
	timesRE = regexp.MustCompile(`(?m)^([0-9]+)m([0-9.]+)s ([0-9]+)m([0-9.]+)s\s*$`)
)

// dnsLoad is what one 10 s dnsperf run measured.
type dnsLoad struct {
	qps          float64
	codes        string  // dnsperf's response codes line
	serverMicros float64 // the server's CPU time (user and system) per completed query, in µs
	clientCPUs   float64 // the CPUs dnsperf used over the run
}

// dnsperfLoad runs dnsperf from node1 against s for 10 s with the queries in file. The
// CPU figures show which side was the limit: on 2 cores dnsperf often takes all of its
// share (each session gets one CPU's worth) before the server does.
func dnsperfLoad(b *testing.B, l *labtest.Lab, s dnsBenchServer, file string) dnsLoad {
	b.Helper()
	before := cpuTime(b, s.pid)
	out := dnsperfRun(b, l, s.addr, file, "-l", "10")
	used := cpuTime(b, s.pid) - before
	qps, completed, times := qpsRE.FindStringSubmatch(out), completedRE.FindStringSubmatch(out), timesRE.FindAllStringSubmatch(out, -1)
	if completed == nil || len(times) != 2 {
		b.Fatalf("dnsperf against %s: no completed count or times in\n%s", s.addr, out)
	}
	var r dnsLoad
	r.qps, _ = strconv.ParseFloat(qps[1], 64)
	n, _ := strconv.ParseFloat(completed[1], 64)
	r.serverMicros = float64(used.Microseconds()) / max(n, 1)
	var client float64
	for _, i := range []int{1, 3} { // the children's user and system minutes and seconds
		m, _ := strconv.ParseFloat(times[1][i], 64)
		sec, _ := strconv.ParseFloat(times[1][i+1], 64)
		client += 60*m + sec
	}
	r.clientCPUs = client / 10
	if m := codesRE.FindStringSubmatch(out); m != nil {
		r.codes = m[1]
	}
	return r
}

// cpuTime is the user and system time a process has used.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's closing parenthesis: state is the first, utime and
	// stime the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
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
