package felix

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/policy"
)

// hostWorld is renderWorld with node1's host endpoints (eth0 named, the rest "*") and a
// policy of each stage.
const hostWorld = renderWorld + `---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1, nic: eth0}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.168.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-auto-hep, labels: {host: node1}}
spec: {node: node1, interfaceName: "*", expectedIPs: [192.168.0.1]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-web}
spec:
  selector: has(host)
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec:
  selector: nic == 'eth0'
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
  egress: [{action: Allow, protocol: TCP, source: {ports: [8080]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: nodeport}
spec:
  selector: has(host)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {nets: [203.0.113.0/24]}, destination: {ports: [30080]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward}
spec:
  selector: has(host)
  applyOnForward: true
  egress: [{action: Deny, destination: {nets: [198.51.100.0/24]}}, {action: Allow}]
`

func TestRenderHostEndpoints(t *testing.T) {
	m := buildModel(t, hostWorld)
	fs := RenderPolicy(m, "node1", PolicyConfig{})
	eth0 := m.HostEndpointsOf("node1", nil)[0]
	all := m.HostEndpointsOf("node1", nil)[1]
	if eth0.Name != "node1-eth0" || all.Name != "node1-auto-hep" {
		t.Fatalf("HostEndpointsOf: %v, %v", eth0.Name, all.Name)
	}
	fhAll := HostEndpointChain(all, policy.StageNormal, true)
	thAll := HostEndpointChain(all, policy.StageNormal, false)
	if fhAll == "tby-fh-*" || !strings.HasPrefix(fhAll, "tby-fh-_") {
		t.Errorf("the * endpoint's chain is %q, want a hashed name", fhAll)
	}
	if got := fs.Hooks; !slices.Equal(got, []Hook{{Chain: "FORWARD", Target: ChainForward}, {Chain: "INPUT", Target: ChainInput}, {Chain: "OUTPUT", Target: ChainOutput}}) {
		t.Errorf("hooks %v", got)
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	}
	in := stripped(fs.Chains[ChainInput])
	check("tby-INPUT's host part", in[len(in)-6:],
		"-m mark --mark 0x10000/0x10000 -m comment --comment allowed-by-untracked-or-prednat-policy -j ACCEPT",
		"-p tcp -m multiport --dports 22,179,2379,2380,5473,6443,6666,6667 -m comment --comment failsafe-in -j ACCEPT",
		"-p udp -m multiport --dports 68 -m comment --comment failsafe-in -j ACCEPT",
		"-i lo -j RETURN",
		"-i eth0 -g tby-fh-eth0",
		"-g "+fhAll,
	)
	check("tby-fh-eth0", stripped(fs.Chains["tby-fh-eth0"]),
		"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-m conntrack --ctstate INVALID -j DROP",
		"-j MARK --set-xmark 0x0/0x30000",
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-pi-host-web",
		"-m mark --mark 0x10000/0x10000 -j ACCEPT",
		"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-default -j DROP",
		"-m comment --comment host-endpoint-default-deny -j DROP",
	)
	// Egress: the failsafe ports, then the endpoints' chains.
	check("tby-OUTPUT", stripped(fs.Chains[ChainOutput]),
		"-m mark --mark 0x10000/0x10000 -m comment --comment allowed-by-untracked-policy -j ACCEPT",
		"-o tabby+ -j RETURN",
		"-o lo -j RETURN",
		"-p tcp -m multiport --dports 179,2379,2380,5473,6443,6666,6667 -m comment --comment failsafe-out -j ACCEPT",
		"-p udp -m multiport --dports 53,67 -m comment --comment failsafe-out -j ACCEPT",
		"-o eth0 -g tby-th-eth0",
		"-g "+thAll,
	)
	// An applyOnForward policy applies to the host's own traffic too.
	check("tby-th-eth0", stripped(fs.Chains["tby-th-eth0"])[3:],
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-po-forward",
		"-m mark --mark 0x10000/0x10000 -j ACCEPT",
		"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-default -j DROP",
		"-m comment --comment host-endpoint-default-deny -j DROP",
	)
	// Forward: applyOnForward egress only, for both endpoints; nothing for ingress.
	fwd := stripped(fs.Chains[ChainForward])
	check("tby-FORWARD's first rule", fwd[:1], "-j "+ChainToHEPFwd)
	if _, ok := fs.Chains[ChainFromHEPFwd]; ok {
		t.Errorf("%s rendered without an ingress applyOnForward policy", ChainFromHEPFwd)
	}
	check(ChainToHEPFwd, stripped(fs.Chains[ChainToHEPFwd]),
		"-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
		"-o tabby+ -j RETURN",
		"-o lo -j RETURN",
		"-o eth0 -g tby-thf-eth0",
		"-g "+HostEndpointChain(all, policy.StageForward, false),
	)
	if slices.Contains(fs.Chains["tby-thf-eth0"], "tby-po-host-web") || !strings.Contains(strings.Join(fs.Chains["tby-thf-eth0"], "\n"), "-j tby-po-forward") {
		t.Errorf("tby-thf-eth0 does not run the forward policy alone:\n%s", strings.Join(fs.Chains["tby-thf-eth0"], "\n"))
	}
	// Untracked: raw chains for eth0 only (the policy selects it alone), NOTRACK and
	// ACCEPT once allowed, no end-of-tier drop, failsafe both ways.
	if fs.Raw == nil {
		t.Fatal("no raw state")
	}
	check("raw hooks", hookStrings(fs.Raw.Hooks), "PREROUTING>"+ChainRawHEPPre, "OUTPUT>"+ChainRawHEPOut)
	check(ChainRawHEPPre, stripped(fs.Raw.Chains[ChainRawHEPPre]),
		"-i tabby+ -j RETURN",
		"-i lo -j RETURN",
		"-p tcp -m multiport --dports 22,179,2379,2380,5473,6443,6666,6667 -m comment --comment failsafe -j ACCEPT",
		"-p udp -m multiport --dports 68 -m comment --comment failsafe -j ACCEPT",
		"-p tcp -m multiport --sports 179,2379,2380,5473,6443,6666,6667 -m comment --comment failsafe-reply -j ACCEPT",
		"-p udp -m multiport --sports 53,67 -m comment --comment failsafe-reply -j ACCEPT",
		"-i eth0 -g tby-ufh-eth0",
	)
	check("tby-ufh-eth0", stripped(fs.Raw.Chains["tby-ufh-eth0"]),
		"-j MARK --set-xmark 0x0/0x30000",
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-pi-untracked",
		"-m mark --mark 0x10000/0x10000 -j NOTRACK",
		"-m mark --mark 0x10000/0x10000 -j ACCEPT",
	)
	if _, ok := fs.Raw.Chains["tby-pi-untracked"]; !ok {
		t.Error("the untracked policy's chain is not in the raw table")
	}
	if _, ok := fs.Chains["tby-pi-untracked"]; ok {
		t.Error("the untracked policy's chain is in the filter table")
	}
	// PreDNAT: mangle, ingress, both endpoints.
	if fs.Mangle == nil {
		t.Fatal("no mangle state")
	}
	check("mangle hooks", hookStrings(fs.Mangle.Hooks), "PREROUTING>"+ChainManglePre)
	mp := stripped(fs.Mangle.Chains[ChainManglePre])
	check(ChainManglePre, mp[len(mp)-2:], "-i eth0 -g tby-pfh-eth0", "-g "+HostEndpointChain(all, policy.StagePreDNAT, true))
	if got := stripped(fs.Mangle.Chains["tby-pi-nodeport"]); len(got) != 1 || got[0] != "-p tcp -s 203.0.113.0/24 -m multiport --dports 30080 -j DROP" {
		t.Errorf("tby-pi-nodeport in mangle: %q", got)
	}
	// IPv6: every stage, raw and mangle too, with the rules that match IPv6: the preDNAT
	// policy's IPv4 source leaves its chain empty there, an IPv6 one is IPv6's alone.
	if fs.IPv6.Raw == nil || fs.IPv6.Mangle == nil || fs.IPv6.Chains["tby-fh-eth0"] == nil {
		t.Fatalf("IPv6: raw %v, mangle %v, tby-fh-eth0 %v", fs.IPv6.Raw, fs.IPv6.Mangle, fs.IPv6.Chains["tby-fh-eth0"])
	}
	check("IPv6 raw hooks", hookStrings(fs.IPv6.Raw.Hooks), "PREROUTING>"+ChainRawHEPPre, "OUTPUT>"+ChainRawHEPOut)
	check("IPv6 tby-ufh-eth0", stripped(fs.IPv6.Raw.Chains["tby-ufh-eth0"]), stripped(fs.Raw.Chains["tby-ufh-eth0"])...)
	check("IPv6 tby-pi-untracked", stripped(fs.IPv6.Raw.Chains["tby-pi-untracked"]), stripped(fs.Raw.Chains["tby-pi-untracked"])...)
	check("IPv6 mangle hooks", hookStrings(fs.IPv6.Mangle.Hooks), "PREROUTING>"+ChainManglePre)
	check("IPv6 "+ChainManglePre, stripped(fs.IPv6.Mangle.Chains[ChainManglePre]), mp...)
	check("IPv6 tby-pi-nodeport", stripped(fs.IPv6.Mangle.Chains["tby-pi-nodeport"]))
	prednat6 := RenderPolicy(buildModel(t, hostWorld+`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: nodeport6}
spec:
  selector: has(host)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {nets: ["2001:db8::/32"]}, destination: {ports: [30080]}}]
`), "node1", PolicyConfig{})
	check("IPv6 tby-pi-nodeport6", stripped(prednat6.IPv6.Mangle.Chains["tby-pi-nodeport6"]), "-p tcp -s 2001:db8::/32 -m multiport --dports 30080 -j DROP")
	check("IPv4 tby-pi-nodeport6", stripped(prednat6.Mangle.Chains["tby-pi-nodeport6"]))
	for _, chain := range []string{ChainInput, ChainOutput} {
		rules := stripped(fs.IPv6.Chains[chain])
		nd := slices.Index(rules, "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT")
		dispatch := slices.IndexFunc(rules, func(r string) bool {
			return strings.Contains(r, "-g tby-fh-eth0") || strings.Contains(r, "-g tby-th-eth0")
		})
		if nd < 0 || dispatch < nd {
			t.Errorf("IPv6 %s: neighbour solicitation not accepted before the host endpoints:\n%s", chain, strings.Join(rules, "\n"))
		}
	}

	// A node without host endpoints: nothing of this.
	fs2 := RenderPolicy(m, "node2", PolicyConfig{})
	if len(fs2.Hooks) != 2 || fs2.Raw != nil || fs2.Mangle != nil || fs2.Chains[ChainOutput] != nil {
		t.Errorf("node2: hooks %v, raw %v, mangle %v", fs2.Hooks, fs2.Raw, fs2.Mangle)
	}
	if want := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{}); !slices.Equal(fs2.Chains[ChainInput], RenderPolicy(buildModel(t, renderWorld), "node2", PolicyConfig{}).Chains[ChainInput]) || want.Mangle != nil {
		t.Error("host endpoints of another node changed node2's tby-INPUT")
	}

	// Tunnels from and to other nodes pass before host endpoint policy.
	fs4 := RenderPolicy(m, "node1", PolicyConfig{Tunnels: TunnelGuard{VXLAN: true, Peers: []netip.Addr{netip.MustParseAddr("192.168.0.2")}}})
	if in := stripped(fs4.Chains[ChainInput]); !slices.Contains(in, "-p udp -m udp --dport 4789 -m set --match-set tby-tunnel-peers src -m comment --comment vxlan-of-a-node -j ACCEPT") {
		t.Errorf("tby-INPUT does not accept VXLAN from nodes:\n%s", strings.Join(in, "\n"))
	}
	if out := stripped(fs4.Chains[ChainOutput]); !slices.Contains(out, "-p udp -m udp --dport 4789 -m set --match-set tby-tunnel-peers dst -m comment --comment vxlan-of-a-node -j ACCEPT") {
		t.Errorf("tby-OUTPUT does not accept VXLAN to nodes:\n%s", strings.Join(out, "\n"))
	}
	if in6 := stripped(fs4.IPv6.Chains[ChainInput]); slices.ContainsFunc(in6, func(r string) bool { return strings.Contains(r, "vxlan-of-a-node") }) {
		t.Errorf("IPv6 tby-INPUT accepts VXLAN without VXLAN over IPv6:\n%s", strings.Join(in6, "\n"))
	}
	fs6 := RenderPolicy(m, "node1", PolicyConfig{Tunnels: TunnelGuard{VXLANV6: true, Peers: []netip.Addr{netip.MustParseAddr("fd00::2")}}})
	if in := stripped(fs6.IPv6.Chains[ChainInput]); !slices.Contains(in, "-p udp -m udp --dport 4789 -m set --match-set tby-tunnel-peers6 src -m comment --comment vxlan-of-a-node -j ACCEPT") {
		t.Errorf("IPv6 tby-INPUT does not accept VXLAN from nodes:\n%s", strings.Join(in, "\n"))
	}
	if out := stripped(fs6.IPv6.Chains[ChainOutput]); !slices.Contains(out, "-p udp -m udp --dport 4789 -m set --match-set tby-tunnel-peers6 dst -m comment --comment vxlan-of-a-node -j ACCEPT") {
		t.Errorf("IPv6 tby-OUTPUT does not accept VXLAN to nodes:\n%s", strings.Join(out, "\n"))
	}

	// Configured failsafe ports; none.
	fs3 := RenderPolicy(m, "node1", PolicyConfig{FailsafeInbound: mustFailsafe("tcp:2222"), FailsafeOutbound: mustFailsafe("none")})
	in3 := strings.Join(fs3.Chains[ChainInput], "\n")
	if !strings.Contains(in3, "--dports 2222 ") || strings.Contains(in3, "--dports 22,") || strings.Contains(strings.Join(fs3.Chains[ChainOutput], "\n"), "failsafe") {
		t.Errorf("configured failsafe ports not rendered:\n%s", in3)
	}
}

