package felix

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestRenderDNSNotrack(t *testing.T) {
	if fs := RenderDNSNotrack(nil); len(fs.Chains) != 0 || len(fs.Hooks) != 0 || fs.IPv6 == nil || len(fs.IPv6.Chains) != 0 || len(fs.IPv6.Hooks) != 0 {
		t.Errorf("no addresses: %+v, want empty states of both families", fs)
	}
	fs := RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("10.96.0.10"),
		netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")})
	pre, out := fs.Chains[ChainRawPrerouting], fs.Chains[ChainRawOutput]
	if len(pre) != 4 || len(out) != 8 {
		t.Fatalf("rules: prerouting %d, output %d; want 4 and 8 (2 IPv4 addresses, UDP and TCP, queries and replies)\n%q\n%q", len(pre), len(out), pre, out)
	}
	if !strings.HasSuffix(pre[0], "-d 10.96.0.10/32 -p udp -m udp --dport 53 -j NOTRACK") {
		t.Errorf("first rule %q: want 10.96.0.10's UDP queries first", pre[0])
	}
	if !strings.Contains(strings.Join(out, "\n"), "-s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j NOTRACK") {
		t.Errorf("output chain lacks the TCP replies of 169.254.20.10:\n%s", strings.Join(out, "\n"))
	}
	if len(fs.Hooks) != 2 {
		t.Errorf("hooks %v, want PREROUTING and OUTPUT", fs.Hooks)
	}
	pre6, out6 := fs.IPv6.Chains[ChainRawPrerouting], fs.IPv6.Chains[ChainRawOutput]
	if len(pre6) != 2 || len(out6) != 4 || len(fs.IPv6.Hooks) != 2 {
		t.Fatalf("IPv6 rules: prerouting %d, output %d, hooks %d; want 2, 4 and 2 (fd00::10, UDP and TCP)\n%q\n%q", len(pre6), len(out6), len(fs.IPv6.Hooks), pre6, out6)
	}
	if !strings.HasSuffix(pre6[0], "-d fd00::10/128 -p udp -m udp --dport 53 -j NOTRACK") || !strings.HasSuffix(out6[3], "-s fd00::10/128 -p tcp -m tcp --sport 53 -j NOTRACK") {
		t.Errorf("IPv6 rules:\n%q\n%q", pre6, out6)
	}
	if v4 := RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")}); len(v4.IPv6.Chains) != 0 {
		t.Errorf("IPv4 addresses alone: IPv6 chains %v", v4.IPv6.Chains)
	}
}

// TestWithRaw puts the DNS exemption beside the untracked host endpoint policies in each
// family's raw table, and leaves the IPv6 raw table to those policies when it has no
// IPv6 address.
func TestWithRaw(t *testing.T) {
	hep := &FilterState{Chains: map[string][]string{ChainRawHEPPre: {"-j NOTRACK"}}, Hooks: []Hook{{Chain: "PREROUTING", Target: ChainRawHEPPre}}}
	fs := &FilterState{Raw: hep, IPv6: &FilterState{Raw: hep}}
	if got := withRaw(fs, nil); got.Raw != nil || got.IPv6.Raw != hep {
		t.Errorf("no UpdateRaw: raw %v, IPv6 raw %v; want none and the policies'", got.Raw, got.IPv6.Raw)
	}
	got := withRaw(fs, RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")}))
	for family, raw := range map[string]*FilterState{"IPv4": got.Raw, "IPv6": got.IPv6.Raw} {
		pre := raw.Chains[ChainRawPrerouting]
		if len(pre) != 3 || !strings.HasSuffix(pre[2], "-j "+ChainRawHEPPre) || len(raw.Chains[ChainRawHEPPre]) != 1 {
			t.Errorf("%s: %v", family, raw.Chains)
		}
	}
	if fs.IPv6.Raw != hep || len(hep.Chains) != 1 {
		t.Error("withRaw changed its argument")
	}
	if got := withRaw(fs, RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")})); got.IPv6.Raw != hep {
		t.Errorf("no IPv6 address: IPv6 raw %v, want the policies' alone", got.IPv6.Raw)
	}
}

// TestDNSNotrackSyncerNetns writes the raw table's state beside the filter table's,
// leaves another program's raw rule alone, and removes its own when the addresses go.
func TestDNSNotrackSyncerNetns(t *testing.T) {
	requireTools(t, "iptables-nft-restore", "iptables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(backend.Name, func(t *testing.T) {
			ns := newTestNS(t)
			ctx := context.Background()
			r := Runner{NetNS: ns.name}
			runIptables(t, r, backend, "-t", "raw", "-A", "PREROUTING", "-s", "192.168.7.0/24", "-j", "CT", "--notrack")
			save := func() string { t.Helper(); return saveTable(t, r, backend, "raw") }
			s := testSyncer(t, r, backend)
			pol := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
			dnsAddrs := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")}
			if err := s.Apply(ctx, withRaw(pol, RenderDNSNotrack(dnsAddrs))); err != nil {
				t.Fatal(err)
			}
			out6 := saveTable6(t, r, backend, "raw")
			for _, frag := range []string{
				`-A PREROUTING -m comment --comment "tby:hook" -j tby-raw-prerouting`,
				"-A tby-raw-prerouting -d fd00:96::a/128 -p udp -m comment",
				"-A tby-raw-output -s fd00:96::a/128 -p tcp -m comment",
			} {
				if !strings.Contains(out6, frag) {
					t.Errorf("IPv6 raw table lacks %q:\n%s", frag, out6)
				}
			}
			out := save()
			if strings.Contains(out, "fd00") {
				t.Errorf("an IPv6 address in the IPv4 raw table:\n%s", out)
			}
			for _, frag := range []string{
				`-A PREROUTING -m comment --comment "tby:hook" -j tby-raw-prerouting`,
				`-A OUTPUT -m comment --comment "tby:hook" -j tby-raw-output`,
				"-A tby-raw-prerouting -d 10.96.0.10/32 -p udp -m comment",
				"-A tby-raw-output -s 10.96.0.10/32 -p tcp -m comment",
				"-A PREROUTING -s 192.168.7.0/24 -j CT --notrack",
			} {
				if !strings.Contains(out, frag) {
					t.Errorf("raw table lacks %q:\n%s", frag, out)
				}
			}
			if err := s.Apply(ctx, withRaw(pol, RenderDNSNotrack(dnsAddrs[:1]))); err != nil {
				t.Fatal(err)
			}
			if out6 := saveTable6(t, r, backend, "raw"); strings.Contains(out6, "tby") {
				t.Errorf("after the IPv6 address went, the IPv6 raw table is:\n%s", out6)
			}
			if err := s.Apply(ctx, withRaw(pol, RenderDNSNotrack(nil))); err != nil {
				t.Fatal(err)
			}
			if out := save(); strings.Contains(out, "tby") || !strings.Contains(out, "-s 192.168.7.0/24 -j CT --notrack") {
				t.Errorf("after the addresses went, the raw table is:\n%s", out)
			}
			if err := s.Apply(ctx, withRaw(pol, RenderDNSNotrack(dnsAddrs))); err != nil {
				t.Fatal(err)
			}
			if _, _, err := RemoveAll(ctx, r); err != nil {
				t.Fatal(err)
			}
			if out := save() + saveTable6(t, r, backend, "raw"); strings.Contains(out, "tby") {
				t.Errorf("RemoveAll left tabby's raw rules:\n%s", out)
			}
		})
	}
}
