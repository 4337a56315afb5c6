package felix

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy"
)

func buildModel(t testing.TB, yaml string) *policy.Model {
	t.Helper()
	rs, err := api.Decode([]byte(yaml), "test")
	if err != nil {
		t.Fatal(err)
	}
	var in policy.Input
	for _, r := range rs {
		if err := api.Validate(r); err != nil {
			t.Fatal(err)
		}
		in.Add(r)
	}
	m, err := policy.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const renderWorld = `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {node: node1, interfaceName: tabbyxa, ipNetworks: [10.0.1.1/32], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {node: node2, interfaceName: tabbyxb, ipNetworks: [10.0.1.2/32]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-b, namespace: x}
spec:
  order: 10
  selector: pod == 'a'
  ingress:
  - {action: Deny, source: {nets: [192.168.1.0/24, 192.168.2.0/24]}}
  - {action: Allow, protocol: TCP, source: {selector: pod == 'b'}, destination: {ports: [80, "81:82", http]}}
  egress:
  - {action: Allow, destination: {selector: pod == 'b'}}
  - {action: Deny, destination: {nets: [10.9.0.0/16], notNets: [10.9.1.0/24]}}
`

// stripHashes removes the hash comments, for readable expectations.
var testHashRE = regexp.MustCompile(`-m comment --comment tby:[a-z2-7]{16} `)

func stripped(rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = testHashRE.ReplaceAllString(r, "")
	}
	return out
}

func TestRenderPolicy(t *testing.T) {
	m := buildModel(t, renderWorld)
	fs := RenderPolicy(m, "node1", PolicyConfig{})
	sel := setName('s', "selector\x00pod == \"b\" in namespace x")
	nets := setName('d', "nets\x00192.168.1.0/24,192.168.2.0/24")
	named := setName('n', "named\x00all\x00http\x006")
	except := setName('d', "nets\x0010.9.1.0/24")
	want := map[string][]string{
		"tby-FORWARD": {
			"-i tabby+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			"-o tabby+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			"-i tabby+ -m conntrack --ctstate INVALID -j DROP",
			"-o tabby+ -m conntrack --ctstate INVALID -j DROP",
			"-i tabby+ -j tby-from-wl-dispatch",
			"-o tabby+ -j tby-to-wl-dispatch",
			"-i tabby+ -m mark --mark 0x10000/0x10000 -j ACCEPT",
			"-o tabby+ -m mark --mark 0x10000/0x10000 -j ACCEPT",
		},
		"tby-INPUT": {
			"-i tabby+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			"-i tabby+ -m conntrack --ctstate INVALID -j DROP",
			"-i tabby+ -g tby-wl-to-host",
		},
		"tby-wl-to-host":       {"-j tby-from-wl-dispatch", "-j ACCEPT"},
		"tby-from-wl-dispatch": {"-i tabbyxa -g tby-fw-tabbyxa", "-m comment --comment unknown-workload -j DROP"},
		"tby-to-wl-dispatch":   {"-o tabbyxa -g tby-tw-tabbyxa", "-m comment --comment unknown-workload -j DROP"},
		"tby-tw-tabbyxa": {
			"-j MARK --set-xmark 0x0/0x30000",
			"-j MARK --set-xmark 0x0/0x20000",
			"-m mark --mark 0x0/0x20000 -j tby-pi-x_allow-b",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
			"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-default -j DROP",
			"-j MARK --set-xmark 0x10000/0x10000",
		},
		"tby-fw-tabbyxa": {
			"-j MARK --set-xmark 0x0/0x30000",
			"-j MARK --set-xmark 0x0/0x20000",
			"-m mark --mark 0x0/0x20000 -j tby-po-x_allow-b",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
			"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-default -j DROP",
			"-j MARK --set-xmark 0x10000/0x10000",
		},
		"tby-pi-x_allow-b": {
			"-m set --match-set " + nets + " src -j DROP",
			"-p tcp -m set --match-set " + sel + " src -m multiport --dports 80,81:82 -j MARK --set-xmark 0x10000/0x10000",
			"-p tcp -m set --match-set " + sel + " src -m set --match-set " + named + " dst,dst -j MARK --set-xmark 0x10000/0x10000",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
		},
		"tby-po-x_allow-b": {
			"-m set --match-set " + sel + " dst -j MARK --set-xmark 0x10000/0x10000",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
			"-d 10.9.0.0/16 -m set ! --match-set " + except + " dst -j DROP",
		},
	}
	if got := slices.Sorted(maps.Keys(fs.Chains)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("chains %v, want %v", got, slices.Sorted(maps.Keys(want)))
	}
	for name, rules := range want {
		if got := stripped(fs.Chains[name]); !slices.Equal(got, rules) {
			t.Errorf("chain %s:\n got  %s\n want %s", name, strings.Join(got, "\n      "), strings.Join(rules, "\n      "))
		}
	}
	wantSets := map[string]*IPSet{
		sel:    {Name: sel, Type: "hash:net", Members: []string{"10.0.1.2/32"}},
		nets:   {Name: nets, Type: "hash:net", Members: []string{"192.168.1.0/24", "192.168.2.0/24"}},
		named:  {Name: named, Type: "hash:ip,port", Members: []string{"10.0.1.1,tcp:8080"}},
		except: {Name: except, Type: "hash:net", Members: []string{"10.9.1.0/24"}},
	}
	if len(fs.IPSets) != len(wantSets) {
		t.Errorf("ipsets %v, want %d (the selector's set is shared by ingress and egress)", slices.Sorted(maps.Keys(fs.IPSets)), len(wantSets))
	}
	for name, s := range wantSets {
		if got := fs.IPSets[name]; got == nil || fmt.Sprint(*got) != fmt.Sprint(*s) {
			t.Errorf("ipset %s = %v, want %v", name, got, s)
		}
	}
}

