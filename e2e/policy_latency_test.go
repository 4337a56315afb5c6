package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/teststats"
)

// BenchmarkPolicyApplyToEnforced measures, in a live two-node lab (the policy matrix's
// workloads and servers), how long a single change takes from `tabbyctl apply` (run as
// `tabby-lab ctl apply`) to enforcement: a probe from y/a (node2) to x/a:80 (node1) runs
// every 5 ms (20 ms timeout) and the first probe with the new verdict ends the
// measurement. Two kinds of change, 20 of each: a Kubernetes NetworkPolicy denying x/a's
// ingress created or deleted, and y/a's WorkloadEndpoint relabelled in or out of the
// peers a policy allows. It measures the lab as it is (the baseline) and with both
// nodes' host endpoints present (hostEndpointLoad: normal, untracked and preDNAT host
// policy, so every table of host endpoint policy is written and synced on each change),
// in two rounds of half the changes each (baseline, host endpoints, baseline, host
// endpoints), so that a machine whose load changes meanwhile weighs on both alike; it
// reports the second's figures with the prefix hep- and their ratios to the first's.
// Printed, never asserted: p50/p99 from the apply command's start, the command's own
// time, felix's sync time on node1 (from its debug log), and the CPU time the two
// agents used per change.
func BenchmarkPolicyApplyToEnforced(b *testing.B) {
	m := newMatrixLab(b)
	m.expectMatrix(b, "before the changes") // routes between the nodes are up
	b.ResetTimer()
	var base, hep applyToEnforced
	for round := range 2 {
		base.add(m.measureApplyToEnforced(b, fmt.Sprintf("baseline, round %d", round+1), 10))
		m.apply(b, hostEndpointLoad(m))
		m.expectMatrix(b, "host endpoints present")
		hep.add(m.measureApplyToEnforced(b, fmt.Sprintf("host endpoints present, round %d", round+1), 10))
		m.remove(b, hostEndpointLoad(m))
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	base.report(b, "")
	hep.report(b, "hep-")
	for _, r := range []struct {
		name     string
		hep, was time.Duration
	}{
		{"policy-p50", hep.policyP50(), base.policyP50()},
		{"relabel-p50", hep.relabelP50(), base.relabelP50()},
		{"cli-p50", hep.cliP50(), base.cliP50()},
		{"felix-sync-p50", teststats.Quantile(hep.syncs, 0.5), teststats.Quantile(base.syncs, 0.5)},
		{"render-p50", teststats.Quantile(hep.renders, 0.5), teststats.Quantile(base.renders, 0.5)},
		{"agent-cpu", hep.cpuPerChange(), base.cpuPerChange()},
	} {
		if r.was > 0 {
			b.ReportMetric(float64(r.hep)/float64(r.was), r.name+"-ratio")
		}
	}
}

// hostEndpointLoad is host endpoints for both of m's nodes (every interface) with a host
// policy of each stage that leaves the matrix's traffic alone: an allow-all profile, a
// normal policy allowing the servers' ports from the pool, an untracked one allowing
// 8080, a preDNAT one denying 30080 from outside the pool.
func hostEndpointLoad(m *matrixLab) string {
	var b strings.Builder
	for _, h := range m.hosts {
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: %s-bench, labels: {bench-host: %q}}\n"+
			"spec: {node: %s, interfaceName: \"*\", expectedIPs: [%s], profiles: [projectcalico-default-allow]}\n", h.key, h.key, h.key, h.addr)
	}
	b.WriteString(`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bench-hosts}
spec:
  selector: has(bench-host)
  ingress: [{action: Allow, source: {nets: [10.244.0.0/16]}}, {action: Allow, protocol: TCP, destination: {ports: [22, 80, 81, 179, 2379]}}, {action: Allow, protocol: UDP}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bench-untracked}
spec:
  selector: has(bench-host)
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
  egress: [{action: Allow, protocol: TCP, source: {ports: [8080]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: bench-prednat}
spec:
  selector: has(bench-host)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {notNets: [10.244.0.0/16]}, destination: {ports: [30080]}}]
`)
	return b.String()
}

// applyToEnforced is one measurement's figures.
type applyToEnforced struct {
	policyRuns, policyCLI, labelRuns, labelCLI, syncs, renders []time.Duration
	// agentCPU is the CPU time both agents used (with the iptables and ipset commands
	// they ran), over changes changes.
	agentCPU time.Duration
	changes  int
}

