package felix

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/proxy"
)

// TestChainOwner: every chain and hook target policy renders (filter, nat, raw) is
// policy's, every one the iptables proxy mode renders is the proxy's, both within the
// kernel's 28 characters; any other tby- chain (an older tabby's) is policy's to clean,
// and chains that are not tby- (KUBE-, the kernel's, the old TABBY- names) are nobody's.
func TestChainOwner(t *testing.T) {
	for name, want := range map[string]Owner{
		"tby-k-services":             OwnerProxy,
		"tby-k-sep-abcdefghijklmnop": OwnerProxy,
		"tby-k-gone":                 OwnerProxy,
		"tby-FORWARD":                OwnerPolicy,
		"tby-fw-tabby0123456789":     OwnerPolicy,
		"tby-nat-outgoing":           OwnerPolicy,
		"tby-kube":                   OwnerPolicy,
		"tby-gone":                   OwnerPolicy,
		"TABBY-SERVICES":             OwnerNone,
		"KUBE-SERVICES":              OwnerNone,
		"FORWARD":                    OwnerNone,
		"tby":                        OwnerNone,
		"":                           OwnerNone,
	} {
		if got := ChainOwner(name); got != want {
			t.Errorf("ChainOwner(%q) = %d, want %d", name, got, want)
		}
	}

	check := func(what string, fs *FilterState, want Owner) {
		t.Helper()
		for name := range fs.Chains {
			if ChainOwner(name) != want || len(name) > MaxChainName {
				t.Errorf("%s chain %q: owner %d (want %d), %d characters (at most %d)", what, name, ChainOwner(name), want, len(name), MaxChainName)
			}
		}
		for _, h := range fs.Hooks {
			if ChainOwner(h.Target) != want || ChainOwner(h.Chain) != OwnerNone {
				t.Errorf("%s hook %v: the target must be owner %d's, the chain nobody's", what, h, want)
			}
		}
	}
	pol := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
	check("policy filter", pol, OwnerPolicy)
	check("policy nat", RenderNATOutgoing([]EncapPool{{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true}}), OwnerPolicy)
	check("policy raw", RenderDNSNotrack([]netip.Addr{netip.MustParseAddr("169.254.20.10")}), OwnerPolicy)
	local := lbPort("shop", "local", "TCP", "10.96.0.12", 80, 8080, "10.244.1.2")
	local.ExternalLocal, local.LocalBackends = true, local.Backends
	local.NodePort, local.NodePortFamilies = 30080, [2]bool{true, false}
	st := &proxy.LBState{Ports: []proxy.PortLB{lbPort("shop", "web", "TCP", "10.96.0.10", 80, 8080, "10.244.1.2"), lbPort("shop", "empty", "TCP", "10.96.0.11", 80, 8080), local}}
	tables := iptStates(proxy.RenderIPTables(st, proxy.RenderConfig{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}))
	if len(tables["nat"].Chains) < 8 {
		t.Errorf("proxy nat chains %v: the test misses some roles", slices.Sorted(maps.Keys(tables["nat"].Chains)))
	}
	for table, fs := range tables {
		check("proxy "+table, fs, OwnerProxy)
	}
}

// TestJumpTarget reads the chain a rule jumps to.
func TestJumpTarget(t *testing.T) {
	for text, want := range map[string]string{
		`-m comment --comment "tby:hook" -j tby-FORWARD`: "tby-FORWARD",
		"-g tby-k-svc-x":                         "tby-k-svc-x",
		"-j MARK --set-xmark 0x4000/0x4000":      "MARK",
		"-s 10.0.0.0/8 -p tcp -m tcp --dport 80": "",
		"":                                       "",
	} {
		if got := jumpTarget(text); got != want {
			t.Errorf("jumpTarget(%q) = %q, want %q", text, got, want)
		}
	}
}

// ownersSave is a filter table with both writers' chains and hooks, each writer's
// leftover chain, and another program's chain and hook.
const ownersSave = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:tby-FORWARD - [0:0]
:tby-gone - [0:0]
:tby-k-gone - [0:0]
:tby-k-services - [0:0]
-A FORWARD -m comment --comment "tby:hook" -j tby-k-services
-A FORWARD -m comment --comment "tby:hook" -j tby-FORWARD
-A FORWARD -j KUBE-SERVICES
-A tby-FORWARD -m comment --comment "tby:aaaaaaaaaaaaaaaa" -j ACCEPT
-A tby-gone -j RETURN
-A tby-k-gone -j RETURN
-A tby-k-services -m comment --comment "tby:bbbbbbbbbbbbbbbb" -j REJECT --reject-with tcp-reset
COMMIT
`

// TestOwnersLeaveEachOther: each writer reads only its own chains and hooks (the proxy's
// hook first, policy's after it), and its plan deletes only its own leftover, never the
// other writer's chains, hooks or leftover, nor another program's.
func TestOwnersLeaveEachOther(t *testing.T) {
	for _, tc := range []struct {
		owner        Owner
		want         *FilterState
		chains       []string
		lead         int
		gone, others []string
	}{
		{
			owner: OwnerPolicy,
			want: &FilterState{Chains: map[string][]string{"tby-FORWARD": {"-m comment --comment tby:aaaaaaaaaaaaaaaa -j ACCEPT"}},
				Hooks: []Hook{{Chain: "FORWARD", Target: "tby-FORWARD"}}},
			chains: []string{"tby-FORWARD", "tby-gone"}, lead: 1,
			gone: []string{"tby-gone"}, others: []string{"tby-k-", "KUBE-"},
		},
		{
			owner: OwnerProxy,
			want: &FilterState{Chains: map[string][]string{proxy.IPTChainServices: {"-m comment --comment tby:bbbbbbbbbbbbbbbb -j REJECT --reject-with tcp-reset"}},
				Hooks: []Hook{{Chain: "FORWARD", Target: proxy.IPTChainServices}}},
			chains: []string{"tby-k-gone", proxy.IPTChainServices}, lead: 0,
			gone: []string{"tby-k-gone"}, others: []string{"tby-FORWARD", "tby-gone", "KUBE-"},
		},
	} {
		k := ParseTableOf([]byte(ownersSave), "filter", tc.owner)
		if got := slices.Sorted(maps.Keys(k.Chains)); !slices.Equal(got, tc.chains) {
			t.Errorf("owner %d reads chains %v, want %v", tc.owner, got, tc.chains)
		}
		if hs := k.Hooks["FORWARD"]; len(hs) != 1 || hs[0].pos != tc.lead+1 || k.Lead["FORWARD"] != tc.lead {
			t.Errorf("owner %d reads hooks %v, lead %d; want one at %d", tc.owner, hs, k.Lead["FORWARD"], tc.lead+1)
		}
		fp := PlanTable(k, tc.want, "filter")
		if !slices.Equal(fp.Deleted, tc.gone) || len(fp.Written) != 0 || fp.Hooks != 0 {
			t.Errorf("owner %d plans: written %v, deleted %v, %d hooks; want only %v deleted", tc.owner, fp.Written, fp.Deleted, fp.Hooks, tc.gone)
		}
		for _, other := range tc.others {
			if strings.Contains(string(fp.Restore), other) {
				t.Errorf("owner %d touches %s:\n%s", tc.owner, other, fp.Restore)
			}
		}
	}
}