func hookStrings(hs []Hook) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Chain+">"+h.Target)
	}
	return out
}

func TestParseFailsafePorts(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{"tcp:22,udp:68", "tcp:22,udp:68", ""},
		{" 22 , UDP:53", "tcp:22,udp:53", ""},
		{"none", "none", ""},
		{"", "none", ""},
		{"sctp:9", "", `failsafe port "sctp:9": protocol "sctp" is not tcp or udp`},
		{"tcp:0", "", `failsafe port "tcp:0": "0" is not a port number (1-65535)`},
		{"tcp:65536", "", `failsafe port "tcp:65536": "65536" is not a port number (1-65535)`},
		{"tcp:10.0.0.0/8:22", "", `failsafe port "tcp:10.0.0.0/8:22": "10.0.0.0/8:22" is not a port number (1-65535)`},
	} {
		ps, err := ParseFailsafePorts(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseFailsafePorts(%q) = %v, want error %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || FormatFailsafePorts(ps) != tt.want):
			t.Errorf("ParseFailsafePorts(%q) = %v, %v; want %s", tt.in, ps, err, tt.want)
		}
	}
	if got := FormatFailsafePorts(DefaultFailsafeInbound); got != "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667" {
		t.Errorf("default inbound %s", got)
	}
}

func TestCombineRaw(t *testing.T) {
	dns := RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")})
	hep := RenderPolicy(buildModel(t, hostWorld), "node1", PolicyConfig{}).Raw
	if got := combineRaw(dns, nil); got != dns {
		t.Error("without untracked policy, the raw state is the DNS exemption's")
	}
	if got := combineRaw(RenderDNSNotrack(nil), hep); !slices.Equal(got.Hooks, hep.Hooks) {
		t.Errorf("without the DNS exemption, hooks %v", got.Hooks)
	}
	got := combineRaw(dns, hep)
	if !slices.Equal(got.Hooks, dns.Hooks) {
		t.Errorf("hooks %v, want the DNS exemption's", got.Hooks)
	}
	pre := got.Chains[ChainRawPrerouting]
	if len(pre) != len(dns.Chains[ChainRawPrerouting])+1 || !strings.HasSuffix(pre[len(pre)-1], " -j "+ChainRawHEPPre) {
		t.Errorf("%s: %q", ChainRawPrerouting, pre)
	}
	if !testHashRE.MatchString(pre[len(pre)-1]+" ") || pre[len(pre)-1] == pre[len(pre)-2] {
		t.Errorf("the appended rule has no hash of its own: %q", pre[len(pre)-1])
	}
	for name := range hep.Chains {
		if got.Chains[name] == nil {
			t.Errorf("chain %s missing", name)
		}
	}
}