func (a applyToEnforced) policyP50() time.Duration  { return teststats.Quantile(a.policyRuns, 0.5) }
func (a applyToEnforced) relabelP50() time.Duration { return teststats.Quantile(a.labelRuns, 0.5) }
func (a applyToEnforced) cliP50() time.Duration {
	return teststats.Quantile(slices.Concat(a.policyCLI, a.labelCLI), 0.5)
}

// add appends o's figures to a's.
func (a *applyToEnforced) add(o applyToEnforced) {
	a.policyRuns, a.policyCLI = append(a.policyRuns, o.policyRuns...), append(a.policyCLI, o.policyCLI...)
	a.labelRuns, a.labelCLI = append(a.labelRuns, o.labelRuns...), append(a.labelCLI, o.labelCLI...)
	a.syncs, a.renders = append(a.syncs, o.syncs...), append(a.renders, o.renders...)
	a.agentCPU, a.changes = a.agentCPU+o.agentCPU, a.changes+o.changes
}

// cpuPerChange is the agents' CPU time per change.
func (a applyToEnforced) cpuPerChange() time.Duration {
	if a.changes == 0 {
		return 0
	}
	return a.agentCPU / time.Duration(a.changes)
}

// agentsCPU is the CPU time the lab's agents used so far, their waited-for children's
// (iptables-restore, ipset, ...) included: /proc/<pid>/stat's utime, stime, cutime and
// cstime.
func (m *matrixLab) agentsCPU(t testing.TB) time.Duration {
	var total time.Duration
	for _, n := range m.l.State().Nodes {
		if n.Agent == nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.Agent.PID))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command's closing parenthesis: state is field 3, utime 14.
		_, rest, _ := strings.Cut(string(data), ") ")
		f := strings.Fields(rest)
		for _, i := range []int{14, 15, 16, 17} {
			ticks, err := strconv.ParseInt(f[i-3], 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/stat field %d: %v", n.Agent.PID, i, err)
			}
			total += time.Duration(ticks) * time.Second / 100 // USER_HZ
		}
	}
	return total
}

// measureApplyToEnforced runs n policy changes and n relabels (n even, so that each
// kind ends as it began), and reads node1's felix times of them from its log.
func (m *matrixLab) measureApplyToEnforced(b *testing.B, what string, n int) applyToEnforced {
	var a applyToEnforced
	src, dst := m.pod(b, "y/a"), m.pod(b, "x/a")
	target := fmt.Sprintf("tcp/%s:80", dst.addr)
	logFile := filepath.Join(m.l.StateDir(), "node1.log")
	logStart := fileSize(b, logFile)
	cpuStart := m.agentsCPU(b)
	// The prober's 20 ms timeout is short on a loaded machine: start once three probes in
	// a row got through, so that the first change does not find its verdict already there.
	labtest.Poll(b, what+": y/a reaches x/a within 20 ms three times in a row", 30*time.Second, func() string {
		out, err := exec.Command("ip", "netns", "exec", src.ns, m.probe, "probe", "20ms", target, target, target).Output()
		if err != nil || strings.Count(string(out), " ok") != 3 {
			return fmt.Sprintf("%q %v", out, err)
		}
		return ""
	})

	const deny = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}}
`
	for i := range n {
		verb, want := "apply", "fail"
		if i%2 == 1 {
			verb, want = "delete", "ok"
		}
		total, cli := m.timeChange(b, src, target, want, deny, "ctl", verb, "-f", "-")
		a.policyRuns, a.policyCLI = append(a.policyRuns, total), append(a.policyCLI, cli)
	}

	const fromClients = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]}]
`
	m.apply(b, fromClients)
	for i := range n {
		role, want := "client", "ok"
		if i%2 == 1 {
			role, want = "", "fail"
		}
		manifest := m.relabelled(b, "y/a", map[string]string{"role": role})
		total, cli := m.timeChange(b, src, target, want, manifest, "ctl", "apply", "-f", "-")
		a.labelRuns, a.labelCLI = append(a.labelRuns, total), append(a.labelCLI, cli)
	}
	m.remove(b, fromClients)
	a.agentCPU, a.changes = m.agentsCPU(b)-cpuStart, 2*n
	a.syncs, a.renders = agentTimes(b, logFile, logStart)
	b.Logf("%s: apply to enforced, %d policy changes: p50 %v p99 %v; %d relabels: p50 %v p99 %v; "+
		"the apply command itself p50 %v; node1's felix syncs (%d): p50 %v p99 %v; compile+render (%d): p50 %v; agents' CPU %v a change", what,
		len(a.policyRuns), a.policyP50(), teststats.Quantile(a.policyRuns, 0.99), len(a.labelRuns), a.relabelP50(), teststats.Quantile(a.labelRuns, 0.99),
		a.cliP50(), len(a.syncs), teststats.Quantile(a.syncs, 0.5), teststats.Quantile(a.syncs, 0.99),
		len(a.renders), teststats.Quantile(a.renders, 0.5), a.cpuPerChange())
	return a
}

