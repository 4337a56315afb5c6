package felix

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
)

// dualWorld: x/a (dual stack) on node1, x/b (dual stack) and x/c (IPv6 only) on node2;
// a policy whose rules are IPv4-only, IPv6-only and both.
const dualWorld = `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {node: node1, interfaceName: tabbyxa, ipNetworks: [10.0.1.1/32, "fd00:1::1/128"], ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {node: node2, interfaceName: tabbyxb, ipNetworks: [10.0.1.2/32, "fd00:1::2/128"]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: c, namespace: x, labels: {pod: b}}
spec: {node: node2, interfaceName: tabbyxc, ipNetworks: ["fd00:1::3/128"]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-b, namespace: x}
spec:
  order: 10
  selector: pod == 'a'
  ingress:
  - {action: Deny, source: {nets: ["fd00:9::/64", "fd00:8::/64"]}}
  - {action: Deny, source: {nets: [192.168.1.0/24]}}
  - {action: Allow, protocol: ICMPv6, icmp: {type: 128}}
  - {action: Allow, protocol: ICMP, icmp: {type: 8}}
  - {action: Log, ipVersion: 6, protocol: UDP}
  - {action: Allow, protocol: TCP, source: {selector: pod == 'b'}, destination: {ports: [80, http]}}
`

// Each family gets the rules that can match it, sets of its own family and names, and
// IPv6 lets a workload's neighbour discovery reach its host before any policy.
func TestRenderIPv6(t *testing.T) {
	fs := RenderPolicy(buildModel(t, dualWorld), "node1", PolicyConfig{})
	v6 := fs.IPv6
	if v6 == nil || v6.IPv6 != nil {
		t.Fatalf("IPv6 state %+v", v6)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(fs.Chains)), slices.Sorted(maps.Keys(v6.Chains))) {
		t.Errorf("chains differ between families: %v and %v", slices.Sorted(maps.Keys(fs.Chains)), slices.Sorted(maps.Keys(v6.Chains)))
	}
	rules4, rules6 := strings.Join(stripped(fs.Chains["tby-pi-x_allow-b"]), "\n"), strings.Join(stripped(v6.Chains["tby-pi-x_allow-b"]), "\n")
	for _, s := range []string{"-s 192.168.1.0/24 -j DROP", "-p icmp -m icmp --icmp-type 8 ", "--dports 80 "} {
		if !strings.Contains(rules4, s) {
			t.Errorf("IPv4 policy chain lacks %q:\n%s", s, rules4)
		}
	}
	for _, s := range []string{"fd00", "icmp6", "-j LOG"} {
		if strings.Contains(rules4, s) {
			t.Errorf("IPv4 policy chain has %q:\n%s", s, rules4)
		}
	}
	for _, s := range []string{"-p ipv6-icmp -m icmp6 --icmpv6-type 128 ", "-p udp -j LOG", "--dports 80 "} {
		if !strings.Contains(rules6, s) {
			t.Errorf("IPv6 policy chain lacks %q:\n%s", s, rules6)
		}
	}
	for _, s := range []string{"192.168", "--icmp-type"} {
		if strings.Contains(rules6, s) {
			t.Errorf("IPv6 policy chain has %q:\n%s", s, rules6)
		}
	}
	if in := strings.Join(stripped(v6.Chains[ChainInput]), "\n"); !strings.Contains(in, "-i tabby+ -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT") {
		t.Errorf("IPv6 tby-INPUT does not accept neighbour solicitations:\n%s", in)
	}
	for _, st := range []*FilterState{fs, v6} {
		if got := st.Chains[ChainFromWLDisp]; len(got) != 2 {
			t.Errorf("from-workload dispatch %v, want x/a's interface only", stripped(got))
		}
	}
	sel6 := v6.IPSets["tby6"+setName('s', `selector`+"\x00"+`pod == "b" in namespace x`)[3:]]
	if sel6 == nil || sel6.Family != "inet6" || !slices.Equal(sel6.Members, []string{"fd00:1::2/128", "fd00:1::3/128"}) {
		t.Errorf("IPv6 selector set %+v, want fd00:1::2 and ::3 in an inet6 set", sel6)
	}
	for name, s := range fs.IPSets {
		if s.Family != "" || strings.Contains(strings.Join(s.Members, " "), ":") && s.Type == "hash:net" {
			t.Errorf("IPv4 set %s: %+v", name, s)
		}
		if _, ok := v6.IPSets[name]; ok {
			t.Errorf("set %s in both families", name)
		}
	}
	if len(v6.IPSets) != 3 { // selector, two nets, named port
		t.Errorf("IPv6 sets %v, want 3", slices.Sorted(maps.Keys(v6.IPSets)))
	}
	for name, s := range v6.IPSets {
		if len(name) > MaxIPSetName || !strings.HasPrefix(name, IPSetPrefix+"6") || s.Family != "inet6" {
			t.Errorf("IPv6 set %s: %+v", name, s)
		}
		if s.Type == "hash:ip,port" && !slices.Equal(s.Members, []string{"fd00:1::1,tcp:8080"}) {
			t.Errorf("IPv6 named port set %+v", s)
		}
	}
}