func TestRenderNamesWithinLimits(t *testing.T) {
	long := strings.Repeat("n", 60)
	m := buildModel(t, `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a, namespace: `+long+`}
spec: {node: node1, interfaceName: tabby0123456789, ipNetworks: [10.0.1.1/32]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: `+long+`, namespace: `+long+`}
spec:
  ingress: [{action: Allow, source: {selector: all()}}]
`)
	fs := RenderPolicy(m, "node1", PolicyConfig{})
	for name := range fs.Chains {
		if len(name) > MaxChainName || !strings.HasPrefix(name, ChainPrefix) {
			t.Errorf("chain %q: longer than %d or without prefix", name, MaxChainName)
		}
	}
	for name := range fs.IPSets {
		// The syncer's temporary set has a name of the same length.
		if len(name) > MaxIPSetName || !strings.HasPrefix(name, IPSetPrefix) {
			t.Errorf("ipset %q: longer than %d or without prefix", name, MaxIPSetName)
		}
	}
	if len(fs.Chains) != 8 {
		t.Errorf("%d chains, want 8: %v", len(fs.Chains), slices.Sorted(maps.Keys(fs.Chains)))
	}
}

// A change to one policy changes the hashes of that policy's chain only.
func TestRenderHashesLocal(t *testing.T) {
	before := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
	after := RenderPolicy(buildModel(t, strings.Replace(renderWorld, `ports: [80, "81:82", http]`, `ports: [80]`, 1)), "node1", PolicyConfig{})
	var changed []string
	for name, rules := range after.Chains {
		if !slices.Equal(rules, before.Chains[name]) {
			changed = append(changed, name)
		}
	}
	if !slices.Equal(changed, []string{"tby-pi-x_allow-b"}) {
		t.Errorf("changed chains %v, want only tby-pi-x_allow-b", changed)
	}
}

// TestRuleHashMatchesRegexp: ruleHash finds what the regexp it replaced found, in every
// rendered rule and in rules as iptables-save prints them or others write them.
func TestRuleHashMatchesRegexp(t *testing.T) {
	re := regexp.MustCompile(`--comment "?` + hashCommentPrefix + `([a-z2-7]{16})"?`)
	want := func(rule string) string {
		if m := re.FindStringSubmatch(rule); m != nil {
			return m[1]
		}
		return ""
	}
	fs := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
	rules := []string{
		`-m comment --comment "tby:abcdefgh234567zz" -j ACCEPT`,
		`-m comment --comment tby:abcdefgh234567zz`,
		`-m comment --comment tby:abcdefgh234567zzq -j DROP`,
		`-m comment --comment tby:abcdefgh234567z -j DROP`,
		`-m comment --comment tby:abcdefgh2345678z -j DROP`,
		`-m comment --comment tby:ABCDEFGH234567ZZ -j DROP`,
		`-m comment --comment ""tby:abcdefgh234567zz" -j DROP`,
		`-m comment --comment other -m comment --comment tby:bbbbbbbbbbbbbbbb -j DROP`,
		`-m comment --comment tby:short -m comment --comment "tby:cccccccccccccccc"`,
		`--comment --comment tby:dddddddddddddddd`,
		`-m comment --comment tby:hook -j tby-FORWARD`,
		`--comment tby:`, `--comment `, ``, `-j ACCEPT`,
	}
	for _, f := range []*FilterState{fs, fs.IPv6} {
		for _, rs := range f.Chains {
			rules = append(rules, rs...)
		}
	}
	for _, r := range rules {
		if got, want := ruleHash(r), want(r); got != want {
			t.Errorf("ruleHash(%q) = %q, the regexp finds %q", r, got, want)
		}
	}
}

