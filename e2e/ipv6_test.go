package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/internal/testenv"
)

// TestDualStack: a two-node lab up with --ipv6 (default pools of both families). Each
// node has an IPv4 and an IPv6 session to the other, shown in node status; each learns the
// other's IPv4 block via its IPv4 address and its IPv6 block via its IPv6 address, from
// the session of that family; a workload on node1 reaches one on node2 over both (ping and
// TCP). An IPv6 policy applies across the nodes: a policy on b allowing TCP only from the
// IPv4 pool denies a's IPv6 connections (IPv4 ones pass), then one allowing only the IPv6
// pool lets them through (IPv4 ones now denied), and without policy both pass again.
func TestDualStack(t *testing.T) {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "ping", Package: "iputils-ping"}, testenv.Tool{Cmd: "ip6tables-nft-restore", Package: "iptables"}, testenv.Tool{Cmd: "ipset", Package: "ipset"})
	m := &matrixLab{l: labtest.New(t), probe: labtest.Build(t, "./testdata/policyprobe", "policyprobe")}
	l := m.l
	l.OK("up", "--nodes", "2", "--ipv6")
	l.Apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: ds}\n")
	l.OK("workload", "add", "node1", "ds/a", "--labels", "pod=a")
	l.OK("workload", "add", "node2", "ds/b", "--labels", "pod=b")
	a4, a6 := l.WorkloadIPs("ds", "a")
	b4, b6 := l.WorkloadIPs("ds", "b")
	st := l.State()
	addr4 := map[string]string{}
	addr6 := map[string]string{}
	for _, n := range st.Nodes {
		addr4[n.Name], addr6[n.Name] = n.Address.Addr().String(), n.Address6.Addr().String()
	}

	// Each family over its own session, one route each.
	labtest.Poll(t, "each node learns the other's blocks of both families", 40*time.Second, func() string {
		for _, c := range []struct {
			node, peer string
			ips        []netip.Addr
		}{{"node1", "node2", []netip.Addr{b4, b6}}, {"node2", "node1", []netip.Addr{a4, a6}}} {
			routes := l.GatewayRoutes(c.node)
			maps.Copy(routes, l.GatewayRoutes6(c.node))
			want := map[string]string{labtest.BlockOf(c.ips[0]): addr4[c.peer], labtest.BlockOf6(c.ips[1]): addr6[c.peer]}
			for dst, via := range want {
				if routes[dst] != via {
					return fmt.Sprintf("%s: route to %s via %q, want %s; routes %v", c.node, dst, routes[dst], via, routes)
				}
			}
		}
		return ""
	})
	var status nodestatus.Status
	labtest.Poll(t, "node1's status: an IPv4 and an IPv6 session to node2, one prefix received on each", 30*time.Second, func() string {
		out, stderr, code := l.Tabbyctl("node1", "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"), "-o", "json")
		if code != 0 {
			return stderr
		}
		if err := json.Unmarshal([]byte(out), &status); err != nil {
			return err.Error()
		}
		var got []string
		for _, p := range status.Peers {
			got = append(got, fmt.Sprintf("%s %s %d", p.Address, p.State, p.Received))
		}
		want := []string{addr4["node2"] + " Established 1", addr6["node2"] + " Established 1"}
		if !slices.Equal(got, want) || status.Address6 != addr6["node1"] {
			return fmt.Sprintf("peers %q, want %q; address6 %q", got, want, status.Address6)
		}
		return ""
	})
	text := l.OK("exec", "node1", "--", labtest.Bin(t, "tabbyctl"), "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
	if !strings.Contains(text, "IPv4 BGP status") || !strings.Contains(text, "IPv6 BGP status") {
		t.Errorf("node status text has not both tables:\n%s", text)
	}

	l.Ping("ds/a", b6.String())
	l.Ping("ds/a", b4.String())
	m.serve(t, matrixPod{key: "ds/b", ns: l.NS("w-ds.b")})
	tcp4, tcp6 := "tcp/"+netip.AddrPortFrom(b4, 80).String(), "tcp/"+netip.AddrPortFrom(b6, 80).String()
	probe := func() string {
		out, err := exec.Command("ip", "netns", "exec", l.NS("w-ds.a"), m.probe, "probe", "600ms", tcp4, tcp6).Output()
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "; ")
	}
	expect := func(what, v4, v6 string) {
		t.Helper()
		want := []string{tcp4 + " " + v4, tcp6 + " " + v6}
		slices.Sort(want)
		labtest.Poll(t, what, 20*time.Second, func() string {
			if got := probe(); got != strings.Join(want, "; ") {
				return "got " + got
			}
			return ""
		})
	}
	expect("TCP from a to b over both families, no policy", "ok", "ok")

	onlyFrom := func(cidr string) string {
		return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-ingress, namespace: ds}
spec:
  selector: pod == 'b'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {nets: [%q]}}]
`, cidr)
	}
	l.Apply(onlyFrom("10.244.0.0/16"))
	expect("a policy allowing only the IPv4 pool denies IPv6 across nodes", "ok", "fail")
	l.Apply(onlyFrom("fd00:10:244::/64"))
	expect("a policy allowing only the IPv6 pool allows IPv6 across nodes", "fail", "ok")
	l.OK("ctl", "delete", "networkpolicy", "-n", "ds", "b-ingress")
	expect("TCP over both families again without policy", "ok", "ok")
}

// TestNATOutgoingIPv6: in a lab up with --ipv6, a workload of an IPv6 pool with
// natOutgoing pings an "internet" host's IPv6 address on a subnet of its own behind the
// lab's router, which has no route to the pool: the reply comes back only because node1
// masquerades the request. With natOutgoing off it does not, and the ip6tables nat table
// and inet6 sets of natOutgoing are gone from node1.
func TestNATOutgoingIPv6(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "1", "--ipv6", "--no-default-pools")
	pools := func(nat bool) string {
		return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:10:244::/64", natOutgoing: %v}
`, nat)
	}
	l.Apply(pools(true))
	l.OK("host", "add", "inet", "--subnet", "9")
	l.OK("workload", "add", "node1", "default/w1")
	inet := l.State().Host("inet").Address6.Addr()
	if !inet.IsValid() {
		t.Fatalf("host inet has no IPv6 address: %+v", l.State().Host("inet"))
	}
	pingInet := func() (string, bool) {
		out, stderr, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", inet.String())
		return out + stderr, code == 0
	}
	took := labtest.Poll(t, "w1 reaches the internet host over IPv6 through natOutgoing", 30*time.Second, func() string {
		if out, ok := pingInet(); !ok {
			return out
		}
		return ""
	})
	t.Logf("IPv6 natOutgoing in effect %v after the workload was added", took.Round(time.Millisecond))
	if out := l.OK("exec", "node1", "--", "ip6tables-save", "-t", "nat"); !strings.Contains(out, "--match-set tby-masq-pools6 src") {
		t.Errorf("node1's ip6tables nat table:\n%s", out)
	}

	l.Apply(pools(false))
	labtest.Poll(t, "IPv6 natOutgoing state gone from node1", 30*time.Second, func() string {
		out, _, _ := l.Run("", "exec", "node1", "--", "ipset", "list", "-n")
		if strings.Contains(out, "tby-masq-pools6") {
			return "ipset tby-masq-pools6 still there"
		}
		return ""
	})
	if out, ok := pingInet(); ok {
		t.Errorf("without natOutgoing the IPv6 reply came back across a router without pod routes: %s", out)
	}
}
