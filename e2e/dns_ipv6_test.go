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

// dnsAddr6 is the IPv6 DNS address the lab's agents serve beside the default ones.
const dnsAddr6 = "fd00:53::10"

// TestClusterDNSIPv6 runs the agents' node-local DNS on an IPv6 address in a dual-stack
// lab, node1 with the nftables Service proxy and node2 with the iptables one:
//   - workloads on both nodes, whose resolv.conf names only the IPv6 address (tabby-cni's
//     cluster_dns), resolve a dual-stack Service by its short name, and dig answers A and
//     AAAA over UDP and TCP there, untracked (no conntrack entry to it);
//   - a kube-system/kube-dns Service with only an IPv6 ClusterIP is served on both nodes
//     (neither proxy mode balances it away); deleted, the address leaves lo and its
//     sockets close;
//   - node1's agent restarted without the IPv6 address removes it from lo, and puts the new
//     one there, but keeps an IPv6 address someone else put on lo.
func TestClusterDNSIPv6(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "dig", Package: "dnsutils"}, testenv.Tool{Cmd: "conntrack", Package: "conntrack"},
		testenv.Tool{Cmd: "ip6tables-nft-restore", Package: "iptables"})
	// The agent's flags are read from a file per node at each start, so a restart can
	// change them: node1 runs the nftables proxy, node2 the iptables one.
	dir := t.TempDir()
	setFlags := func(node string, flags ...string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "flags-"+node), []byte(strings.Join(flags, " ")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dnsFlag := "--dns-addresses=10.96.0.10,169.254.20.10," + dnsAddr6
	setFlags("node1", dnsFlag, "--proxy-mode=nftables")
	setFlags("node2", dnsFlag, "--proxy-mode=iptables")
	agent := filepath.Join(dir, "agent")
	// tabby-lab starts the agent as "agent --node-name NODE ...".
	script := "#!/bin/sh\nexec " + labtest.Bin(t, "tabby-node") + ` "$@" ` + strings.Join(labtest.FastBGP, " ") + " $(cat " + dir + "/flags-$2)\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--ipv6", "--agent-binary", agent)
	l.Apply(serviceRanges6)
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIPs: ["fd00:96::20", 10.96.30.1]
  ports: [{name: http, protocol: TCP, port: 80}]