// TestRenderTunnelGuard: with IPIP or VXLAN in use, tby-INPUT first drops those packets
// addressed to the node from anyone but a node (the tby-tunnel-peers set); with VXLAN
// over IPv6, the IPv6 tby-INPUT does the same with tby-tunnel-peers6; without a tunnel
// of a family there is no guard in it.
func TestRenderTunnelGuard(t *testing.T) {
	m, err := policy.Build(policy.Input{})
	if err != nil {
		t.Fatal(err)
	}
	peers := []netip.Addr{netip.MustParseAddr("172.31.1.12"), netip.MustParseAddr("172.31.1.11"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::1")}
	for _, tc := range []struct {
		name                string
		guard               TunnelGuard
		ipip, vxlan, vxlan6 bool
	}{
		{"no tunnel", TunnelGuard{Peers: peers}, false, false, false},
		{"VXLAN", TunnelGuard{VXLAN: true, Peers: peers}, false, true, false},
		{"IPIP and VXLAN", TunnelGuard{IPIP: true, VXLAN: true, Peers: peers}, true, true, false},
		{"VXLAN over IPv6", TunnelGuard{VXLANV6: true, Peers: peers}, false, false, true},
		{"VXLAN over both", TunnelGuard{VXLAN: true, VXLANV6: true, Peers: peers}, false, true, true},
	} {
		fs := RenderPolicy(m, "node1", PolicyConfig{Tunnels: tc.guard})
		in := strings.Join(fs.Chains[ChainInput], "\n")
		ipip := strings.Contains(in, "-p 4 -m addrtype --dst-type LOCAL -m set ! --match-set tby-tunnel-peers src")
		vxlan := strings.Contains(in, "-p udp -m udp --dport 4789 -m addrtype --dst-type LOCAL -m set ! --match-set tby-tunnel-peers src")
		if ipip != tc.ipip || vxlan != tc.vxlan {
			t.Errorf("%s: IPIP guard %v, VXLAN guard %v, want %v, %v:\n%s", tc.name, ipip, vxlan, tc.ipip, tc.vxlan, in)
		}
		set, ok := fs.IPSets[IPSetTunnelPeers]
		if ok != (tc.ipip || tc.vxlan) || (ok && (set.Type != "hash:ip" || set.Family != "" || !slices.Equal(set.Members, []string{"172.31.1.11", "172.31.1.12"}))) {
			t.Errorf("%s: set %+v (present %v)", tc.name, set, ok)
		}
		if ok && !strings.Contains(fs.Chains[ChainInput][0], IPSetTunnelPeers) {
			t.Errorf("%s: the guard is not first in %s:\n%s", tc.name, ChainInput, in)
		}
		in6 := strings.Join(fs.IPv6.Chains[ChainInput], "\n")
		vxlan6 := strings.Contains(in6, "-p udp -m udp --dport 4789 -m addrtype --dst-type LOCAL -m set ! --match-set tby-tunnel-peers6 src")
		if vxlan6 != tc.vxlan6 || strings.Contains(in6, "-p 4 ") || strings.Contains(in6, IPSetTunnelPeers+" ") {
			t.Errorf("%s: IPv6 VXLAN guard %v, want %v, and no IPIP nor IPv4 set:\n%s", tc.name, vxlan6, tc.vxlan6, in6)
		}
		set6, ok := fs.IPv6.IPSets[IPSetTunnelPeers6]
		if ok != tc.vxlan6 || (ok && (set6.Type != "hash:ip" || set6.Family != "inet6" || !slices.Equal(set6.Members, []string{"fd00::1", "fd00::2"}))) {
			t.Errorf("%s: IPv6 set %+v (present %v)", tc.name, set6, ok)
		}
		if ok && !strings.Contains(fs.IPv6.Chains[ChainInput][0], IPSetTunnelPeers6) {
			t.Errorf("%s: the IPv6 guard is not first in %s:\n%s", tc.name, ChainInput, in6)
		}
		if fs.IPv6.IPSets[IPSetTunnelPeers] != nil || fs.IPSets[IPSetTunnelPeers6] != nil {
			t.Errorf("%s: a set in the other family", tc.name)
		}
	}
}
