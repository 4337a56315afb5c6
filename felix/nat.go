package felix

import "slices"

// Names of tabby's natOutgoing state in the IPv4 nat table.
const (
	ChainNATOutgoing = "tby-nat-outgoing"
	IPSetAllPools    = "tby-all-pools"  // every IPv4 pool's CIDR
	IPSetMasqPools   = "tby-masq-pools" // the CIDRs of IPv4 pools with natOutgoing
)

// RenderNATOutgoing computes the nat table state for natOutgoing, as Calico does it:
// traffic from a pool with natOutgoing to anything outside every pool is masqueraded,
// by one rule in tabby's chain ChainNATOutgoing, hooked first in POSTROUTING, matching
// the ipsets IPSetMasqPools (source) and IPSetAllPools (not the destination). Disabled
// pools count too: their workloads keep their addresses. With no natOutgoing pool the
// state is empty, so the chain, hook and sets go. IPv4 only. Pure; never nil.
func RenderNATOutgoing(pools []EncapPool) *FilterState {
	fs := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	var all, masq []string
	for _, p := range pools {
		if !p.CIDR.IsValid() || !p.CIDR.Addr().Is4() {
			continue
		}
		c := p.CIDR.Masked().String()
		all = append(all, c)
		if p.NATOutgoing {
			masq = append(masq, c)
		}
	}
	if len(masq) == 0 {
		return fs
	}
	slices.Sort(all)
	slices.Sort(masq)
	fs.IPSets[IPSetAllPools] = &IPSet{Name: IPSetAllPools, Type: "hash:net", Members: slices.Compact(all)}
	fs.IPSets[IPSetMasqPools] = &IPSet{Name: IPSetMasqPools, Type: "hash:net", Members: slices.Compact(masq)}
	c := &chainBuilder{name: ChainNATOutgoing}
	c.add("-m set --match-set " + IPSetMasqPools + " src -m set ! --match-set " + IPSetAllPools + " dst -j MASQUERADE")
	fs.Chains[c.name] = c.rules
	fs.Hooks = []Hook{{"POSTROUTING", ChainNATOutgoing}}
	return fs
}