// The syncer writes ip6tables as it writes iptables: chains and inet6 sets appear, an
// update writes only what changed, another program's IPv6 rules survive, a flushed chain
// is restored, and RemoveAll takes every family's state.
func TestPolicySyncerIPv6Netns(t *testing.T) {
	requireTools(t, "ip6tables-nft-restore", "ip6tables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(backend.Name, func(t *testing.T) {
			ns := newTestNS(t)
			ctx := context.Background()
			r := Runner{NetNS: ns.name}
			cmd := func(name string, args ...string) string {
				t.Helper()
				out, err := r.Run(ctx, nil, name, args...)
				if err != nil {
					t.Fatal(err)
				}
				return string(out)
			}
			ip6t := strings.TrimSuffix(backend.Save6, "-save")
			save6 := func() string { return cmd(backend.Save6, "-t", "filter") }
			cmd(ip6t, "-A", "FORWARD", "-s", "fd00:5::1/128", "-j", "DROP")
			cmd(ip6t, "-N", "OTHER6")
			cmd(ip6t, "-A", "OTHER6", "-d", "fd00:5::2/128", "-j", "ACCEPT")
			cmd(ip6t, "-A", "INPUT", "-j", "OTHER6")

			s := testSyncer(t, r, backend)
			want := RenderPolicy(buildModel(t, dualWorld), "node1", PolicyConfig{})
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastWritten6) != len(want.IPv6.Chains) || len(st.LastWritten) != len(want.Chains) {
				t.Errorf("first sync wrote %d IPv6 and %d IPv4 chains, want %d and %d", len(st.LastWritten6), len(st.LastWritten), len(want.IPv6.Chains), len(want.Chains))
			}
			out := save6()
			for _, frag := range []string{
				"-A FORWARD -s fd00:5::1/128 -j DROP", "-A OTHER6 -d fd00:5::2/128 -j ACCEPT", "-A INPUT -j OTHER6",
				":tby-pi-x_allow-b", "--icmpv6-type 128", "-j LOG",
			} {
				if !strings.Contains(out, frag) {
					t.Errorf("ip6tables-save lacks %q:\n%s", frag, out)
				}
			}
			if k := ParseFilter([]byte(out)); len(k.Hooks["FORWARD"]) != 1 || k.Hooks["FORWARD"][0].pos != 1 || len(k.Hooks["INPUT"]) != 1 || k.Hooks["INPUT"][0].pos != 1 {
				t.Errorf("IPv6 hooks %v, want one first in FORWARD and in INPUT", k.Hooks)
			}
			if v4 := cmd(backend.Save, "-t", "filter"); strings.Contains(v4, "fd00") || !strings.Contains(v4, ":tby-pi-x_allow-b") {
				t.Errorf("iptables-save (IPv4):\n%s", v4)
			}
			sets := ParseIPSets([]byte(cmd("ipset", "save")))
			for name, w := range want.IPv6.IPSets {
				got := sets[name]
				if got == nil || got.Family != "inet6" || !slices.Equal(normalizeMembers(got.Type, got.Members), normalizeMembers(w.Type, slices.Sorted(slices.Values(w.Members)))) {
					t.Errorf("ipset %s = %+v, want %+v", name, got, w)
				}
			}

			// In sync: nothing written; a flushed IPv6 chain alone is restored.
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastWritten6)+len(st.LastWritten)+len(st.LastSetsUpdated) != 0 {
				t.Errorf("second sync wrote %v %v, sets %v; want nothing", st.LastWritten, st.LastWritten6, st.LastSetsUpdated)
			}
			cmd(ip6t, "-F", "tby-pi-x_allow-b")
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); !slices.Equal(st.LastWritten6, []string{"tby-pi-x_allow-b"}) || len(st.LastWritten) != 0 {
				t.Errorf("after an IPv6 flush wrote %v (IPv4 %v), want [tby-pi-x_allow-b] only", st.LastWritten6, st.LastWritten)
			}

			// A relabel that drops x/c from pod == 'b' swaps the IPv6 selector set only.
			relabelled := RenderPolicy(buildModel(t, strings.Replace(dualWorld, "name: c, namespace: x, labels: {pod: b}", "name: c, namespace: x, labels: {pod: c}", 1)), "node1", PolicyConfig{})
			if err := s.Apply(ctx, relabelled); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastSetsUpdated) != 1 || !strings.HasPrefix(st.LastSetsUpdated[0], "tby6s") || len(st.LastWritten)+len(st.LastWritten6) != 0 {
				t.Errorf("relabel updated sets %v, chains %v %v; want one tby6s set only", st.LastSetsUpdated, st.LastWritten, st.LastWritten6)
			}

			chains, nsets, err := RemoveAll(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if chains != len(want.Chains)+len(want.IPv6.Chains) || nsets != len(want.IPSets)+len(want.IPv6.IPSets) {
				t.Errorf("RemoveAll removed %d chains and %d sets, want %d and %d", chains, nsets,
					len(want.Chains)+len(want.IPv6.Chains), len(want.IPSets)+len(want.IPv6.IPSets))
			}
			out = save6()
			if strings.Contains(out, "tby") {
				t.Errorf("tabby's IPv6 rules left after RemoveAll:\n%s", out)
			}
			for _, frag := range []string{"-A FORWARD -s fd00:5::1/128 -j DROP", "-A OTHER6 -d fd00:5::2/128 -j ACCEPT", "-A INPUT -j OTHER6"} {
				if !strings.Contains(out, frag) {
					t.Errorf("another program's rule %q is gone:\n%s", frag, out)
				}
			}
		})
	}
}
