package felix

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/proxy"
)

// countingRunner is a Runner that counts the restores it runs.
type countingRunner struct {
	Runner
	restores int
}

func (r *countingRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if strings.HasSuffix(name, "-restore") {
		r.restores++
	}
	return r.Runner.Run(ctx, stdin, name, args...)
}

// TestServiceProxyIPTablesBesidePolicyNetns: the iptables proxy mode and policy share the
// kernel's chains in both orders of start. Each deletes its own leftover chain of an
// older tabby and leaves the other's chains; the proxy's hooks stand first (its REJECT
// before policy's ACCEPT), policy's right after them; a full pass of either then writes
// nothing (no fight over the top of a chain or over chains); RemoveAll (tabby-node cleanup) removes the
// tby-k- chains and hooks with policy's and leaves another program's rules.
func TestServiceProxyIPTablesBesidePolicyNetns(t *testing.T) {
	requireTools(t, "iptables-nft-restore", "iptables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		for _, proxyFirst := range []bool{true, false} {
			name := backend.Name + "/policy-first"
			if proxyFirst {
				name = backend.Name + "/proxy-first"
			}
			t.Run(name, func(t *testing.T) {
				ns := newTestNS(t)
				ctx := context.Background()
				r := Runner{NetNS: ns.name}
				runIptables(t, r, backend, "-A", "FORWARD", "-s", "1.2.3.4/32", "-j", "DROP")
				// Leftovers of an older tabby, one of each writer's, hooked: each is
				// deleted by its owner's first full pass.
				for _, gone := range []string{"tby-gone", proxy.IPTablesChainPrefix + "gone"} {
					runIptables(t, r, backend, "-N", gone)
					runIptables(t, r, backend, "-A", "OUTPUT", "-j", gone)
				}
				pol := testSyncer(t, r, backend)
				want := *RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
				want.NAT = RenderNATOutgoing([]EncapPool{{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true}})
				cr := &countingRunner{Runner: r}
				sp := NewServiceProxyIPTables(ServiceProxyConfig{NetNS: ns.name, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}, backend, cr)
				st := &proxy.LBState{Ports: []proxy.PortLB{
					lbPort("shop", "web", "TCP", "10.96.0.10", 80, 8080, "10.244.1.2"),
					lbPort("shop", "empty", "TCP", "10.96.0.11", 80, 8080),
				}}
				steps := []func() error{
					func() error { return pol.Apply(ctx, &want) },
					func() error { return sp.Apply(ctx, st) },
				}
				if proxyFirst {
					steps[0], steps[1] = steps[1], steps[0]
				}
				for _, step := range steps {
					if err := step(); err != nil {
						t.Fatal(err)
					}
				}
				check := func() {
					t.Helper()
					if out := saveTable(t, r, backend, "filter"); strings.Contains(out, "gone") {
						t.Errorf("an older tabby's chains are left:\n%s", out)
					}
					for table, hooks := range map[string][][2]string{
						"filter": {{"FORWARD", proxy.IPTChainServices}, {"INPUT", proxy.IPTChainServices}},
						"nat":    {{"POSTROUTING", proxy.IPTChainPostrouting}},
					} {
						out := saveTable(t, r, backend, table)
						for _, h := range hooks {
							var rules []string
							for line := range strings.SplitSeq(out, "\n") {
								if strings.HasPrefix(line, "-A "+h[0]+" ") {
									rules = append(rules, line)
								}
							}
							if len(rules) < 2 || !strings.HasSuffix(rules[0], "-j "+h[1]) || ChainOwner(jumpTarget(rules[1])) != OwnerPolicy {
								t.Errorf("%s %s: %q; want the proxy's hook, then policy's", table, h[0], rules)
							}
						}
					}
				}
				check()
				policyRuns, proxyRuns := pol.Stats().RestoreRuns, cr.restores
				for range 2 {
					if err := pol.Apply(ctx, &want); err != nil {
						t.Fatal(err)
					}
					if err := sp.Apply(ctx, st); err != nil {
						t.Fatal(err)
					}
				}
				if pol.Stats().RestoreRuns != policyRuns || cr.restores != proxyRuns {
					t.Errorf("full passes after both wrote: policy ran %d restores, the proxy %d; want none",
						pol.Stats().RestoreRuns-policyRuns, cr.restores-proxyRuns)
				}
				check()

				if _, _, err := RemoveAll(ctx, r); err != nil {
					t.Fatal(err)
				}
				for _, table := range []string{"filter", "nat"} {
					out := saveTable(t, r, backend, table)
					if strings.Contains(out, proxy.IPTablesChainPrefix) || strings.Contains(out, ChainPrefix) {
						t.Errorf("RemoveAll left tabby's rules in %s:\n%s", table, out)
					}
					if table == "filter" && !strings.Contains(out, "-A FORWARD -s 1.2.3.4/32 -j DROP") {
						t.Errorf("RemoveAll removed another program's rule:\n%s", out)
					}
				}
			})
		}
	}
}

// TestPlanIPTablesChangeNetns replays random changes through ApplyCached (the change
// path: list lines deleted and inserted in place) and checks after each that the tables
// equal what a full render of the same state writes: a full pass finds nothing to do.
func TestPlanIPTablesChangeNetns(t *testing.T) {
	requireTools(t, "iptables-legacy-restore")
	ns := newTestNS(t)
	ctx := context.Background()
	cr := &countingRunner{Runner: Runner{NetNS: ns.name}}
	sp := NewServiceProxyIPTables(ServiceProxyConfig{NetNS: ns.name}, BackendLegacy, cr)
	for i, st := range changeSequence() {
		if err := sp.ApplyCached(ctx, st); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		before := cr.restores
		if err := sp.Apply(ctx, st); err != nil {
			t.Fatal(err)
		}
		if cr.restores != before {
			save, _ := cr.Run(ctx, nil, BackendLegacy.Save, "-t", "nat")
			t.Fatalf("step %d: a full pass after the change had to write:\n%s", i, bytes.TrimSpace(save))
		}
	}
}
