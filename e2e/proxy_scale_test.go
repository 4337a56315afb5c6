package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestServiceProxyScaling scales a Service's endpoints up and down while a client on the
// other node opens a connection every 20 ms through its ClusterIP, in each proxy mode:
// every endpoint's server runs throughout, and the Service gains or loses endpoints by
// its selector, so every connection must reach a ready endpoint; none may be refused,
// time out or fail. The changes come 0, 1 and 2 s apart, and the extra endpoints must
// have answered while they were in (the scaling happened under the client).
func TestServiceProxyScaling(t *testing.T) { forEachProxyMode(t, testServiceProxyScaling) }

func testServiceProxyScaling(t *testing.T, mode, agent string) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", agent)
	l.Apply(labtest.Pool)
	webs := []struct{ name, node, tier string }{
		{"web1", "node1", "base"}, {"web2", "node2", "base"}, {"web3", "node1", "extra"}, {"web4", "node2", "extra"},
	}
	for _, w := range webs {
		l.OK("workload", "add", w.node, "shop/"+w.name, "--labels", "app=web,tier="+w.tier)
		l.StartExec(t, "shop/"+w.name, probe, "serve", w.name, "8080")
	}
	l.OK("workload", "add", "node2", "shop/client")
	service := func(selector string) string {
		return `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.22.1
  selector: ` + selector + `
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
`
	}
	base, all := service("{app: web, tier: base}"), service("{app: web}")
	l.Apply(base)
	labtest.Poll(t, "the base endpoints answer", 60*time.Second, func() string {
		c := probeCounts(t, l, probe, "shop/client", "tcp", 20, "10.96.22.1:80")
		if c["web1"] == 0 || c["web2"] == 0 || c["web1"]+c["web2"] != 20 {
			return fmt.Sprint(c)
		}
		return ""
	})

	for _, gap := range []time.Duration{0, time.Second, 2 * time.Second} {
		loop := l.Command("exec", "shop/client", "--", probe, "loop", (4*gap + 3*time.Second).String(), "1s", "10.96.22.1:80")
		var out strings.Builder
		loop.Stdout = &out
		if err := loop.Start(); err != nil {
			t.Fatal(err)
		}
		// Up, down, up, down: each change gap apart (the timing under test), the last
		// one leaving the base endpoints.
		for range 2 {
			l.Apply(all)
			time.Sleep(gap)
			l.Apply(base)
			time.Sleep(gap)
		}
		// Up again until an extra endpoint has answered the loop, then down for good.
		l.Apply(all)
		labtest.Poll(t, "an extra endpoint answers", 30*time.Second, func() string {
			if c := probeCounts(t, l, probe, "shop/client", "tcp", 20, "10.96.22.1:80"); c["web3"]+c["web4"] == 0 {
				return fmt.Sprint(c)
			}
			return ""
		})
		l.Apply(base)
		if err := loop.Wait(); err != nil {
			t.Fatalf("client loop: %v", err)
		}
		counts := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Fatalf("client loop printed %q", line)
			}
			counts[f[1]]++
		}
		bad := 0
		for outcome, n := range counts {
			if !strings.HasPrefix(outcome, "web") {
				bad += n
			}
		}
		t.Logf("changes %v apart: %v", gap, counts)
		if bad > 0 || counts["web1"] == 0 || counts["web2"] == 0 {
			t.Errorf("changes %v apart: outcomes %v, want every connection answered by an endpoint", gap, counts)
		}
	}
	// Scaled down: only the base endpoints answer.
	labtest.Poll(t, "the extra endpoints out", 30*time.Second, func() string {
		if c := probeCounts(t, l, probe, "shop/client", "tcp", 30, "10.96.22.1:80"); c["web1"]+c["web2"] != 30 {
			return fmt.Sprint(c)
		}
		return ""
	})
}
