package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// The benchmarks build a lab per run and print their figures (b.ReportMetric and b.Logf);
// nothing is asserted beyond the lab working. Each runs once: go test -bench . ./bgp/e2e.

// BenchmarkMeshConvergence: a lab of N nodes (one subnet, full mesh, hold 9 s), one
// workload each; converged = every node's kernel has every other node's block via its
// owner. Reported: seconds from the start of `up` and from the last workload's ADD, and
// the time for a node that leaves (agent stopped, Node deleted) to be withdrawn everywhere.
func BenchmarkMeshConvergence(b *testing.B) {
	for _, n := range []int{3, 10, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			labtest.Need(b)
			for range b.N {
				meshConvergence(b, n)
			}
		})
	}
}

func meshConvergence(b *testing.B, n int) {
	l := newLab(b)
	start := time.Now()
	l.OK("up", "--nodes", strconv.Itoa(n), "--subnets", "1", "--agent-binary", bgpAgent(b))
	l.Apply(labtest.Pool)
	blocks := map[int]string{}
	for i := 1; i <= n; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
	}
	lastAdd := time.Now()
	for i := 1; i <= n; i++ {
		blocks[i] = labtest.BlockOf(l.WorkloadIP("default", fmt.Sprintf("w%d", i)))
	}
	nodeAddr := func(i int) string { return fmt.Sprintf("172.31.1.%d", 9+i) }
	labtest.Poll(b, "mesh converges", 120*time.Second, func() string {
		for i := 1; i <= n; i++ {
			routes := l.GatewayRoutes(fmt.Sprintf("node%d", i))
			for j := 1; j <= n; j++ {
				if j != i && routes[blocks[j]] != nodeAddr(j) {
					return fmt.Sprintf("node%d lacks %s", i, blocks[j])
				}
			}
		}
		return ""
	})
	fromUp, fromLast := time.Since(start), time.Since(lastAdd)

	// node n leaves.
	st := l.State()
	pid := st.Nodes[n-1].Agent.PID
	_ = syscall.Kill(pid, syscall.SIGTERM)
	waitExit(b, pid, 15*time.Second)
	left := time.Now()
	l.OK("ctl", "delete", "node", fmt.Sprintf("node%d", n))
	labtest.Poll(b, "the leaving node's block withdrawn everywhere", 60*time.Second, func() string {
		for i := 1; i < n; i++ {
			if _, ok := l.GatewayRoutes(fmt.Sprintf("node%d", i))[blocks[n]]; ok {
				return fmt.Sprintf("node%d still routes %s", i, blocks[n])
			}
		}
		return ""
	})
	leave := time.Since(left)
	b.ReportMetric(fromUp.Seconds(), "s-from-up")
	b.ReportMetric(fromLast.Seconds(), "s-after-last-workload")
	b.ReportMetric(leave.Seconds(), "s-node-leaves")
	b.Logf("%d-node mesh: converged %.2fs after up started, %.2fs after the last workload; a node leaving withdrawn everywhere in %.3fs",
		n, fromUp.Seconds(), fromLast.Seconds(), leave.Seconds())
}

// BenchmarkRouteInstall: a BIRD 2 announcer (AS 65001) sends N /32s over eBGP at once to
// one tabby-node and to a reference BIRD 2 (AS 64513, its kernel protocol installing into
// its own namespace). Reported: seconds from the announcer's start until all N are in each
// receiver's kernel and from each receiver's first route (the install proper; the poll
// counts routes with ip every ~0.1-0.5 s, so short times are coarse), the ratio of the
// latter, the agent's RSS when all are installed and 5 s later, and its growth per 10k
// routes; then the announcer withdraws them all (its static protocol disabled) and the
// seconds until each kernel has none, and their ratio.
func BenchmarkRouteInstall(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			labtest.Need(b)
			testenv.RequireTools(b, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
			for range b.N {
				routeInstall(b, n)
			}
		})
	}
}

