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
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/teststats"
)

// BenchmarkPolicyApplyToEnforced measures, in a live two-node lab (the policy matrix's
// workloads and servers), how long a single change takes from `tabbyctl apply` (run as
// `tabby-lab ctl apply`) to enforcement: a probe from y/a (node2) to x/a:80 (node1) runs
// every 5 ms (20 ms timeout) and the first probe with the new verdict ends the
// measurement. Two kinds of change, 20 of each: a Kubernetes NetworkPolicy denying x/a's
// ingress created or deleted, and y/a's WorkloadEndpoint relabelled in or out of the
// peers a policy allows. Printed, never asserted: p50/p99 from the apply command's start,
// the command's own time, and felix's sync time on node1 (from its debug log).
func BenchmarkPolicyApplyToEnforced(b *testing.B) {
	m := newMatrixLab(b)
	m.expectMatrix(b, "before the changes") // routes between the nodes are up
	src, dst := m.pod(b, "y/a"), m.pod(b, "x/a")
	target := fmt.Sprintf("tcp/%s:80", dst.addr)
	logFile := filepath.Join(m.l.StateDir(), "node1.log")
	logStart := fileSize(b, logFile)
	b.ResetTimer()

	const deny = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}}
`
	var policyRuns, policyCLI []time.Duration
	for i := range 20 {
		verb, want := "apply", "fail"
		if i%2 == 1 {
			verb, want = "delete", "ok"
		}
		total, cli := m.timeChange(b, src, target, want, deny, "ctl", verb, "-f", "-")
		policyRuns, policyCLI = append(policyRuns, total), append(policyCLI, cli)
	}

	m.apply(b, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]}]
`)
	var labelRuns, labelCLI []time.Duration
	for i := range 20 {
		role, want := "client", "ok"
		if i%2 == 1 {
			role, want = "", "fail"
		}
		manifest := m.relabelled(b, "y/a", map[string]string{"role": role})
		total, cli := m.timeChange(b, src, target, want, manifest, "ctl", "apply", "-f", "-")
		labelRuns, labelCLI = append(labelRuns, total), append(labelCLI, cli)
	}
	b.StopTimer()

	syncs, renders := agentTimes(b, logFile, logStart)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(teststats.Quantile(policyRuns, 0.5)), "policy-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(policyRuns, 0.99)), "policy-p99-ms")
	b.ReportMetric(ms(teststats.Quantile(labelRuns, 0.5)), "relabel-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(labelRuns, 0.99)), "relabel-p99-ms")
	b.ReportMetric(ms(teststats.Quantile(slices.Concat(policyCLI, labelCLI), 0.5)), "cli-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(syncs, 0.5)), "felix-sync-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(syncs, 0.99)), "felix-sync-p99-ms")
	b.Logf("apply to enforced, %d policy changes: p50 %v p99 %v; %d relabels: p50 %v p99 %v; "+
		"the apply command itself p50 %v; node1's felix syncs (%d): p50 %v p99 %v; compile+render (%d): p50 %v",
		len(policyRuns), teststats.Quantile(policyRuns, 0.5), teststats.Quantile(policyRuns, 0.99), len(labelRuns), teststats.Quantile(labelRuns, 0.5), teststats.Quantile(labelRuns, 0.99),
		teststats.Quantile(slices.Concat(policyCLI, labelCLI), 0.5), len(syncs), teststats.Quantile(syncs, 0.5), teststats.Quantile(syncs, 0.99), len(renders), teststats.Quantile(renders, 0.5))
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
	cmd := exec.Command("ip", "netns", "exec", src.ns, m.probe, "until", want, "20ms", target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
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
	if l := next("ready"); l != "ready" {
		t.Fatalf("%s -> %s is %s before the change (prober said %q)", src.key, target, want, l)
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
