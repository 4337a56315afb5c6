package felix

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestRenderNATOutgoing(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name       string
		pools      []EncapPool
		all, masq  []string // nil: no state at all
		wantChains int
	}{
		{name: "no pools"},
		{name: "no natOutgoing", pools: []EncapPool{{Name: "a", CIDR: p("10.244.0.0/16")}}},
		{name: "one natOutgoing pool", pools: []EncapPool{{Name: "a", CIDR: p("10.244.0.0/16"), NATOutgoing: true}},
			all: []string{"10.244.0.0/16"}, masq: []string{"10.244.0.0/16"}, wantChains: 1},
		{name: "other pools are destinations not masqueraded", pools: []EncapPool{
			{Name: "a", CIDR: p("10.244.0.0/16"), NATOutgoing: true},
			{Name: "b", CIDR: p("10.10.0.0/24")},
			{Name: "c", CIDR: p("10.11.0.0/24"), NATOutgoing: true, Disabled: true},
			{Name: "v6", CIDR: p("fd00::/64"), NATOutgoing: true},
		}, all: []string{"10.10.0.0/24", "10.11.0.0/24", "10.244.0.0/16"}, masq: []string{"10.11.0.0/24", "10.244.0.0/16"}, wantChains: 1},
		{name: "unmasked CIDR", pools: []EncapPool{{Name: "a", CIDR: p("10.244.1.7/16"), NATOutgoing: true}},
			all: []string{"10.244.0.0/16"}, masq: []string{"10.244.0.0/16"}, wantChains: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := RenderNATOutgoing(tc.pools)
			if len(fs.Chains) != tc.wantChains {
				t.Fatalf("chains %v, want %d", fs.Chains, tc.wantChains)
			}
			if tc.masq == nil {
				if len(fs.IPSets) != 0 || len(fs.Hooks) != 0 {
					t.Errorf("no natOutgoing pool, yet sets %v hooks %v", fs.IPSets, fs.Hooks)
				}
				return
			}
			if got := fs.IPSets[IPSetAllPools].Members; !slices.Equal(got, tc.all) {
				t.Errorf("%s = %v, want %v", IPSetAllPools, got, tc.all)
			}
			if got := fs.IPSets[IPSetMasqPools].Members; !slices.Equal(got, tc.masq) {
				t.Errorf("%s = %v, want %v", IPSetMasqPools, got, tc.masq)
			}
			rules := fs.Chains[ChainNATOutgoing]
			if len(rules) != 1 || !strings.HasSuffix(rules[0], "-m set --match-set tby-masq-pools src -m set ! --match-set tby-all-pools dst -j MASQUERADE") || ruleHash(rules[0]) == "" {
				t.Errorf("rules %q", rules)
			}
			if !slices.Equal(fs.Hooks, []Hook{{Chain: "POSTROUTING", Target: ChainNATOutgoing}}) {
				t.Errorf("hooks %v", fs.Hooks)
			}
		})
	}
}

