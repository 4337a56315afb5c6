package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// upstreamAddr is the first lab host's address on subnet 1: the test's upstream resolver.
const upstreamAddr = "172.31.1.200"

const webService = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.12.7
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
`

// TestClusterDNS runs the agents' node-local DNS in a two-node lab: workloads on both
// nodes resolve a Service by its short name (getent, through the resolv.conf the CNI
// result gave them) and by dig (A, SRV, PTR); a Service created resolves and a deleted one
// is NXDOMAIN again; a kube-system/kube-dns Service's address is served while it exists;
// a name outside the cluster is forwarded to an upstream in the lab
// (dnsmasq) and cached, so the upstream sees one query for many; with the upstream gone,
// cluster names still answer.
func TestClusterDNS(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "dig", Package: "dnsutils"}, testenv.Tool{Cmd: "dnsmasq", Package: "dnsmasq-base"})
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary",
		labtest.AgentScript(t, append([]string{"--dns-upstream", upstreamAddr}, labtest.FastBGP...)...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "shop/web1", "--labels", "app=web")
	l.OK("workload", "add", "node2", "shop/client")
	l.OK("workload", "add", "node1", "default/other")
	l.Apply(webService)

	for _, from := range []string{"shop/client", "shop/web1"} {
		labtest.Poll(t, "web resolves by its short name from "+from, 30*time.Second, func() string {
			if out, _, code := l.Run("", "exec", from, "--", "getent", "hosts", "web"); code != 0 || !strings.HasPrefix(out, "10.96.12.7 ") {
				return fmt.Sprintf("getent hosts web: exit %d %q", code, out)
			}
			return ""
		})
	}
	if out, _, code := l.Run("", "exec", "default/other", "--", "getent", "hosts", "web"); code == 0 {
		t.Errorf("a workload in namespace default resolved web (shop's) by its short name: %q", out)
	}
	checks := []struct{ args, want string }{
		{"+short web.shop.svc.cluster.local A", "10.96.12.7"},
		{"+short WeB.ShOp.svc.cluster.local A", "10.96.12.7"},
		{"+short _http._tcp.web.shop.svc.cluster.local SRV", "0 100 80 web.shop.svc.cluster.local."},
		{"+short -x 10.96.12.7", "web.shop.svc.cluster.local."},
		{"+short dns-version.cluster.local TXT", `"1.1.0"`},
	}
	for _, from := range []string{"shop/client", "default/other"} {
		for _, c := range checks {
			if got := labtest.Dig(t, l, from, strings.Fields(c.args)...); got != c.want {
				t.Errorf("from %s: dig %s = %q, want %q", from, c.args, got, c.want)
			}
		}
	}
	if got := labtest.Dig(t, l, "shop/client", "nope.shop.svc.cluster.local", "A"); !strings.Contains(got, "status: NXDOMAIN") {
		t.Errorf("a name that does not exist:\n%s", got)
	}

	// A Service created resolves; deleted, it is NXDOMAIN again.
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.12.8, ports: [{port: 443}]}
`)
	start := time.Now()
	labtest.Poll(t, "a new Service resolves", 30*time.Second, func() string {
		if got := labtest.Dig(t, l, "shop/client", "+short", "api.shop.svc.cluster.local"); got != "10.96.12.8" {
			return got
		}
		return ""
	})
	t.Logf("a new Service resolved %v after its apply", time.Since(start).Round(time.Millisecond))
	l.OK("ctl", "delete", "service", "api", "-n", "shop")
	labtest.Poll(t, "a deleted Service is NXDOMAIN", 30*time.Second, func() string {
		if got := labtest.Dig(t, l, "shop/client", "api.shop.svc.cluster.local"); !strings.Contains(got, "status: NXDOMAIN") {
			return got
		}
		return ""
	})

	// A kube-system/kube-dns Service names the cluster DNS address: every node serves it,
	// and the Service proxy leaves it alone (the Service has no endpoints: load-balanced,
	// it would be rejected). Deleted, the address leaves the nodes.
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports: [{name: dns, protocol: UDP, port: 53}, {name: dns-tcp, protocol: TCP, port: 53}]
`)
	for _, from := range []string{"shop/client", "shop/web1"} {
		labtest.Poll(t, "the kube-dns Service's address answers from "+from, 30*time.Second, func() string {
			if got := labtest.DigAt(t, l, "10.96.0.53", from, "+short", "web.shop.svc.cluster.local"); got != "10.96.12.7" {
				return got
			}
			if got := labtest.DigAt(t, l, "10.96.0.53", from, "+tcp", "+short", "web.shop.svc.cluster.local"); got != "10.96.12.7" {
				return "over TCP: " + got
			}
			return ""
		})
	}
	l.OK("ctl", "delete", "service", "kube-dns", "-n", "kube-system")
	for _, node := range []string{"node1", "node2"} {
		labtest.Poll(t, "10.96.0.53 leaves "+node+"'s lo", 30*time.Second, func() string {
			if out, _, _ := l.Run("", "exec", node, "--", "ip", "-4", "-o", "addr", "show", "dev", "lo"); strings.Contains(out, " 10.96.0.53/") {
				return out
			}
			return ""
		})
	}
	if got := labtest.DigAt(t, l, "10.96.0.53", "shop/client", "+short", "web.shop.svc.cluster.local"); !strings.HasPrefix(got, "dig failed") {
		t.Errorf("the deleted kube-dns Service's address still answers: %q", got)
	}
	if got := labtest.DigAt(t, l, "10.96.0.10", "shop/client", "+short", "web.shop.svc.cluster.local"); got != "10.96.12.7" {
		t.Errorf("the configured cluster DNS address after kube-dns went: %q", got)
	}

	// The upstream: dnsmasq on a lab host, logging every query it gets.
	l.OK("host", "add", "upstream")
	dir := t.TempDir()
	hosts, queries := filepath.Join(dir, "hosts"), filepath.Join(dir, "queries.log")
	if err := os.WriteFile(hosts, []byte("192.0.2.80 www.example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dnsmasq := l.Command("exec", "upstream", "--", "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--addn-hosts="+hosts,
		"--listen-address="+upstreamAddr, "--bind-interfaces", "--log-queries", "--log-facility="+queries, "--local-ttl=300")
	if err := dnsmasq.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			// Its pid is dnsmasq's (tabby-lab exec and ip netns exec exec it): pkill would
			// also reach every other dnsmasq on the machine, network namespaces share pids.
			dnsmasq.Process.Kill()
			dnsmasq.Wait()
		}
	}
	t.Cleanup(stop)
	labtest.Poll(t, "an outside name is forwarded to the upstream", 30*time.Second, func() string {
		if got := labtest.Dig(t, l, "shop/client", "+short", "www.example.test"); got != "192.0.2.80" {
			return got
		}
		return ""
	})
	for range 20 {
		if got := labtest.Dig(t, l, "shop/client", "+short", "www.example.test"); got != "192.0.2.80" {
			t.Fatalf("a cached outside name: %q; again in full:\n%s", got, labtest.Dig(t, l, "shop/client", "www.example.test"))
		}
	}
	if n := countQueries(t, queries, "www.example.test"); n != 1 {
		t.Errorf("the upstream saw %d queries for www.example.test from node2 for 21 lookups, want 1 (the rest from the cache)", n)
	}

	// The upstream gone: cluster names still answer.
	stop()
	if got := labtest.Dig(t, l, "shop/client", "+short", "web.shop.svc.cluster.local"); got != "10.96.12.7" {
		t.Errorf("with the upstream down, web = %q", got)
	}
	if got := labtest.Dig(t, l, "shop/client", "never-asked.example.test"); !strings.Contains(got, "status: SERVFAIL") {
		t.Errorf("with the upstream down, an outside name:\n%s", got)
	}
}

// countQueries counts dnsmasq's logged queries for name.
func countQueries(t *testing.T, log, name string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "query[A] "+name+" ")
}