func routeInstall(b *testing.B, n int) {
	l := newLab(b)
	// The agent logs at info here (the lab's default is debug: a line per path); it serves
	// pprof on its namespace's loopback for the heap profile below.
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", bgpAgent(b, "--log-level", "info", "--pprof-listen", benchPprof))
	l.OK("host", "add", "ann", "--subnet", "1")
	l.OK("host", "add", "ref", "--subnet", "1")
	annNS, ann := l.hostAddr("ann")
	refNS, ref := l.hostAddr("ref")
	l.Apply(labtest.Pool + `---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: announcer}
spec: {peerIP: ` + ann + `, asNumber: 65001}
`)
	// The reference BIRD: learns from the announcer, installs into its kernel.
	startBIRD(b, refNS, `router id `+ref+`;
protocol device {}
protocol kernel { ipv4 { export all; }; }
protocol bgp ann { local `+ref+` as 64513; neighbor `+ann+` as 65001; direct;
  hold time 9; keepalive time 3; connect retry time 1; ipv4 { import all; export none; }; }
`)
	var routes strings.Builder
	for i := range n {
		fmt.Fprintf(&routes, "  route 100.%d.%d.%d/32 blackhole;\n", 64+i>>16, i>>8&255, i&255)
	}
	agentPID := l.State().Nodes[0].Agent.PID
	rss0 := rssKB(b, agentPID)

	count := func(target, proto string) int {
		out := l.OK("exec", target, "--", "ip", "route", "show", "proto", proto)
		c := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "100.") {
				c++
			}
		}
		return c
	}
	cpu := startCPUProfile(l, n)
	start := time.Now()
	annSock := startBIRD(b, annNS, `router id `+ann+`;
protocol device {}
protocol static many { ipv4;
`+routes.String()+`}
template bgp feed { local `+ann+` as 65001; hold time 9; keepalive time 3; connect retry time 1;
  ipv4 { import none; export where proto = "many"; }; }
protocol bgp node1 from feed { neighbor 172.31.1.10 as 64512; }
protocol bgp ref from feed { neighbor `+ref+` as 64513; }
`)
	// Times from the announcer's start (sessions come up within a connect retry) and from
	// each receiver's first route, which is the install time proper.
	var tabbyT, birdT, tabbyFirst, birdFirst time.Duration
	labtest.Poll(b, "all routes in both kernels", 180*time.Second, func() string {
		tn, bn := count("node1", "116"), count("ref", "bird")
		now := time.Since(start)
		for _, x := range []struct {
			got        int
			first, all *time.Duration
		}{{tn, &tabbyFirst, &tabbyT}, {bn, &birdFirst, &birdT}} {
			if x.got > 0 && *x.first == 0 {
				*x.first = now
			}
			if x.got >= n && *x.all == 0 {
				*x.all = now
			}
		}
		if tabbyT == 0 || birdT == 0 {
			return fmt.Sprintf("tabby %d, bird %d of %d", tn, bn, n)
		}
		return ""
	})
	rss1 := rssKB(b, agentPID)
	saveHeapProfile(l, n)
	perTenK := float64(rss1-rss0) / 1024 / (float64(n) / 10_000)
	time.Sleep(5 * time.Second) // not a wait for anything: the RSS settled is a figure of its own
	rssSettled := rssKB(b, agentPID)
	saveMemStats(l, n)

	// Full withdrawal: the announcer's static routes go, both sessions carry withdrawals.
	wstart := time.Now()
	l.OK("exec", "ann", "--", "birdc", "-s", annSock, "disable", "many")
	var tabbyW, birdW time.Duration
	labtest.Poll(b, "no routes left in either kernel", 180*time.Second, func() string {
		tn, bn := count("node1", "116"), count("ref", "bird")
		now := time.Since(wstart)
		if tn == 0 && tabbyW == 0 {
			tabbyW = now
		}
		if bn == 0 && birdW == 0 {
			birdW = now
		}
		if tabbyW == 0 || birdW == 0 {
			return fmt.Sprintf("tabby %d, bird %d left", tn, bn)
		}
		return ""
	})
	cpu()
	b.ReportMetric(tabbyT.Seconds(), "s-tabby")
	b.ReportMetric(birdT.Seconds(), "s-bird")
	ratio := (tabbyT - tabbyFirst).Seconds() / (birdT - birdFirst).Seconds()
	b.ReportMetric(ratio, "tabby/bird-install")
	b.ReportMetric((tabbyT - tabbyFirst).Seconds(), "s-tabby-first-to-all")
	b.ReportMetric((birdT - birdFirst).Seconds(), "s-bird-first-to-all")
	b.ReportMetric(perTenK, "MB-RSS-per-10k")
	b.ReportMetric(float64(rss1)/1024, "MB-RSS-installed")
	b.ReportMetric(float64(rssSettled)/1024, "MB-RSS-settled")
	b.ReportMetric(tabbyW.Seconds(), "s-tabby-withdraw")
	b.ReportMetric(birdW.Seconds(), "s-bird-withdraw")
	b.ReportMetric(tabbyW.Seconds()/birdW.Seconds(), "tabby/bird-withdraw")
	b.Logf("%d prefixes from BIRD: in tabby-node's kernel %.2fs after the announcer started (%.2fs from the first), in BIRD's kernel after %.2fs (%.2fs from the first); install ratio (from the first) %.2f; agent RSS %d -> %d MB (%.1f MB per 10k routes), %d MB 5 s later; all withdrawn from tabby-node's kernel in %.2fs, from BIRD's in %.2fs (%.2f)",
		n, tabbyT.Seconds(), (tabbyT - tabbyFirst).Seconds(), birdT.Seconds(), (birdT - birdFirst).Seconds(), ratio, rss0/1024, rss1/1024, perTenK,
		rssSettled/1024, tabbyW.Seconds(), birdW.Seconds(), tabbyW.Seconds()/birdW.Seconds())
}

