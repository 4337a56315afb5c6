package agent

import (
	"net/netip"
	"testing"

	"github.com/tabby-net/tabby/felix"
)

// felix gets a state only when it differs from the last one handed over: an equal state
// (the encapsulation subsystem's periodic pass hands over a new but equal Encap) would
// cost a pass that reads every route of the table.
func TestStateChanged(t *testing.T) {
	encap := func(subnet string) *felix.Encap {
		return &felix.Encap{LocalSubnet: netip.MustParsePrefix(subnet), VXLANPools: []string{"p"}}
	}
	base := felix.LocalState{Blocks: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/26")}, HoldLearned: true, Encap: encap("172.31.1.0/24")}
	if !stateChanged(nil, base) {
		t.Error("the first state: not handed over")
	}
	same := base
	same.Blocks = []netip.Prefix{netip.MustParsePrefix("10.65.0.0/26")}
	same.Encap = encap("172.31.1.0/24")
	if stateChanged(&base, same) {
		t.Error("an equal state in new slices and a new Encap: handed over again")
	}
	for name, change := range map[string]func(*felix.LocalState){
		"synced":  func(s *felix.LocalState) { s.HoldLearned = false },
		"a block": func(s *felix.LocalState) { s.Blocks = append(s.Blocks, netip.MustParsePrefix("10.65.0.64/26")) },
		"encap":   func(s *felix.LocalState) { s.Encap = encap("172.31.2.0/24") },
		"a workload": func(s *felix.LocalState) {
			s.Workloads = []felix.Workload{{Name: "ns/w", Interface: "tabby0", Addrs: []netip.Addr{netip.MustParseAddr("10.65.0.2")}}}
		},
	} {
		s := base
		change(&s)
		if !stateChanged(&base, s) {
			t.Errorf("%s changed: not handed over", name)
		}
	}
}