// report reports a's figures as metrics, their names prefixed.
func (a applyToEnforced) report(b *testing.B, prefix string) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(a.policyP50()), prefix+"policy-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(a.policyRuns, 0.99)), prefix+"policy-p99-ms")
	b.ReportMetric(ms(a.relabelP50()), prefix+"relabel-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(a.labelRuns, 0.99)), prefix+"relabel-p99-ms")
	b.ReportMetric(ms(a.cliP50()), prefix+"cli-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(a.syncs, 0.5)), prefix+"felix-sync-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(a.syncs, 0.99)), prefix+"felix-sync-p99-ms")
	b.ReportMetric(ms(a.cpuPerChange()), prefix+"agent-cpu-ms")
}

func (m *matrixLab) pod(t testing.TB, key string) matrixPod {
	for _, p := range m.pods {
		if p.key == key {
			return p
		}
	}
	t.Fatalf("no pod %s", key)
	return matrixPod{}
}

// timeChange starts a prober from src waiting for target's verdict to become want,
// runs tabby-lab args with stdin, and returns the time from the command's start to the
// first probe with the new verdict, and the command's own time.
func (m *matrixLab) timeChange(t testing.TB, src matrixPod, target, want, stdin string, args ...string) (total, cli time.Duration) {
	t.Helper()
	// A prober whose first probe already has the new verdict (a probe slower than its
	// 20 ms timeout on a loaded machine reads as "fail") is restarted, up to 10 times.
	var next func(what string) string
	for attempt := 1; ; attempt++ {
		var stop func()
		next, stop = m.startProber(t, src, target, want)
		defer stop()
		l := next("ready")
		if l == "ready" {
			break
		}
		if attempt == 10 {
			t.Fatalf("%s -> %s is %s before the change (prober said %q, 10 times)", src.key, target, want, l)
		}
		stop()
	}
	start := time.Now()
	if _, stderr, code := m.l.Run(stdin, args...); code != 0 {
		t.Fatalf("tabby-lab %s: %s", strings.Join(args, " "), stderr)
	}
	cli = time.Since(start)
	ns, err := strconv.ParseInt(next("flip to "+want), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, ns).Sub(start), cli
}

// startProber starts policyprobe until want from src to target and returns a function
// that reads its next line (failing the test after 10 s) and one that stops it.
func (m *matrixLab) startProber(t testing.TB, src matrixPod, target, want string) (next func(what string) string, stop func()) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", src.ns, m.probe, "until", want, "20ms", target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next = func(what string) string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("prober exited before %s", what)
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("%s -> %s: no %s within 10s", src.key, target, what)
		}
		return ""
	}
	return next, stop
}

// relabelled is a pod's WorkloadEndpoint with labels set (or removed, with ""), as YAML.
func (m *matrixLab) relabelled(t testing.TB, key string, labels map[string]string) string {
	w := m.getEndpoint(t, key)
	for k, v := range labels {
		if v == "" {
			delete(w.Labels, k)
		} else {
			w.Labels[k] = v
		}
	}
	return endpointYAML(t, w)
}

func fileSize(t testing.TB, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var (
	syncTookRE   = regexp.MustCompile(`msg="policy synced".* took=(\S+)`)
	renderTookRE = regexp.MustCompile(`msg="policy rendered".* took=(\S+)`)
)

// agentTimes reads the agent's log from offset: its felix sync and compile+render times.
func agentTimes(t testing.TB, path string, offset int64) (syncs, renders []time.Duration) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		for _, x := range []struct {
			re  *regexp.Regexp
			out *[]time.Duration
		}{{syncTookRE, &syncs}, {renderTookRE, &renders}} {
			if mt := x.re.FindStringSubmatch(sc.Text()); mt != nil {
				if d, err := time.ParseDuration(mt[1]); err == nil {
					*x.out = append(*x.out, d)
				}
			}
		}
	}
	return syncs, renders
}