`)
	clients := map[string]string{"node1": "shop/client1", "node2": "shop/client2"}
	for node, w := range clients {
		l.OK("workload", "add", node, w, "--cluster-dns", dnsAddr6)
	}

	for node, w := range clients {
		if out := l.OK("exec", w, "--", "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver "+dnsAddr6+"\n") || strings.Contains(out, "169.254.20.10") {
			t.Errorf("%s's resolv.conf:\n%s", w, out)
		}
		labtest.Poll(t, "web resolves by its short name through "+dnsAddr6+" on "+node, 30*time.Second, func() string {
			if out, _, code := l.Run("", "exec", w, "--", "getent", "ahosts", "web"); code != 0 || !strings.Contains(out, "fd00:96::20 ") || !strings.Contains(out, "10.96.30.1 ") {
				return fmt.Sprintf("getent ahosts web: exit %d %q", code, out)
			}
			return ""
		})
		for _, c := range []struct{ args, want string }{
			{"+short web.shop.svc.cluster.local AAAA", "fd00:96::20"},
			{"+short web.shop.svc.cluster.local A", "10.96.30.1"},
			{"+tcp +short web.shop.svc.cluster.local AAAA", "fd00:96::20"},
			{"+tcp +short web.shop.svc.cluster.local A", "10.96.30.1"},
			{"+short -x fd00:96::20", "web.shop.svc.cluster.local."},
		} {
			if got := labtest.DigAt(t, l, dnsAddr6, w, strings.Fields(c.args)...); got != c.want {
				t.Errorf("from %s: dig @%s %s = %q, want %q", w, dnsAddr6, c.args, got, c.want)
			}
		}
		// Untracked: the queries above left no conntrack entry to the address, UDP or TCP.
		if out := l.OK("exec", node, "--", "conntrack", "-L", "-f", "ipv6", "-d", dnsAddr6); strings.Contains(out, dnsAddr6) {
			t.Errorf("%s: conntrack entries to %s:\n%s", node, dnsAddr6, out)
		}
		if out := l.OK("exec", node, "--", "ip6tables-nft-save", "-t", "raw"); !strings.Contains(out, "-A tby-raw-prerouting -d "+dnsAddr6+"/128 -p udp") {
			t.Errorf("%s: ip6tables raw lacks the NOTRACK of %s:\n%s", node, dnsAddr6, out)
		}
	}

	// kube-dns with an IPv6 ClusterIP alone: served on both nodes, not balanced (it has no
	// endpoints: balanced, a query would be refused); deleted, it leaves.
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIPs: ["fd00:96::a"]
  ports: [{name: dns, protocol: UDP, port: 53}, {name: dns-tcp, protocol: TCP, port: 53}]
`)
	for node, w := range clients {
		labtest.Poll(t, "the kube-dns Service's IPv6 address answers on "+node, 30*time.Second, func() string {
			if got := labtest.DigAt(t, l, "fd00:96::a", w, "+short", "web.shop.svc.cluster.local", "AAAA"); got != "fd00:96::20" {
				return got
			}
			if got := labtest.DigAt(t, l, "fd00:96::a", w, "+tcp", "+short", "web.shop.svc.cluster.local", "A"); got != "10.96.30.1" {
				return "over TCP: " + got
			}
			return ""
		})
	}
	l.OK("ctl", "delete", "service", "kube-dns", "-n", "kube-system")
	for node := range clients {
		labtest.Poll(t, "fd00:96::a leaves "+node+"'s lo and its sockets close", 30*time.Second, func() string {
			if out := l.OK("exec", node, "--", "ip", "-6", "-o", "addr", "show", "dev", "lo"); strings.Contains(out, " fd00:96::a/") {
				return out
			}
			if out := l.OK("exec", node, "--", "ss", "-Hlnut"); strings.Contains(out, "[fd00:96::a]:53") {
				return out
			}
			return ""
		})
	}
	if got := labtest.DigAt(t, l, "fd00:96::a", "shop/client1", "+short", "web.shop.svc.cluster.local"); !strings.HasPrefix(got, "dig failed") {
		t.Errorf("the deleted kube-dns Service's address still answers: %q", got)
	}
	if got := labtest.DigAt(t, l, dnsAddr6, "shop/client1", "+short", "web.shop.svc.cluster.local", "AAAA"); got != "fd00:96::20" {
		t.Errorf("the configured IPv6 DNS address after kube-dns went: %q", got)
	}

	// A restart without the IPv6 address: it goes, another program's IPv6 address stays.
	l.OK("agent", "kill", "node1")
	l.OK("exec", "node1", "--", "ip", "-6", "addr", "add", "fd00:53::99/128", "dev", "lo", "nodad")
	setFlags("node1", "--dns-addresses=10.96.0.10,169.254.20.10,fd00:53::11", "--proxy-mode=nftables")
	l.OK("agent", "start", "node1")
	labtest.Poll(t, "the restarted agent swaps "+dnsAddr6+" for fd00:53::11 on lo", 30*time.Second, func() string {
		out := l.OK("exec", "node1", "--", "ip", "-6", "-o", "addr", "show", "dev", "lo")
		if strings.Contains(out, " "+dnsAddr6+"/") || !strings.Contains(out, " fd00:53::11/128") {
			return out
		}
		return ""
	})
	if got := labtest.DigAt(t, l, "fd00:53::11", "shop/client1", "+short", "web.shop.svc.cluster.local", "AAAA"); got != "fd00:96::20" {
		t.Errorf("the new IPv6 DNS address after the restart: %q", got)
	}
	labtest.Steady(t, "another program's IPv6 address stays on node1's lo", 3*time.Second, 500*time.Millisecond, func() string {
		if out := l.OK("exec", "node1", "--", "ip", "-6", "-o", "addr", "show", "dev", "lo"); !strings.Contains(out, " fd00:53::99/128") {
			return out
		}
		return ""
	})
}
