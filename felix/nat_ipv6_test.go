package felix

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// IPv6 pools get their own natOutgoing state, for the ip6tables nat table: inet6 sets of
// the IPv6 pools only, the same chain and hook; IPv4 pools are not in it, nor IPv6 pools
// in the IPv4 state.
func TestRenderNATOutgoingIPv6(t *testing.T) {
	p := netip.MustParsePrefix
	fs := RenderNATOutgoing([]EncapPool{
		{Name: "v4", CIDR: p("10.244.0.0/16"), NATOutgoing: true},
		{Name: "v6", CIDR: p("fd00:10:244::/64"), NATOutgoing: true},
		{Name: "v6-other", CIDR: p("fd00:99::/64")},
	})
	v6 := fs.IPv6
	if v6 == nil {
		t.Fatal("no IPv6 state")
	}
	all, masq := v6.IPSets[IPSetAllPools6], v6.IPSets[IPSetMasqPools6]
	if all == nil || masq == nil || all.Family != "inet6" || !slices.Equal(all.Members, []string{"fd00:10:244::/64", "fd00:99::/64"}) ||
		!slices.Equal(masq.Members, []string{"fd00:10:244::/64"}) || len(v6.IPSets) != 2 {
		t.Errorf("IPv6 sets %v", v6.IPSets)
	}
	if rules := v6.Chains[ChainNATOutgoing]; len(rules) != 1 || !strings.Contains(rules[0], "--match-set tby-masq-pools6 src -m set ! --match-set tby-all-pools6 dst -j MASQUERADE") {
		t.Errorf("IPv6 rules %q", rules)
	}
	if !slices.Equal(v6.Hooks, []Hook{{Chain: "POSTROUTING", Target: ChainNATOutgoing}}) {
		t.Errorf("IPv6 hooks %v", v6.Hooks)
	}
	if got := fs.IPSets[IPSetAllPools].Members; !slices.Equal(got, []string{"10.244.0.0/16"}) {
		t.Errorf("IPv4 all-pools %v", got)
	}
	// Only IPv4 natOutgoing: the IPv6 state is there, and empty.
	fs = RenderNATOutgoing([]EncapPool{{Name: "v4", CIDR: p("10.244.0.0/16"), NATOutgoing: true}, {Name: "v6", CIDR: p("fd00:10:244::/64")}})
	if fs.IPv6 == nil || len(fs.IPv6.Chains)+len(fs.IPv6.IPSets)+len(fs.IPv6.Hooks) != 0 {
		t.Errorf("IPv6 state without an IPv6 natOutgoing pool: %+v", fs.IPv6)
	}
}

// TestNATOutgoingIPv6SyncerNetns: the syncer writes the IPv6 chain and hook to the
// ip6tables nat table with the inet6 sets, and removes them when the IPv6 pool's
// natOutgoing goes, the IPv4 state staying.
func TestNATOutgoingIPv6SyncerNetns(t *testing.T) {
	requireTools(t, "ip6tables-nft-restore", "ipset")
	backend := BackendNFT
	ns := newTestNS(t)
	ctx := context.Background()
	r := Runner{NetNS: ns.name}
	save6 := func() string {
		t.Helper()
		out, err := r.Run(ctx, nil, backend.Save6, "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	s := testSyncer(t, r, backend)
	filter := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
	want := *filter
	v4 := EncapPool{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true}
	v6 := EncapPool{Name: "b", CIDR: netip.MustParsePrefix("fd00:10:244::/64"), NATOutgoing: true}
	want.NAT = RenderNATOutgoing([]EncapPool{v4, v6})
	if err := s.Apply(ctx, &want); err != nil {
		t.Fatal(err)
	}
	out := save6()
	for _, frag := range []string{`-A POSTROUTING -m comment --comment "tby:hook" -j tby-nat-outgoing`,
		"--match-set tby-masq-pools6 src -m set ! --match-set tby-all-pools6 dst", "-j MASQUERADE"} {
		if !strings.Contains(out, frag) {
			t.Errorf("ip6tables nat table lacks %q:\n%s", frag, out)
		}
	}
	sets, err := r.Run(ctx, nil, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	ks := ParseIPSets(sets)
	if m := ks[IPSetMasqPools6]; m == nil || m.Family != "inet6" || !slices.Equal(m.Members, []string{"fd00:10:244::/64"}) {
		t.Errorf("IPv6 pool sets: %s", sets)
	}

	v6.NATOutgoing = false
	want.NAT = RenderNATOutgoing([]EncapPool{v4, v6})
	if err := s.Apply(ctx, &want); err != nil {
		t.Fatal(err)
	}
	if out := save6(); strings.Contains(out, "tby-nat-outgoing") {
		t.Errorf("IPv6 natOutgoing off, yet:\n%s", out)
	}
	if sets, _ := r.Run(ctx, nil, "ipset", "list", "-n"); strings.Contains(string(sets), IPSetMasqPools6) || !strings.Contains(string(sets), IPSetMasqPools+"\n") {
		t.Errorf("sets after IPv6 natOutgoing went: %s", sets)
	}
}
