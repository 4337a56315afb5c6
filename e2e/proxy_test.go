package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/teststats"
	"github.com/tabby-net/tabby/proxy"
)

// probeCounts runs svcprobe from a lab namespace and returns its outcome counts.
func probeCounts(t *testing.T, l *labtest.Lab, probe, from, proto string, n int, target string) map[string]int {
	t.Helper()
	out, stderr, code := l.Run("", "exec", from, "--", probe, proto, strconv.Itoa(n), "1s", target)
	if code != 0 {
		t.Fatalf("svcprobe %s %d %s from %s: exit %d: %s", proto, n, target, from, code, stderr)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			counts[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	return counts
}

// proxyModes are the agent's Service proxy modes: the lab tests of Services run in each.
var proxyModes = []string{"nftables", "iptables"}

// otherModeLeftovers plants, in a node before its agent starts, what the other proxy mode
// would have left there (a node switched from it): the agent must remove it, which
// checkProxyMode sees.
var otherModeLeftovers = map[string]string{
	"iptables": "nft add table ip tabby\nnft add map ip tabby service-ips '{ type ipv4_addr . inet_proto . inet_service : verdict ; }'\n",
	"nftables": "iptables-nft -t nat -N " + proxy.IPTChainServices + "\niptables-nft -t nat -A PREROUTING -m comment --comment tby:hook -j " + proxy.IPTChainServices + "\n",
}

// forEachProxyMode runs test as a subtest per proxy mode, with an agent script (for
// tabby-lab up --agent-binary) that runs the agent in that mode, after planting the other
// mode's leftovers.
func forEachProxyMode(t *testing.T, test func(t *testing.T, mode, agent string)) {
	for _, mode := range proxyModes {
		t.Run(mode, func(t *testing.T) {
			labtest.Need(t)
			agent := labtest.AgentScript(t, append(slices.Clone(labtest.FastBGP), "--proxy-mode", mode)...)
			wrapper := filepath.Join(t.TempDir(), "agent")
			script := "#!/bin/sh\nset -e\n" + otherModeLeftovers[mode] + "exec " + agent + ` "$@"` + "\n"
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			test(t, mode, wrapper)
		})
	}
}

// checkProxyIPv6 fails the test unless node's agent balances IPv6 too: the ip6 tabby
// table, or the services chain in ip6tables' nat table (the lab's nodes have IPv6).
func checkProxyIPv6(t *testing.T, l *labtest.Lab, node, mode string) {
	t.Helper()
	if mode == "nftables" {
		if out, _, code := l.Run("", "exec", node, "--", "nft", "list", "table", "ip6", "tabby"); code != 0 || !strings.Contains(out, "service-ips") {
			t.Errorf("%s: no ip6 tabby table with its service-ips map: %s", node, out)
		}
		return
	}
	if out, _, _ := l.Run("", "exec", node, "--", "ip6tables-nft-save", "-t", "nat"); !strings.Contains(out, ":"+proxy.IPTChainServices+" ") {
		t.Errorf("%s: no %s chain in ip6tables' nat table:\n%s", node, proxy.IPTChainServices, out)
	}
}

// checkProxyMode fails the test unless node's Services are in mode's rules alone (the
// other mode's leftovers removed): the nftables table ip tabby, or tby-k- chains in the
// nat table of either iptables backend;
// and unless the agent says so in tabby_proxy_info (the iptables mode on the backend the
// lab's nodes detect, nft: their tables hold nothing else).
func checkProxyMode(t *testing.T, l *labtest.Lab, node, mode string) {
	t.Helper()
	backend := map[string]string{"nftables": "nftables", "iptables": "nft"}[mode]
	if v := labtest.Metrics(t, l, node)["tabby_proxy_info{backend="+backend+",mode="+mode+"}"]; v != 1 {
		t.Errorf("%s: tabby_proxy_info of mode %s, backend %s: %v, want 1", node, mode, backend, v)
	}
	table, _, code := l.Run("", "exec", node, "--", "nft", "list", "table", "ip", "tabby")
	var chains string
	for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
		out, _, _ := l.Run("", "exec", node, "--", save, "-t", "nat")
		chains += out
	}
	hasTable, hasChains := code == 0 && strings.Contains(table, "service-ips"), strings.Contains(chains, ":"+proxy.IPTChainServices+" ")
	if hasTable != (mode == "nftables") || hasChains != (mode == "iptables") {
		t.Errorf("%s in proxy mode %s: nftables table %v, iptables tby-k- chains %v", node, mode, hasTable, hasChains)
	}
}

// TestServiceProxyClusterIP load-balances a ClusterIP Service in a two-node lab through
// each agent's proxy, in each mode (nftables table, iptables chains): from a workload on
// the other node 300 connections spread over the 3 endpoints (chi-square, 2 degrees of
// freedom, p = 0.001: 13.8), UDP too; from a node itself (the OUTPUT path); a workload
// reaching its own Service lands on itself too (hairpin); ClientIP affinity keeps a
// client on one endpoint, and after its timeoutSeconds lets it spread again; a Service without endpoints refuses at once (TCP reset, ICMP
// port unreachable), never a silent timeout; an endpoint deleted gets no new connections.
func TestServiceProxyClusterIP(t *testing.T) { forEachProxyMode(t, testServiceProxyClusterIP) }

func testServiceProxyClusterIP(t *testing.T, mode, agent string) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", agent)
	l.Apply(labtest.Pool)
	webs := []struct{ name, node string }{{"web1", "node1"}, {"web2", "node2"}, {"web3", "node1"}}
	for _, w := range webs {
		l.OK("workload", "add", w.node, "shop/"+w.name, "--labels", "app=web")
		l.StartExec(t, "shop/"+w.name, probe, "serve", w.name, "8080")
	}
	l.OK("workload", "add", "node2", "shop/client")
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.20.1
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080}
  - {name: echo, protocol: UDP, port: 81, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIP: 10.96.20.2
  selector: {app: nothing}
  ports: [{name: http, protocol: TCP, port: 80}, {name: echo, protocol: UDP, port: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: shop}
spec:
  clusterIP: 10.96.20.3
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: brief, namespace: shop}
spec:
  clusterIP: 10.96.20.4
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
`)
	names := []string{"web1", "web2", "web3"}
	labtest.Poll(t, "every endpoint answers through the ClusterIP", 60*time.Second, func() string {
		c := probeCounts(t, l, probe, "shop/client", "tcp", 30, "10.96.20.1:80")
		for _, n := range names {
			if c[n] == 0 {
				return fmt.Sprint(c)
			}
		}
		return ""
	})

	for _, node := range []string{"node1", "node2"} {
		checkProxyMode(t, l, node, mode)
		checkProxyIPv6(t, l, node, mode)
	}

	c := probeCounts(t, l, probe, "shop/client", "tcp", 300, "10.96.20.1:80")
	if got := c["web1"] + c["web2"] + c["web3"]; got != 300 {
		t.Errorf("300 connections from node2's workload: %v", c)
	}
	if x := teststats.ChiSquare(c, names, 300); x > 13.8 {
		t.Errorf("300 connections spread %v: chi-square %.1f > 13.8 (p = 0.001)", c, x)
	}
	t.Logf("300 TCP connections from another node's workload: %v", c)
	u := probeCounts(t, l, probe, "shop/client", "udp", 60, "10.96.20.1:81")
	if got := u["web1"] + u["web2"] + u["web3"]; got != 60 || len(u) != 3 {
		t.Errorf("60 UDP queries: %v, want every one answered, by all 3", u)
	}
	for _, node := range []string{"node1", "node2"} {
		if c := probeCounts(t, l, probe, node, "tcp", 30, "10.96.20.1:80"); c["web1"]+c["web2"]+c["web3"] != 30 {
			t.Errorf("30 connections from %s itself: %v", node, c)
		}
	}
	// Hairpin: web1 through its own Service reaches every endpoint, itself among them.
	if c := probeCounts(t, l, probe, "shop/web1", "tcp", 60, "10.96.20.1:80"); c["web1"] == 0 || c["web1"]+c["web2"]+c["web3"] != 60 {
		t.Errorf("60 connections from web1 to its own Service: %v, want all answered, some by web1 itself", c)
	}

	// ClientIP affinity: every connection of the client lands where its first did.
	labtest.Poll(t, "the sticky Service answers", 30*time.Second, func() string {
		if c := probeCounts(t, l, probe, "shop/client", "tcp", 1, "10.96.20.3:80"); c["web1"]+c["web2"]+c["web3"] != 1 {
			return fmt.Sprint(c)
		}
		return ""
	})
	if c := probeCounts(t, l, probe, "shop/client", "tcp", 30, "10.96.20.3:80"); len(c) != 1 || c["web1"]+c["web2"]+c["web3"] != 30 {
		t.Errorf("30 connections with ClientIP affinity: %v, want all to one endpoint", c)
	}

	// Affinity expires: a client idle for longer than timeoutSeconds (2 s) is free to
	// land elsewhere, while the connections of one burst still stick. With 3 endpoints,
	// ten idle spells landing on one endpoint is a chance of 1 in 20,000.
	seen := map[string]bool{}
	labtest.Poll(t, "the 2 s affinity lets the client spread again after it", 90*time.Second, func() string {
		time.Sleep(3 * time.Second) // idle past the timeout: the behaviour under test
		c := probeCounts(t, l, probe, "shop/client", "tcp", 5, "10.96.20.4:80")
		if len(c) != 1 || c["web1"]+c["web2"]+c["web3"] != 5 {
			t.Errorf("5 connections in a burst with ClientIP affinity: %v, want all to one endpoint", c)
		}
		for name := range c {
			seen[name] = true
		}
		if len(seen) < 2 {
			return fmt.Sprintf("every burst after an idle spell landed on %v", seen)
		}
		return ""
	})

	// No endpoints: refused at once, over TCP and UDP, never a timeout.
	if c := probeCounts(t, l, probe, "shop/client", "tcp", 10, "10.96.20.2:80"); c["refused"] != 10 {
		t.Errorf("10 connections to a Service without endpoints: %v, want 10 refused", c)
	}
	// UDP's refusal is an ICMP port unreachable, which the kernel sends at most 6 at a
	// burst per destination (then 1 a second: icmp_ratelimit), as for kube-proxy's REJECT.
	if c := probeCounts(t, l, probe, "shop/client", "udp", 5, "10.96.20.2:81"); c["refused"] != 5 {
		t.Errorf("5 UDP queries to a Service without endpoints: %v, want 5 refused", c)
	}

	// An endpoint gone: no new connection reaches it.
	l.OK("workload", "del", "shop/web3")
	labtest.Poll(t, "web3 out of the Service", 30*time.Second, func() string {
		c := probeCounts(t, l, probe, "shop/client", "tcp", 60, "10.96.20.1:80")
		if c["web3"] != 0 || c["web1"]+c["web2"] != 60 {
			return fmt.Sprint(c)
		}
		return ""
	})
}
