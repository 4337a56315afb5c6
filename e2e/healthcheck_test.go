package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
)

// Health check settings of the lab test.
const (
	healthInterval  = time.Second
	healthThreshold = 2
	// healthSlack is how late after its schedule a probe's result may be handled on a
	// loaded machine.
	healthSlack = 500 * time.Millisecond
)

// TestServiceHealthCheck: a Service with a TCP health check over 3 backends (web1 and
// web3 on node1, web2 on node2) survives a killed backend server. A client on node2
// loops connections through the ClusterIP and web3's server is killed. The goal is that
// web3 gets no new connection from interval × threshold plus one sync after the kill,
// and the test checks its two parts: node1 marks web3 failing (its record's since)
// within interval × threshold of the kill, and no connection that starts after node2's
// nftables no longer holds web3 fails or reaches web3 (that sync is logged, not
// bounded). The record and tabbyctl get endpoints say failing, not ready. Restarted,
// web3 gets connections again. The kill is swept over the probe schedule (0, 1.25, 2.5
// and 5.75 s into the client's loop, which starts as soon as web3 is back, so the first
// kill overlaps its return). In each proxy mode.
func TestServiceHealthCheck(t *testing.T) { forEachProxyMode(t, testServiceHealthCheck) }

func testServiceHealthCheck(t *testing.T, mode, agent string) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", agent)
	l.Apply(labtest.Pool)
	serve := func(name string) *exec.Cmd {
		srv := l.StartExec(t, "shop/"+name, probe, "serve", name, "8080")
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

	web3 := l.WorkloadIP("shop", "web3").String()
	// programmed says whether node2's Service proxy still sends connections to web3: a
	// DNAT map element, or a DNAT rule.
	programmed := func() bool {
		if mode == "iptables" {
			out, _, code := l.Run("", "exec", "node2", "--", "iptables-nft-save", "-t", "nat")
			return code == 0 && strings.Contains(out, "--to-destination "+web3+":8080")
		}
		out, _, code := l.Run("", "exec", "node2", "--", "nft", "list", "table", "ip", "tabby")
		return code == 0 && strings.Contains(out, web3+" . 8080")
	}
	detect := healthInterval * healthThreshold
	for _, delay := range []time.Duration{0, 1250 * time.Millisecond, 2500 * time.Millisecond, 5750 * time.Millisecond} {
		loop := l.Command("exec", "shop/client", "--", probe, "loop", (delay + detect + 4*time.Second).String(), "1s", "10.96.21.1:80")
		var out strings.Builder
		loop.Stdout = &out
		if err := loop.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay) // the kill's moment in the probe schedule, not a wait for a condition
		killed := time.Now()
		servers["web3"].Process.Kill()
		servers["web3"].Wait()
		labtest.Poll(t, "node2 drops web3", 30*time.Second, func() string {
			if programmed() {
				return "web3 still in node2's table"
			}
			return ""
		})
		synced := time.Now() // node2 dropped web3 at this moment or a little before
		if err := loop.Wait(); err != nil {
			t.Fatalf("client loop: %v", err)
		}
		counts, after := map[string]int{}, map[string]int{}
		var lastBad time.Time
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
			if at.After(synced) {
				after[f[1]]++
			}
		}
		var rec api.EndpointHealth
		if y, _, code := l.Tabbyctl("node1", "get", "endpointhealths", "-n", "shop", "web.web3", "-o", "json"); code != 0 || json.Unmarshal([]byte(y), &rec) != nil {
			t.Fatalf("web3's record: %s", y)
		}
		failed := rec.Spec.Since.Sub(killed)
		t.Logf("kill %v into the loop: outcomes %v; web3 failing %v after the kill, out of node2's table %v later; last failure %v after the kill",
			delay, counts, failed.Round(time.Millisecond), synced.Sub(rec.Spec.Since).Round(time.Millisecond), lastBad.Sub(killed).Round(time.Millisecond))
		if rec.Spec.Passing || failed < detect-healthInterval || failed > detect+healthSlack {
			t.Errorf("kill %v into the loop: web3's record says passing %v since %v after the kill, want failing within (%v, %v]",
				delay, rec.Spec.Passing, failed, detect-healthInterval, detect+healthSlack)
		}
		total := 0
		for _, n := range after {
			total += n
		}
		if after["web1"] == 0 || after["web2"] == 0 || after["web1"]+after["web2"] != total {
			t.Errorf("kill %v into the loop: connections once node2 dropped web3: %v, want web1 and web2 only", delay, after)
		}
		if !strings.Contains(rec.Spec.Reason, "refused") || rec.Spec.Node != "node1" {
			t.Errorf("web3's record after its server was killed: %+v", rec.Spec)
		}
		eps, _, _ := l.Tabbyctl("node2", "get", "endpoints", "-n", "shop", "web", "-o", "wide")
		for _, line := range strings.Split(eps, "\n") {
			if f := strings.Fields(line); len(f) >= 8 && f[7] == "web3" && (f[3] != "false" || f[4] != "false" || f[5] != "failing") {
				t.Errorf("tabbyctl get endpoints shows web3 as %v, want not ready, not serving, failing:\n%s", f[3:6], eps)
			} else if len(f) >= 8 && f[7] != "web3" && f[7] != "WORKLOAD" && f[3] != "true" {
				t.Errorf("tabbyctl get endpoints shows %s not ready:\n%s", f[7], eps)
			}
		}
		if !strings.Contains(eps, "web3") {
			t.Errorf("tabbyctl get endpoints does not list web3:\n%s", eps)
		}
		servers["web3"] = serve("web3")
		backInService(fmt.Sprintf("web3 back after the kill %v into the loop", delay))
	}
	// node1 probes web1 and web3 (node2 probes web2): both passing, its failures counted.
	labtest.Poll(t, "node1's probe metrics", 10*time.Second, func() string {
		m := labtest.Metrics(t, l, "node1")
		passing, failing := m[`tabby_endpoints_health_checked{state=passing}`], m[`tabby_endpoints_health_checked{state=failing}`]
		pass, fail := m[`tabby_endpoint_probes_total{check=tcp,result=pass}`], m[`tabby_endpoint_probes_total{check=tcp,result=fail}`]
		if passing != 2 || failing != 0 || pass == 0 || fail < 4*healthThreshold {
			return fmt.Sprintf("endpoints passing %v, failing %v; probes passed %v, failed %v", passing, failing, pass, fail)
		}
		return ""
	})
}