// benchPprof is where the benchmarked agent serves pprof, inside its node's namespace.
const benchPprof = "127.0.0.1:6061"

// saveHeapProfile writes the agent's heap profile, all routes installed, to
// $TABBY_BENCH_HEAP/heap-<n>-<time>.pb.gz when that is set (read it with go tool pprof
// -sample_index=inuse_space bin/tabby-node <file>).
func saveHeapProfile(l *lab, n int) {
	if path := fetchProfile(l, fmt.Sprintf("heap-%d", n), ".pb.gz", "heap"); path != "" {
		l.t.Logf("heap profile at %d routes: %s", n, path)
	}
}

// saveMemStats writes the agent's heap profile in text, which ends with the runtime's
// MemStats (heap in use, idle, released to the OS; GC count), beside the profiles.
func saveMemStats(l *lab, n int) {
	fetchProfile(l, fmt.Sprintf("memstats-%d", n), ".txt", "heap?debug=1")
}

// fetchProfile saves the agent's /debug/pprof/<query> as $TABBY_BENCH_HEAP/<name>-<time><ext>
// and returns its path; "" when TABBY_BENCH_HEAP is not set.
func fetchProfile(l *lab, name, ext, query string) string {
	dir := os.Getenv("TABBY_BENCH_HEAP")
	if dir == "" {
		return ""
	}
	path := filepath.Join(dir, name+"-"+time.Now().UTC().Format("150405")+ext)
	l.OK("exec", "node1", "--", "curl", "-sf", "-o", path, "http://"+benchPprof+"/debug/pprof/"+query)
	return path
}

// startCPUProfile starts a 40 s CPU profile of the agent (learning and installing) into
// $TABBY_BENCH_HEAP when that and TABBY_BENCH_CPU are set (the profiler's own memory
// shows in the RSS); the function returned waits for it and copies the agent's log beside
// it.
func startCPUProfile(l *lab, n int) func() {
	dir := os.Getenv("TABBY_BENCH_HEAP")
	if dir == "" || os.Getenv("TABBY_BENCH_CPU") == "" {
		return func() {}
	}
	stamp := time.Now().UTC().Format("150405")
	path := filepath.Join(dir, fmt.Sprintf("cpu-%d-%s.pb.gz", n, stamp))
	cmd := l.Command("exec", "node1", "--", "curl", "-sf", "-o", path, "http://"+benchPprof+"/debug/pprof/profile?seconds=40")
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	return func() {
		if err := cmd.Wait(); err != nil {
			l.t.Logf("CPU profile: %v", err)
		}
		log, _ := os.ReadFile(filepath.Join(l.StateDir(), "node1.log"))
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("agent-%d-%s.log", n, stamp)), log, 0o644)
		l.t.Logf("CPU profile from the announcer's start: %s", path)
	}
}

// rssKB reads a process's resident set size.
func rssKB(b *testing.B, pid int) int {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rest)[0])
			return kb
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
