package e2e

import (
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/tabby-net/tabby/internal/teststats"
)

// fillerIP is the explicit cluster IP of filler Service i (i < 65536), inside the
// default service CIDR and away from the measured Services' 10.96.30.0/24.
func fillerIP(i int) string { return fmt.Sprintf("10.100.%d.%d", i>>8, i&255) }

// fillerManifest is filler Services from..to-1 in namespace fill: port http 80 to 8080,
// an explicit cluster IP, no selector, and an Endpoints resource naming eps dummy
// addresses (10.255.0.1, ...) that nothing answers on.
func fillerManifest(from, to, eps int) string {
	var m strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&m, "---\napiVersion: v1\nkind: Service\nmetadata: {name: f%d, namespace: fill}\n"+
			"spec: {clusterIP: %s, ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]}\n", i, fillerIP(i))
		m.WriteString(fillerEndpoints(i, eps))
	}
	return m.String()
}

// fillerEndpoints is filler Service i's Endpoints resource with eps addresses.
func fillerEndpoints(i, eps int) string {
	var addrs []string
	for a := 1; a <= eps; a++ {
		addrs = append(addrs, fmt.Sprintf("{ip: 10.255.0.%d}", a))
	}
	return fmt.Sprintf("---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: f%d, namespace: fill}\n"+
		"subsets: [{addresses: [%s], ports: [{name: http, port: 8080, protocol: TCP}]}]\n", i, strings.Join(addrs, ", "))
}

// applyFillers applies filler Services from..to-1 with 5 endpoints each, in chunks of
// 1000 Services (and their Endpoints) per apply.
func applyFillers(l *labtest.Lab, from, to int) {
	for start := from; start < to; start += 1000 {
		l.Apply(fillerManifest(start, min(start+1000, to), 5))
	}
}

// nftVIP is the value of a frontend's element in the node's service-ips map ("goto
// dnat-5", "goto service-…"), or "" with nft's error while it has none. It runs nft
// straight in the node's namespace (ip netns exec), which costs less than tabby-lab exec.
func nftVIP(l *labtest.Lab, node, vip string, port int) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", l.NS(node), "nft", "get", "element", "ip", "tabby", "service-ips",
		fmt.Sprintf("{ %s . tcp . %d }", vip, port)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	s := string(out)
	if i := strings.Index(s, ": goto "); i >= 0 {
		return "goto " + strings.Fields(s[i+2:])[1], nil
	}
	return "", fmt.Errorf("no verdict in %q", s)
}

// waitVIP polls until node's service-ips map sends vip:port to a chain starting with
// want, and returns how long that took.
func waitVIP(b *testing.B, l *labtest.Lab, node, vip string, port int, want string, within time.Duration) time.Duration {
	b.Helper()
	return labtest.Poll(b, fmt.Sprintf("%s: %s:%d in service-ips as %s", node, vip, port, want), within, func() string {
		v, err := nftVIP(l, node, vip, port)
		if err != nil {
			return err.Error()
		}
		if !strings.HasPrefix(v, want) {
			return v
		}
		return ""
	})
}

// programmed is one "services programmed" line of an agent's log: when the proxy's
// apply ended, how many Service ports it held, whether it was a full pass, how long the
// apply took (list, render, plan, nft).
type programmed struct {
	at    time.Time
	ports int
	full  bool
	took  time.Duration
}

// start is when the apply began.
func (p programmed) start() time.Time { return p.at.Add(-p.took) }

var programmedRE = regexp.MustCompile(`(?m)^time=(\S+) level=DEBUG msg="services programmed" component=proxy ports=(\d+) full=(\w+) took=(\S+)$`)

// agentLog follows a lab node's agent log (the lab's agents log at debug level): reading
// it costs the node nothing, unlike nft, which reads a 10k-Service table for seconds.
type agentLog struct {
	path string
	off  int64
	seen []programmed
}

func newAgentLog(l *labtest.Lab, node string) *agentLog {
	return &agentLog{path: filepath.Join(l.StateDir(), node+".log")}
}

