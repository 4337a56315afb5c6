package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// curl fetches url inside node's namespace: the HTTP code and the body.
func curl(t testing.TB, l *labtest.Lab, node, url string) (int, string) {
	t.Helper()
	out, stderr, code := l.Run("", "exec", node, "--", "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url)
	if code != 0 {
		return 0, stderr
	}
	i := strings.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	if err != nil {
		t.Fatalf("curl %s: no status in %q", url, out)
	}
	return status, out[:i]
}

// metrics scrapes node's agent and returns its series as name{labels} -> value, where
// labels are k=v joined by commas in the order the exposition gives them.
func metrics(t testing.TB, l *labtest.Lab, node string) map[string]float64 {
	t.Helper()
	code, body := curl(t, l, node, "http://127.0.0.1:9091/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics on %s: %d %s", node, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, lp := range m.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// TestHealthAndMetrics checks the agent's health and metrics endpoints in a lab node:
// /liveness answers; /readiness is 200 "ready" once the node is ready; /metrics has tabby_
// series that move when a workload is attached and when a policy is applied; with the
// lab's etcd frozen for 0, 1, 2 and 5 s, readiness is 503 naming the datastore past the
// ping's window, and after each outage the agent is ready again and a policy written at
// once reaches its snapshot.
func TestHealthAndMetrics(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "curl", Package: "curl"})
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))

	// up returns once the agents registered their nodes; their HTTP listeners may come a
	// moment later.
	labtest.Poll(t, "liveness answers 200", 10*time.Second, func() string {
		if code, body := curl(t, l, "node1", "http://127.0.0.1:9099/liveness"); code != 200 {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	waitReadiness := func(what string, want int, wantBody string) {
		t.Helper()
		took := labtest.Poll(t, what, 60*time.Second, func() string {
			code, body := curl(t, l, "node1", "http://127.0.0.1:9099/readiness")
			if code != want || !strings.Contains(body, wantBody) {
				return fmt.Sprintf("%d %s", code, body)
			}
			return ""
		})
		t.Logf("%s after %v", what, took.Round(time.Millisecond))
	}
	waitReady := func(what string) { waitReadiness(what, 200, "ready") }
	waitReady("node1 ready")

	before := metrics(t, l, "node1")
	for _, series := range []string{
		`tabby_snapshot_resources{kind=workloadendpoints}`, `tabby_routes_programmed{}`, `tabby_iptables_restores_total{}`,
		`tabby_iptables_lines_written_total{}`, `tabby_ipset_members{}`, `tabby_bgp_peers{state=Established}`,
		`tabby_bgp_routes_advertised{}`, `tabby_bgp_routes_learned{}`, `tabby_snapshot_resyncs_total{}`,
		`tabby_dataplane_apply_duration_seconds{writer=routes}_count`, `tabby_dataplane_apply_duration_seconds{writer=iptables}_count`,
		`tabby_datastore_request_duration_seconds{method=Range,result=ok}_count`,
	} {
		if _, ok := before[series]; !ok {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if got := before[`tabby_bgp_peers{state=Established}`]; got != 1 {
		t.Errorf("tabby_bgp_peers{state=Established} = %v, want 1 (node2)", got)
	}

	// A workload: one more endpoint in the snapshot, one more route (and a block's blackhole).
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/w1")
	labtest.Poll(t, "metrics move with a workload", 30*time.Second, func() string {
		m := metrics(t, l, "node1")
		w, r := m[`tabby_snapshot_resources{kind=workloadendpoints}`], m[`tabby_routes_programmed{}`]
		if w != before[`tabby_snapshot_resources{kind=workloadendpoints}`]+1 || r < before[`tabby_routes_programmed{}`]+2 {
			return fmt.Sprintf("workloadendpoints %v routes %v (before %v, %v)", w, r,
				before[`tabby_snapshot_resources{kind=workloadendpoints}`], before[`tabby_routes_programmed{}`])
		}
		return ""
	})

	// A policy: in the snapshot, and written through iptables-restore.
	mid := metrics(t, l, "node1")
	l.Apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: metrics-probe}
spec:
  selector: all()
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
`)
	labtest.Poll(t, "metrics move with a policy", 30*time.Second, func() string {
		m := metrics(t, l, "node1")
		p := m[`tabby_snapshot_resources{kind=globalnetworkpolicies}`]
		r, lines := m[`tabby_iptables_restores_total{}`], m[`tabby_iptables_lines_written_total{}`]
		if p != mid[`tabby_snapshot_resources{kind=globalnetworkpolicies}`]+1 || r <= mid[`tabby_iptables_restores_total{}`] ||
			lines <= mid[`tabby_iptables_lines_written_total{}`] {
			return fmt.Sprintf("globalnetworkpolicies %v restores %v lines %v (before %v %v %v)", p, r, lines,
				mid[`tabby_snapshot_resources{kind=globalnetworkpolicies}`], mid[`tabby_iptables_restores_total{}`], mid[`tabby_iptables_lines_written_total{}`])
		}
		return ""
	})

	// The lab's etcd frozen for 0, 1, 2 and 5 s: past the ping's window readiness names
	// the datastore; thawed, the agent is ready again without a restart, and a change
	// written right after the outage reaches its snapshot.
	etcd := l.State().Etcd.Process
	if etcd == nil {
		t.Fatal("the lab records no etcd process")
	}
	frozen := false
	thaw := func() {
		if frozen {
			frozen = false
			if err := syscall.Kill(etcd.PID, syscall.SIGCONT); err != nil {
				t.Errorf("thaw etcd (pid %d): %v", etcd.PID, err)
			}
		}
	}
	t.Cleanup(thaw)
	for i, outage := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		if err := syscall.Kill(etcd.PID, syscall.SIGSTOP); err != nil {
			t.Fatalf("freeze etcd (pid %d): %v", etcd.PID, err)
		}
		frozen = true
		time.Sleep(outage) // the outage itself, not a wait for a condition
		if outage >= 5*time.Second {
			waitReadiness("node1 not ready with etcd frozen", 503, "datastore: unreachable")
		}
		thaw()
		name := fmt.Sprintf("after-outage-%d", i)
		l.Apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name + "}\nspec: {selector: all(), order: 1000}\n")
		labtest.Poll(t, "a policy written after a "+outage.String()+" outage in node1's snapshot", 30*time.Second, func() string {
			if got := metrics(t, l, "node1")[`tabby_snapshot_resources{kind=globalnetworkpolicies}`]; got != float64(2+i) {
				return fmt.Sprintf("globalnetworkpolicies %v, want %d", got, 2+i)
			}
			return ""
		})
		waitReady("node1 ready again after a " + outage.String() + " outage")
	}
}
