package proxy

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProbability(t *testing.T) {
	for n, want := range map[int]string{1: "1.00000000000", 2: "0.50000000000", 3: "0.33333333349", 4: "0.25000000000", 5: "0.20000000019", 7: "0.14285714272"} {
		if got := Probability(n); got != want {
			t.Errorf("Probability(%d) = %s, want %s (as iptables-save prints it)", n, got, want)
		}
	}
}

func TestRenderIPTables(t *testing.T) {
	p := webPort(be("10.65.0.2", 8080), be("10.65.0.3", 8080), be("10.65.0.4", 8080), be("fd00::3", 8080))
	p.Affinity = 30 * time.Second
	p.Frontends = addrs("10.96.0.10", "192.0.2.7", "fd00:96::10")
	p.NodePort, p.NodePortFamilies = 30080, [2]bool{true, true}
	st := &LBState{Ports: []PortLB{p, dnsPort()}}
	ipt := RenderIPTables(st, RenderConfig{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16")}})
	svc := iptName(iptRoleService, p.Key, nil)
	ext := iptName(iptRoleExternal, p.Key, nil)
	sep := func(addr string) string { b := be(addr, 8080); return iptName(iptRoleEndpoint, p.Key, &b) }
	want := map[[2]string][]string{
		{"nat", IPTChainServices}: {
			"-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j " + svc,
			"-d 192.0.2.7/32 -p tcp -m tcp --dport 80 -j " + svc,
			"-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j " + IPTChainNodePorts,
		},
		{"nat", IPTChainNodePorts}: {"-p tcp -m tcp --dport 30080 -j " + ext},
		{"nat", ext}:               {"-j " + IPTChainMarkMasq, "-j " + svc},
		{"nat", svc}: {
			"-j " + IPTChainMasqOutside,
			"-m recent --rcheck --seconds 30 --reap --name " + sep("10.65.0.2") + " -j " + sep("10.65.0.2"),
			"-m recent --rcheck --seconds 30 --reap --name " + sep("10.65.0.3") + " -j " + sep("10.65.0.3"),
			"-m recent --rcheck --seconds 30 --reap --name " + sep("10.65.0.4") + " -j " + sep("10.65.0.4"),
			"-m statistic --mode random --probability 0.33333333349 -j " + sep("10.65.0.2"),
			"-m statistic --mode random --probability 0.50000000000 -j " + sep("10.65.0.3"),
			"-j " + sep("10.65.0.4"),
		},
		{"nat", sep("10.65.0.3")}: {
			"-s 10.65.0.3/32 -j " + IPTChainMarkMasq,
			"-p tcp -m recent --set --name " + sep("10.65.0.3") + " -j DNAT --to-destination 10.65.0.3:8080",
		},
		{"nat", IPTChainMasqOutside}: {"-s 10.65.0.0/16 -j RETURN", "-j " + IPTChainMarkMasq},
		{"nat", IPTChainMarkMasq}:    {"-j MARK --set-xmark 0x4000/0x4000"},
		{"nat", IPTChainPostrouting}: {"-m mark ! --mark 0x4000/0x4000 -j RETURN", "-j MARK --set-xmark 0x0/0x4000", "-j MASQUERADE --random-fully"},
		{"filter", IPTChainServices}: {
			"-m conntrack ! --ctstate NEW -j RETURN",
			"-d 10.96.0.53/32 -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable",
		},
	}
	for k, rules := range want {
		if got := strings.Join(ipt.Rules(k[0], k[1]), "\n"); got != strings.Join(rules, "\n") {
			t.Errorf("%s %s:\n%s\nwant\n%s", k[0], k[1], got, strings.Join(rules, "\n"))
		}
	}
	if n := len(ipt.Chains["nat"]); n != 3+1+1+3 { // fixed, Service, NodePort, endpoints
		t.Errorf("nat has %d chains besides the lists, want 8: %v", n, ipt.Chains["nat"])
	}

	// IPv6: its own frontends, the one IPv6 endpoint, ip6tables' words.
	v6 := RenderIPTables(st, RenderConfig{IPv6: true})
	b6 := be("fd00::3", 8080)
	sep6 := iptName(iptRoleEndpoint, p.Key, &b6)
	for k, rules := range map[[2]string][]string{
		{"nat", IPTChainServices}: {
			"-d fd00:96::10/128 -p tcp -m tcp --dport 80 -j " + svc,
			"-m addrtype --dst-type LOCAL ! -d ::1/128 -j " + IPTChainNodePorts,
		},
		{"nat", sep6}: {"-s fd00::3/128 -j " + IPTChainMarkMasq, "-p tcp -m recent --set --name " + sep6 + " -j DNAT --to-destination [fd00::3]:8080"},
		{"nat", svc}:  {"-m recent --rcheck --seconds 30 --reap --name " + sep6 + " -j " + sep6, "-j " + sep6},
		// The IPv4-only DNS Service has no IPv6 rule at all.
		{"filter", IPTChainServices}: {"-m conntrack ! --ctstate NEW -j RETURN"},
	} {
		if got := strings.Join(v6.Rules(k[0], k[1]), "\n"); got != strings.Join(rules, "\n") {
			t.Errorf("IPv6 %s %s:\n%s\nwant\n%s", k[0], k[1], got, strings.Join(rules, "\n"))
		}
	}
}

// TestIPTablesChainNames: every chain the iptables mode renders, for every role and with
// a long Service name, is tby-k- and its role (kube-proxy's, lower-cased), the per-port
// ones with 16 characters of hash, within the kernel's 28 characters.
func TestIPTablesChainNames(t *testing.T) {
	long := strings.Repeat("n", 63)
	local := PortLB{Key: PortKey{long, long, long, "TCP", true}, Protocol: "TCP", Port: 80, Frontends: addrs("192.0.2.20", "fd00:96::20"),
		Backends: []Backend{be("10.65.0.2", 8080), be("fd00::2", 8080)}, LocalBackends: []Backend{be("10.65.0.2", 8080), be("fd00::2", 8080)},
		NodePort: 30090, NodePortFamilies: [2]bool{true, true}, ExternalLocal: true, Affinity: time.Minute}
	empty := dnsPort()
	empty.Key.Name = "empty"
	st := &LBState{Ports: []PortLB{webPort(be("10.65.0.2", 8080)), local, empty}}
	fixed := regexp.MustCompile(`^tby-k-(services|nodeports|postrouting|mark-masq|masq-outside)$`)
	perPort := regexp.MustCompile(`^tby-k-(svc|sep|ext|svl)-[a-z2-7]{16}$`)
	roles := map[string]bool{}
	for _, v6 := range []bool{false, true} {
		ipt := RenderIPTables(st, RenderConfig{IPv6: v6, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16"), netip.MustParsePrefix("fd00::/64")}})
		for table, chains := range ipt.Tables() {
			for name := range chains {
				if len(name) > 28 || !strings.HasPrefix(name, IPTablesChainPrefix) || !fixed.MatchString(name) && !perPort.MatchString(name) {
					t.Errorf("%s chain %q: want tby-k- and a role, at most 28 characters", table, name)
				}
				role, _, _ := strings.Cut(strings.TrimPrefix(name, IPTablesChainPrefix), "-")
				roles[role] = true
			}
		}
	}
	for _, role := range []string{"services", "nodeports", "postrouting", "mark", "masq", iptRoleService, iptRoleEndpoint, iptRoleExternal, iptRoleLocal} {
		if !roles[role] {
			t.Errorf("no chain of role %q rendered; the test misses it", role)
		}
	}
}

// TestRenderIPTablesLocal: externalTrafficPolicy Local sends pods and the node to every
// endpoint (the node masqueraded), the rest to the local one; without a local endpoint
// filter drops what the nat chain lets through.
func TestRenderIPTablesLocal(t *testing.T) {
	p := PortLB{Key: PortKey{"shop", "local", "http", "TCP", true}, Protocol: "TCP", Port: 80, Frontends: addrs("192.0.2.20"),
		Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.4", 8080)}, LocalBackends: []Backend{be("10.65.0.2", 8080)},
		NodePort: 30090, NodePortFamilies: [2]bool{true, false}, ExternalLocal: true}
	ipt := RenderIPTables(&LBState{Ports: []PortLB{p}}, RenderConfig{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16")}})
	svc, ext, svl := iptName(iptRoleService, p.Key, nil), iptName(iptRoleExternal, p.Key, nil), iptName(iptRoleLocal, p.Key, nil)
	local := be("10.65.0.2", 8080)
	if got, want := strings.Join(ipt.Rules("nat", ext), "\n"), strings.Join([]string{
		"-s 10.65.0.0/16 -j " + svc,
		"-m addrtype --src-type LOCAL -j " + IPTChainMarkMasq,
		"-m addrtype --src-type LOCAL -j " + svc,
		"-j " + svl,
	}, "\n"); got != want {
		t.Errorf("external chain:\n%s\nwant\n%s", got, want)
	}
	if got := ipt.Rules("nat", svl); len(got) != 1 || got[0] != "-j "+iptName(iptRoleEndpoint, p.Key, &local) {
		t.Errorf("local chain %v, want only the local endpoint", got)
	}
	if got := ipt.Rules("nat", IPTChainNodePorts); len(got) != 1 || got[0] != "-p tcp -m tcp --dport 30090 -j "+ext {
		t.Errorf("NodePorts %v", got)
	}

	p.LocalBackends = nil
	ipt = RenderIPTables(&LBState{Ports: []PortLB{p}}, RenderConfig{})
	if _, ok := ipt.Chains["nat"][svl]; ok {
		t.Error("a local chain without a local endpoint")
	}
	if got, want := strings.Join(ipt.Rules("filter", IPTChainServices), "\n"), strings.Join([]string{
		"-m conntrack ! --ctstate NEW -j RETURN",
		"-d 192.0.2.20/32 -p tcp -m tcp --dport 80 -j DROP",
		"-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30090 -j DROP",
	}, "\n"); got != want {
		t.Errorf("filter without a local endpoint:\n%s\nwant\n%s", got, want)
	}
}