// TestHostEndpointSyncerNetns writes every table of host endpoint policy (filter, raw
// beside the DNS exemption, mangle; IPv6 filter, raw and mangle) in a namespace with both
// backends, finds nothing to
// write on a second pass, removes the mangle and raw parts when the host endpoints go,
// and RemoveAll leaves nothing.
func TestHostEndpointSyncerNetns(t *testing.T) {
	requireTools(t, "iptables-nft-restore", "iptables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(backend.Name, func(t *testing.T) {
			ns := newTestNS(t)
			ctx := context.Background()
			r := Runner{NetNS: ns.name}
			s := testSyncer(t, r, backend)
			dns := RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")})
			with := *RenderPolicy(buildModel(t, hostWorld), "node1", PolicyConfig{})
			with.Raw = combineRaw(dns, with.Raw)
			if err := s.Apply(ctx, &with); err != nil {
				t.Fatal(err)
			}
			for table, frags := range map[string][]string{
				"filter": {`-A OUTPUT -m comment --comment "tby:hook" -j tby-OUTPUT`, "-A tby-INPUT -i eth0 -m comment", "-g tby-fh-eth0", "-A tby-FORWARD -m comment", "-j tby-to-hep-fwd"},
				"raw":    {"-j tby-raw-hep-pre", "-A tby-ufh-eth0", "-j NOTRACK", "-j tby-pi-untracked"},
				"mangle": {`-A PREROUTING -m comment --comment "tby:hook" -j tby-mangle-pre`, "-j tby-pi-nodeport", "--dports 30080 -j DROP"},
			} {
				out := saveTable(t, r, backend, table)
				for _, frag := range frags {
					if !strings.Contains(out, frag) {
						t.Errorf("%s table lacks %q:\n%s", table, frag, out)
					}
				}
			}
			for table, frags := range map[string][]string{
				"raw":    {`-A PREROUTING -m comment --comment "tby:hook" -j tby-raw-hep-pre`, `-A OUTPUT -m comment --comment "tby:hook" -j tby-raw-hep-out`, "-A tby-ufh-eth0", "-j NOTRACK", "-j tby-pi-untracked"},
				"mangle": {`-A PREROUTING -m comment --comment "tby:hook" -j tby-mangle-pre`, "-A tby-pfh-eth0"},
			} {
				out := saveTable6(t, r, backend, table)
				for _, frag := range frags {
					if !strings.Contains(out, frag) {
						t.Errorf("IPv6 %s table lacks %q:\n%s", table, frag, out)
					}
				}
			}
			if err := s.Apply(ctx, &with); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastWritten) != 0 {
				t.Errorf("second pass wrote %v", st.LastWritten)
			}
			without := *RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
			without.Raw = combineRaw(dns, without.Raw)
			if err := s.Apply(ctx, &without); err != nil {
				t.Fatal(err)
			}
			if out := saveTable(t, r, backend, "mangle"); strings.Contains(out, "tby") {
				t.Errorf("mangle table after the host endpoints went:\n%s", out)
			}
			if out := saveTable(t, r, backend, "raw"); strings.Contains(out, "hep") || !strings.Contains(out, "tby-raw-prerouting") {
				t.Errorf("raw table after the host endpoints went:\n%s", out)
			}
			if out := saveTable(t, r, backend, "filter"); strings.Contains(out, "tby-OUTPUT") || strings.Contains(out, "tby-fh-") {
				t.Errorf("filter table after the host endpoints went:\n%s", out)
			}
			for _, table := range []string{"raw", "mangle"} {
				if out := saveTable6(t, r, backend, table); strings.Contains(out, "tby") {
					t.Errorf("IPv6 %s table after the host endpoints went:\n%s", table, out)
				}
			}
			if err := s.Apply(ctx, &with); err != nil {
				t.Fatal(err)
			}
			if _, _, err := RemoveAll(ctx, r); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"filter", "raw", "mangle"} {
				if out := saveTable(t, r, backend, table); strings.Contains(out, "tby") {
					t.Errorf("RemoveAll left tabby's %s rules:\n%s", table, out)
				}
				if out := saveTable6(t, r, backend, table); strings.Contains(out, "tby") {
					t.Errorf("RemoveAll left tabby's IPv6 %s rules:\n%s", table, out)
				}
			}
		})
	}
}

