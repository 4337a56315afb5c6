package felix

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestRenderDNSNotrack(t *testing.T) {
	if fs := RenderDNSNotrack(nil); len(fs.Chains) != 0 || len(fs.Hooks) != 0 {
		t.Errorf("no addresses: %+v, want an empty state", fs)
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
			want := *RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
			want.Raw = RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")})
			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			out := save()
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
			want.Raw = RenderDNSNotrack(nil)
			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			if out := save(); strings.Contains(out, "tby") || !strings.Contains(out, "-s 192.168.7.0/24 -j CT --notrack") {
				t.Errorf("after the addresses went, the raw table is:\n%s", out)
			}
			want.Raw = RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("10.96.0.10")})
			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			if _, _, err := RemoveAll(ctx, r); err != nil {
				t.Fatal(err)
			}
			if out := save(); strings.Contains(out, "tby") {
				t.Errorf("RemoveAll left tabby's raw rules:\n%s", out)
			}
		})
	}
}