// TestNATOutgoingSyncerNetns: the policy syncer writes the nat chain, its hook and both
// pool sets beside the filter state; another program's nat rules survive; a second pass
// writes nothing; the filter part alone (NAT nil) neither destroys the pool sets nor
// touches the nat table; with no natOutgoing pool left everything of tabby's in nat goes.
func TestNATOutgoingSyncerNetns(t *testing.T) {
	requireTools(t, "iptables-nft-restore", "iptables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(backend.Name, func(t *testing.T) {
			ns := newTestNS(t)
			ctx := context.Background()
			r := Runner{NetNS: ns.name}
			ipt := func(args ...string) string { t.Helper(); return runIptables(t, r, backend, args...) }
			save := func() string { t.Helper(); return saveTable(t, r, backend, "nat") }
			ipt("-t", "nat", "-A", "POSTROUTING", "-s", "192.168.7.0/24", "-j", "MASQUERADE")
			ipt("-t", "nat", "-N", "OTHER")
			ipt("-t", "nat", "-A", "OTHER", "-d", "5.6.7.8/32", "-j", "RETURN")

			s := testSyncer(t, r, backend)
			filter := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
			want := *filter
			want.NAT = RenderNATOutgoing([]EncapPool{
				{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true},
				{Name: "b", CIDR: netip.MustParsePrefix("10.10.0.0/24")},
			})
			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); !slices.Equal(st.LastWrittenNAT, []string{ChainNATOutgoing}) {
				t.Errorf("first sync wrote nat chains %v", st.LastWrittenNAT)
			}
			out := save()
			for _, frag := range []string{
				"-A POSTROUTING -s 192.168.7.0/24 -j MASQUERADE", "-A OTHER -d 5.6.7.8/32 -j RETURN",
				`-A POSTROUTING -m comment --comment "tby:hook" -j tby-nat-outgoing`,
				"--match-set tby-masq-pools src -m set ! --match-set tby-all-pools dst", "-j MASQUERADE",
			} {
				if !strings.Contains(out, frag) {
					t.Errorf("nat table lacks %q:\n%s", frag, out)
				}
			}
			if k := ParseTable([]byte(out), "nat"); len(k.Hooks["POSTROUTING"]) != 1 || k.Hooks["POSTROUTING"][0].pos != 1 {
				t.Errorf("POSTROUTING hooks %v, want one at position 1", k.Hooks["POSTROUTING"])
			}
			sets, err := r.Run(ctx, nil, "ipset", "save")
			if err != nil {
				t.Fatal(err)
			}
			ks := ParseIPSets(sets)
			if a, m := ks[IPSetAllPools], ks[IPSetMasqPools]; a == nil || m == nil || len(a.Members) != 2 || !slices.Equal(m.Members, []string{"10.244.0.0/16"}) {
				t.Errorf("pool sets: %s", sets)
			}
			for name := range filter.IPSets {
				if ks[name] == nil {
					t.Errorf("policy set %s missing beside the pool sets", name)
				}
			}

			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastWritten)+len(st.LastWrittenNAT)+len(st.LastSetsUpdated) != 0 {
				t.Errorf("second sync wrote %v, nat %v, sets %v; want nothing", st.LastWritten, st.LastWrittenNAT, st.LastSetsUpdated)
			}

			// The filter part alone keeps the nat part as it is.
			if err := s.Apply(ctx, filter); err != nil {
				t.Fatal(err)
			}
			if sets, _ := r.Run(ctx, nil, "ipset", "list", "-n"); !strings.Contains(string(sets), IPSetAllPools) || !strings.Contains(string(sets), IPSetMasqPools) {
				t.Errorf("a filter-only sync destroyed the pool sets: %s", sets)
			}
			if !strings.Contains(save(), "-j tby-nat-outgoing") {
				t.Errorf("a filter-only sync touched the nat table:\n%s", save())
			}

			// No natOutgoing pool any more: chain, hook and sets go, others' rules stay.
			want.NAT = RenderNATOutgoing([]EncapPool{{Name: "b", CIDR: netip.MustParsePrefix("10.10.0.0/24")}})
			if err := s.Apply(ctx, &want); err != nil {
				t.Fatal(err)
			}
			out = save()
			if strings.Contains(out, "tby") {
				t.Errorf("tabby's nat rules left:\n%s", out)
			}
			for _, frag := range []string{"-A POSTROUTING -s 192.168.7.0/24 -j MASQUERADE", "-A OTHER -d 5.6.7.8/32 -j RETURN"} {
				if !strings.Contains(out, frag) {
					t.Errorf("another program's nat rule %q is gone:\n%s", frag, out)
				}
			}
			if sets, _ := r.Run(ctx, nil, "ipset", "list", "-n"); strings.Contains(string(sets), "pools") {
				t.Errorf("pool sets left: %s", sets)
			}

			// RemoveAll clears the nat table too.
			if err := s.Apply(ctx, &FilterState{Chains: filter.Chains, Hooks: filter.Hooks, IPSets: filter.IPSets,
				NAT: RenderNATOutgoing([]EncapPool{{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true}})}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := RemoveAll(ctx, r); err != nil {
				t.Fatal(err)
			}
			if out := save(); strings.Contains(out, "tby") {
				t.Errorf("RemoveAll left tabby's nat rules:\n%s", out)
			}
			if sets, _ := r.Run(ctx, nil, "ipset", "list", "-n"); strings.Contains(string(sets), IPSetPrefix) {
				t.Errorf("ipsets left: %s", sets)
			}
		})
	}
}
