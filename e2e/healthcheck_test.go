package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// Health check settings of the lab test: a killed server must be out of every proxy
// within interval × threshold plus one sync (healthSync: the record's write, the watch
// on every node and the nftables change, with room for a loaded machine).
const (
	healthInterval  = time.Second
	healthThreshold = 2
	healthSync      = 2 * time.Second
)

// TestServiceHealthCheck: a Service with a TCP health check over 3 backends (web1 and
// web3 on node1, web2 on node2) survives a killed backend server. A client on node2
// loops connections through the ClusterIP; web3's server is killed, and from interval
// × threshold + one sync after the kill no connection fails and none reaches web3; its
// record in etcd says failing. Restarted, web3 gets connections again. The kill is swept
// over the probe schedule (0, 1.25, 2.5 and 5.75 s into the client's loop, which starts
// as soon as web3 is back, so the first kill overlaps its return).
func TestServiceHealthCheck(t *testing.T) {
	labtest.Need(t)
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	serve := func(name string) *exec.Cmd {
		srv := l.Command("exec", "shop/"+name, "--", probe, "serve", name, "8080")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		return srv
	}
	servers := map[string]*exec.Cmd{}
	for _, w := range []struct{ name, node string }{{"web1", "node1"}, {"web2", "node2"}, {"web3", "node1"}} {
		l.OK("workload", "add", w.node, "shop/"+w.name, "--labels", "app=web")
		servers[w.name] = serve(w.name)
	}
	l.OK("workload", "add", "node2", "shop/client")
	l.Apply(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {tabby.io/health-check: tcp, tabby.io/health-check-interval: %s, tabby.io/health-check-threshold: "%d"}
spec:
  clusterIP: 10.96.21.1
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
`, healthInterval, healthThreshold))
	backInService := func(what string) {
		labtest.Poll(t, what, 60*time.Second, func() string {
			c := probeCounts(t, l, probe, "shop/client", "tcp", 30, "10.96.21.1:80")
			if c["web1"] == 0 || c["web2"] == 0 || c["web3"] == 0 || c["web1"]+c["web2"]+c["web3"] != 30 {
				return fmt.Sprint(c)
			}
			return ""
		})
	}
	backInService("every endpoint answers through the ClusterIP")
	record := func() string {
		out, _, _ := l.Tabbyctl("node1", "get", "endpointhealths", "-n", "shop", "web.web3", "-o", "yaml")
		return out
	}
	labtest.Poll(t, "web3's record says passing", 30*time.Second, func() string {
		if r := record(); !strings.Contains(r, "passing: true") || !strings.Contains(r, "node: node1") {
			return r
		}
		return ""
	})

	window := healthInterval*healthThreshold + healthSync
	for _, delay := range []time.Duration{0, 1250 * time.Millisecond, 2500 * time.Millisecond, 5750 * time.Millisecond} {
		loop := l.Command("exec", "shop/client", "--", probe, "loop", (delay + window + 2*time.Second).String(), "1s", "10.96.21.1:80")
		var out strings.Builder
		loop.Stdout = &out
		if err := loop.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay) // the kill's moment in the probe schedule, not a wait for a condition
		killed := time.Now()
		servers["web3"].Process.Kill()
		servers["web3"].Wait()
		if err := loop.Wait(); err != nil {
			t.Fatalf("client loop: %v", err)
		}
		var lastBad time.Time
		counts := map[string]int{}
		after := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Fatalf("client loop printed %q", line)
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			at := time.Unix(0, ns)
			counts[f[1]]++
			if at.After(killed) && f[1] != "web1" && f[1] != "web2" {
				lastBad = at
			}
			if at.After(killed.Add(window)) {
				after[f[1]]++
			}
		}
		gap := time.Duration(0)
		if !lastBad.IsZero() {
			gap = lastBad.Sub(killed)
		}
		t.Logf("kill %v into the loop: outcomes %v; last failure %v after the kill (allowed: %v)", delay, counts, gap, window)
		total := 0
		for _, n := range after {
			total += n
		}
		if after["web1"] == 0 || after["web2"] == 0 || after["web1"]+after["web2"] != total {
			t.Errorf("kill %v into the loop: connections from %v after the kill: %v, want web1 and web2 only", delay, window, after)
		}
		if r := record(); !strings.Contains(r, "passing: false") || !strings.Contains(r, "refused") {
			t.Errorf("web3's record after its server was killed:\n%s", r)
		}
		servers["web3"] = serve("web3")
		backInService(fmt.Sprintf("web3 back after the kill %v into the loop", delay))
	}
}