// TestRenderHostEndpointByAddress renders a host endpoint without interfaceName on the
// interface that holds its address (PolicyConfig.HostInterfaces), and on none while no
// interface does.
func TestRenderHostEndpointByAddress(t *testing.T) {
	m := buildModel(t, renderWorld+`---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-by-addr, labels: {host: node1}}
spec: {node: node1, expectedIPs: [192.168.0.1, "fd00::1"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-web}
spec:
  selector: has(host)
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
`)
	none := RenderPolicy(m, "node1", PolicyConfig{HostInterfaces: map[string][]netip.Addr{"eth0": {netip.MustParseAddr("192.168.0.9")}}})
	if none.Chains[ChainOutput] != nil || slices.ContainsFunc(none.Chains[ChainInput], func(r string) bool { return strings.Contains(r, "tby-fh-") }) {
		t.Errorf("rendered a host endpoint no interface holds the addresses of:\n%s", strings.Join(stripped(none.Chains[ChainInput]), "\n"))
	}
	fs := RenderPolicy(m, "node1", PolicyConfig{HostInterfaces: map[string][]netip.Addr{
		"eth0": {netip.MustParseAddr("10.0.0.5")}, "ens4": {netip.MustParseAddr("fd00::1")},
	}})
	for _, f := range []*FilterState{fs, fs.IPv6} {
		in := stripped(f.Chains[ChainInput])
		if !slices.Contains(in, "-i ens4 -g tby-fh-ens4") || slices.ContainsFunc(in, func(r string) bool { return strings.Contains(r, "eth0") }) {
			t.Errorf("tby-INPUT does not dispatch ens4 (and ens4 alone) to the endpoint:\n%s", strings.Join(in, "\n"))
		}
		if !slices.Contains(stripped(f.Chains["tby-fh-ens4"]), "-m mark --mark 0x0/0x20000 -j tby-pi-host-web") {
			t.Errorf("tby-fh-ens4 does not run the endpoint's policy:\n%s", strings.Join(stripped(f.Chains["tby-fh-ens4"]), "\n"))
		}
	}
}