// read appends the log's new "services programmed" lines to seen.
func (a *agentLog) read(b *testing.B) {
	b.Helper()
	f, err := os.Open(a.path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(a.off, 0); err != nil {
		b.Fatal(err)
	}
	buf, err := io.ReadAll(f)
	if err != nil {
		b.Fatal(err)
	}
	// Only whole lines: the agent may be writing the last one.
	end := strings.LastIndexByte(string(buf), '\n') + 1
	a.off += int64(end)
	for _, m := range programmedRE.FindAllStringSubmatch(string(buf[:end]), -1) {
		at, err1 := time.Parse(time.RFC3339Nano, m[1])
		ports, err2 := strconv.Atoi(m[2])
		took, err3 := time.ParseDuration(m[4])
		if err1 != nil || err2 != nil || err3 != nil {
			b.Fatalf("agent log line %q: %v %v %v", m[0], err1, err2, err3)
		}
		a.seen = append(a.seen, programmed{at, ports, m[3] == "true", took})
	}
}

// wait reads the log until a line after the first next of seen satisfies ok, and
// returns it and its index.
func (a *agentLog) wait(b *testing.B, what string, next int, within time.Duration, ok func(programmed) bool) (programmed, int) {
	b.Helper()
	var found programmed
	i := next
	labtest.Poll(b, what, within, func() string {
		a.read(b)
		for ; i < len(a.seen); i++ {
			if ok(a.seen[i]) {
				found = a.seen[i]
				return ""
			}
		}
		return fmt.Sprintf("%d lines of services programmed, the last %+v", len(a.seen), a.seen[max(0, len(a.seen)-1):])
	})
	return found, i
}

// waitProgrammed reads node's log for the first proxy apply that began after since
// (when the apply command that wrote the change started) and after seen[next], and checks
// it with one nft read (untimed): vip:80 goes to want. While it does not (a pass begun
// on a view that lacked the change, such as a Service seen before its Endpoints), it
// takes the next apply. If another apply ended before the nft read did, the read cannot
// tell which of them programmed the change: it takes the later one (an upper bound). It
// returns the apply and the index after it.
func (a *agentLog) waitProgrammed(b *testing.B, l *labtest.Lab, node string, next int, since time.Time, vip, want string) (programmed, int) {
	b.Helper()
	for {
		p, i := a.wait(b, fmt.Sprintf("%s: a proxy apply after %s's change", node, vip), next, 10*time.Minute,
			func(p programmed) bool { return !p.start().Before(since.Truncate(time.Millisecond)) })
		next = i + 1
		v, err := nftVIP(l, node, vip, 80)
		read := time.Now()
		a.read(b)
		for ; next < len(a.seen) && a.seen[next].at.Before(read); next++ {
			p = a.seen[next]
		}
		if err == nil && v == want {
			return p, next
		}
	}
}

// fullPasses are the durations of the full passes among seen[from:].
func (a *agentLog) fullPasses(from int) []time.Duration {
	var d []time.Duration
	for _, p := range a.seen[from:] {
		if p.full {
			d = append(d, p.took)
		}
	}
	return d
}

// connLat is one run of connlat: connect() times in microseconds.
type connLat struct{ n, errors, p50, p90, p99, max int }

func runConnlat(b *testing.B, l *labtest.Lab, probe, from string, n int, target string) connLat {
	b.Helper()
	out, stderr, code := l.Run("", "exec", from, "--", probe, strconv.Itoa(n), target)
	if code != 0 {
		b.Fatalf("connlat %d %s from %s: exit %d: %s%s", n, target, from, code, out, stderr)
	}
	f := strings.Fields(out)
	v := map[string]int{}
	for i := 0; i+1 < len(f); i += 2 {
		v[f[i]], _ = strconv.Atoi(f[i+1])
	}
	return connLat{v["n"], v["errors"], v["p50"], v["p90"], v["p99"], v["max"]}
}

// serviceLab is a two-node lab with workload bench/srv on node1 running server (killed
// when the benchmark ends), bench/cli on node2, and Service bench/web on clusterIP vip,
// port to targetPort, selecting bench/srv. It returns the lab and bench/srv's address.
func serviceLab(b *testing.B, vip string, port, targetPort int, server ...string) (*labtest.Lab, string) {
	b.Helper()
	l := labtest.New(b)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(b, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "bench/srv", "--labels", "app=web")
	l.OK("workload", "add", "node2", "bench/cli")
	srv := l.Command(append([]string{"exec", "bench/srv", "--"}, server...)...)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	l.Apply(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: bench}
spec:
  clusterIP: %s
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: %d, targetPort: %d}]
`, vip, port, targetPort))
	return l, l.WorkloadIP("bench", "srv").String()
}

// BenchmarkServiceFirstPacket measures first-packet (new TCP connection) latency through
// a ClusterIP in a two-node lab, at 100 and at 10,000 Services: connect() p50/p99 over
// 2000 sequential connections from a workload on node2 to a ClusterIP with one endpoint
// on node1, beside the same probe straight to the endpoint's pod IP, interleaved, in 4
// rounds at each count (the order swapped every other round); the summary takes the
// median over rounds. The 9,900 filler Services have explicit cluster IPs and an Endpoints
// resource of 5 dummy addresses; the 10k figures are taken once both agents' maps hold
// the last one. It prints ClusterIP/direct at each count and 10k/100 (the goal:
// within 1.2×), raw and over the direct baseline. Printed, never asserted.
func BenchmarkServiceFirstPacket(b *testing.B) {
	const conns, many, rounds = 2000, 10000, 4
	probe := labtest.Build(b, "./testdata/connlat", "connlat")
	const vip = "10.96.30.1"
	l, srvIP := serviceLab(b, vip, 80, 8080, probe, "serve", "8080")
	direct := srvIP + ":8080"
	applyFillers(l, 0, 99)
	for _, node := range []string{"node1", "node2"} {
		waitVIP(b, l, node, fillerIP(98), 80, "goto", 120*time.Second)
	}
	labtest.Poll(b, "the ClusterIP answers from node2's workload", 60*time.Second, func() string {
		out, stderr, code := l.Run("", "exec", "bench/cli", "--", probe, "5", vip+":80")
		if code != 0 || !strings.HasPrefix(out, "n 5 errors 0 ") {
			return out + stderr
		}
		return ""
	})

	type pair struct{ cip, direct connLat }
	measure := func(count int) []pair {
		var ps []pair
		for round := range rounds {
			// Alternate which goes first, so that neither always runs on a warmer machine.
			var p pair
			if round%2 == 0 {
				p.cip = runConnlat(b, l, probe, "bench/cli", conns, vip+":80")
				p.direct = runConnlat(b, l, probe, "bench/cli", conns, direct)
			} else {
				p.direct = runConnlat(b, l, probe, "bench/cli", conns, direct)
				p.cip = runConnlat(b, l, probe, "bench/cli", conns, vip+":80")
			}
			b.Logf("%5d Services, round %d: ClusterIP p50 %d µs p90 %d p99 %d max %d (errors %d); direct p50 %d µs p90 %d p99 %d max %d (errors %d)",
				count, round+1, p.cip.p50, p.cip.p90, p.cip.p99, p.cip.max, p.cip.errors, p.direct.p50, p.direct.p90, p.direct.p99, p.direct.max, p.direct.errors)
			ps = append(ps, p)
		}
		return ps
	}
	// med is the median over rounds of one figure.
	med := func(ps []pair, f func(pair) int) float64 {
		var v []int
		for _, p := range ps {
			v = append(v, f(p))
		}
		slices.Sort(v)
		if len(v)%2 == 0 {
			return float64(v[len(v)/2-1]+v[len(v)/2]) / 2
		}
		return float64(v[len(v)/2])
	}
	cip50 := func(p pair) int { return p.cip.p50 }
	cip99 := func(p pair) int { return p.cip.p99 }
	dir50 := func(p pair) int { return p.direct.p50 }
	dir99 := func(p pair) int { return p.direct.p99 }
	for range b.N {
		few := measure(100)
		logs := []*agentLog{newAgentLog(l, "node1"), newAgentLog(l, "node2")}
		start := time.Now()
		applyFillers(l, 99, many-2)
		lastChunk := time.Now()
		applyFillers(l, many-2, many-1)
		applied := time.Since(start)
		var held time.Time
		for i, a := range logs {
			// From the agents' logs: reading a 10k-Service table with nft takes seconds
			// of CPU.
			p, _ := a.waitProgrammed(b, l, fmt.Sprintf("node%d", i+1), 0, lastChunk, fillerIP(many-2), "goto dnat-5")
			if p.at.After(held) {
				held = p.at
			}
		}
		b.Logf("9,900 filler Services applied in %.1f s; both agents' proxies held them %.1f s after the first chunk's apply began",
			applied.Seconds(), held.Sub(start).Seconds())
		t0 := time.Now()
		lots := measure(many)
		t1 := time.Now()
		// The agents' applies that overlapped the 10k measurement (periodic full passes
		// every 30 s): what else the 2 cores were doing.
		for i, a := range logs {
			a.read(b)
			for _, p := range a.seen {
				if p.at.After(t0) && p.start().Before(t1) {
					b.Logf("node%d's proxy applied during the 10k rounds: %s to %s (full pass: %v, %.2f s)",
						i+1, p.start().Format("15:04:05.000"), p.at.Format("15:04:05.000"), p.full, p.took.Seconds())
				}
			}
		}
		b.Logf("the 10k rounds ran %s to %s", t0.Format("15:04:05.000"), t1.Format("15:04:05.000"))
		for _, c := range []struct {
			count int
			ps    []pair
		}{{100, few}, {many, lots}} {
			b.Logf("%5d Services, median of %d rounds: ClusterIP p50 %.0f µs p99 %.0f µs; direct p50 %.0f µs p99 %.0f µs; ClusterIP/direct p50 %.2f× p99 %.2f×",
				c.count, rounds, med(c.ps, cip50), med(c.ps, cip99), med(c.ps, dir50), med(c.ps, dir99),
				med(c.ps, cip50)/med(c.ps, dir50), med(c.ps, cip99)/med(c.ps, dir99))
		}
		r50, r99 := med(lots, cip50)/med(few, cip50), med(lots, cip99)/med(few, cip99)
		d50, d99 := med(lots, dir50)/med(few, dir50), med(lots, dir99)/med(few, dir99)
		b.Logf("ClusterIP 10k/100: p50 %.2f× p99 %.2f× (goal ≤ 1.2×); direct's own 10k/100 (the machine's drift): p50 %.2f× p99 %.2f×; ClusterIP's over direct's: p50 %.2f× p99 %.2f×",
			r50, r99, d50, d99, r50/d50, r99/d99)
		b.ReportMetric(r50, "10k/100-p50")
		b.ReportMetric(r50/d50, "10k/100-p50-norm")
		b.ReportMetric(med(lots, cip50)/med(lots, dir50), "cip/direct-p50@10k")
	}
}

// iperf3Gbps runs iperf3 -c target (3 s, one stream) from a lab namespace and returns
// the received rate in Gbit/s.
func iperf3Gbps(b *testing.B, l *labtest.Lab, from, target string) float64 {
	b.Helper()
	var out string
	labtest.Poll(b, "iperf3 "+from+" -> "+target, 30*time.Second, func() string {
		o, stderr, code := l.Run("", "exec", from, "--", "iperf3", "-c", target, "-p", "5201", "-t", "3", "-J")
		out = o
		if code != 0 {
			return o + stderr
		}
		return ""
	})
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// BenchmarkClusterIPThroughput prints one-stream TCP throughput (iperf3, 3 s) from a
// workload on node2 through a ClusterIP whose one endpoint is on node1, beside the same
// straight to the endpoint's pod IP, interleaved, twice, the order swapped in the second
// round (the goal: ≥ 0.95×).
// Printed, never asserted.
func BenchmarkClusterIPThroughput(b *testing.B) {
	testenv.RequireTools(b, testenv.Tool{Cmd: "iperf3", Package: "iperf3"})
	const vip = "10.96.30.2"
	l, direct := serviceLab(b, vip, 5201, 5201, "iperf3", "-s", "-p", "5201")
	waitVIP(b, l, "node2", vip, 5201, "goto", 60*time.Second)
	for range b.N {
		var ratios []float64
		for round := range 2 {
			// Alternate which goes first, so that neither always runs on a warmer machine.
			var d, c float64
			if round%2 == 0 {
				d = iperf3Gbps(b, l, "bench/cli", direct)
				c = iperf3Gbps(b, l, "bench/cli", vip)
			} else {
				c = iperf3Gbps(b, l, "bench/cli", vip)
				d = iperf3Gbps(b, l, "bench/cli", direct)
			}
			ratios = append(ratios, c/d)
			b.Logf("round %d: iperf3 one stream, 3 s, node2's workload to node1's: direct %.2f Gbit/s; through the ClusterIP %.2f Gbit/s (%.2f×, goal ≥ 0.95×)",
				round+1, d, c, c/d)
		}
		b.ReportMetric(slices.Min(ratios), "cip/direct-min")
		b.ReportMetric(slices.Max(ratios), "cip/direct-max")
	}
}

// BenchmarkServiceSync measures, in a live one-node lab, how long the agent takes to
// program Services into its nftables table, from the agent's own log (its "services
// programmed" lines, at debug level) so that nothing reads the table while it is timed:
//
//   - the full sync of 1,000 and then of 10,000 filler Services (5 endpoints each), from
//     the start of the last chunk's apply (and of the first's) to the end of the first
//     proxy apply that began after the last chunk's apply did (and holds them all);
//   - at each count, 10 one-Service changes (an Endpoints resource gains a sixth address)
//     from the start of tabby-lab ctl apply to the end of the first proxy apply that
//     began after the command did, checked afterwards (untimed) with nft: the map sends that Service
//     to dnat-6. p50/p99, beside the apply command's own time;
//   - the agent's periodic full passes (every 30 s: list, render, plan, nft) over the
//     programmed table: one waited for at each count, and all seen.
//
// Compare with felix's BenchmarkProxyNFT in proxy/README.md. Printed, never asserted.
func BenchmarkServiceSync(b *testing.B) {
	const changes = 10
	l := labtest.New(b)
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", labtest.AgentScript(b, "--bgp=false"))
	l.Apply(labtest.Pool)
	alog := newAgentLog(l, "node1")
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for range b.N {
		loaded := 0
		for _, count := range []int{1000, 10000} {
			alog.read(b)
			from := len(alog.seen)
			first := time.Now()
			var last time.Time
			for start := loaded; start < count; start += 1000 {
				last = time.Now()
				l.Apply(fillerManifest(start, min(start+1000, count), 5))
			}
			all, next := alog.waitProgrammed(b, l, "node1", from, last, fillerIP(count-1), "goto dnat-5")
			b.Logf("%5d Services: full sync (Services %d-%d added): %.2f s from the start of the last chunk's apply, %.2f s from the first's; that apply took %.2f s (full pass: %v)",
				count, loaded, count-1, all.at.Sub(last).Seconds(), all.at.Sub(first).Seconds(), all.took.Seconds(), all.full)
			loaded = count

			var toProg, applyCmd, passes []time.Duration
			for c := range changes {
				i := (c*997 + count/3) % count
				start := time.Now()
				l.Apply(fillerEndpoints(i, 6))
				applyCmd = append(applyCmd, time.Since(start))
				var p programmed
				p, next = alog.waitProgrammed(b, l, "node1", next, start, fillerIP(i), "goto dnat-6")
				toProg = append(toProg, p.at.Sub(start))
				passes = append(passes, p.took)
			}
			// One periodic full pass (every 30 s) over the whole table, waited for.
			fp, _ := alog.wait(b, "a periodic full pass", next, 3*time.Minute,
				func(p programmed) bool { return p.full && p.ports >= count })
			b.Logf("%5d Services: a periodic full pass over the programmed table took %.2f s", count, fp.took.Seconds())
			full := alog.fullPasses(from)
			b.Logf("%5d Services: one Service's endpoint added, apply to programmed (%d changes): p50 %.0f ms, p99 %.0f ms (max); the apply command p50 %.0f ms; the proxy's apply p50 %.0f ms, max %.0f ms",
				count, changes, ms(teststats.Quantile(toProg, 0.5)), ms(teststats.Quantile(toProg, 0.99)), ms(teststats.Quantile(applyCmd, 0.5)), ms(teststats.Quantile(passes, 0.5)), ms(teststats.Quantile(passes, 1)))
			b.Logf("%5d Services: the agent's periodic full passes so far at this count: %d, p50 %.2f s, max %.2f s", count, len(full), teststats.Quantile(full, 0.5).Seconds(), teststats.Quantile(full, 1).Seconds())
			b.ReportMetric(ms(teststats.Quantile(toProg, 0.5)), fmt.Sprintf("change-p50-ms@%d", count))
		}
	}
}