// TestHostEndpointFullPassReads: with host endpoints, a full pass syncs six tables (the
// filter, raw and mangle tables of both families) but reads each family once, as it does
// without them; a change then runs only the restore of what it changed.
func TestHostEndpointFullPassReads(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	s := newFakeSyncer(t, f)
	ctx := context.Background()
	fs := RenderPolicy(buildModel(t, hostWorld), "node1", PolicyConfig{})
	fs.Raw = combineRaw(RenderDNSNotrack(nil), fs.Raw)
	if err := s.Apply(ctx, fs); err != nil {
		t.Fatal(err)
	}
	m := f.mark()
	if err := s.Apply(ctx, fs); err != nil {
		t.Fatal(err)
	}
	if got, want := f.since(m), []string{"ipset save", "iptables-nft-save", "ip6tables-nft-save"}; !slices.Equal(got, want) {
		t.Errorf("full pass with nothing to write ran %q, want %q", got, want)
	}
	changed := RenderPolicy(buildModel(t, hostWorld+"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-a, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}\n"), "node1", PolicyConfig{})
	changed.Raw = combineRaw(RenderDNSNotrack(nil), changed.Raw)
	m = f.mark()
	if err := s.ApplyCached(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if got, want := f.since(m), []string{"iptables-nft-restore --noflush -w 5"}; !slices.Equal(got, want) {
		t.Errorf("a workload policy change with host endpoints ran %q, want %q", got, want)
	}
}
