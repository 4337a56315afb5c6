package felix

import "slices"

// Names of tabby's natOutgoing state in the nat tables.
const (
	ChainNATOutgoing = "tby-nat-outgoing"
	IPSetAllPools    = "tby-all-pools"   // every IPv4 pool's CIDR
	IPSetMasqPools   = "tby-masq-pools"  // the CIDRs of IPv4 pools with natOutgoing
	IPSetAllPools6   = "tby-all-pools6"  // every IPv6 pool's CIDR (inet6)
	IPSetMasqPools6  = "tby-masq-pools6" // the CIDRs of IPv6 pools with natOutgoing (inet6)
)

// RenderNATOutgoing computes the nat tables' state for natOutgoing, as Calico does it:
// traffic from a pool with natOutgoing to anything outside every pool of its family is
// masqueraded, by one rule in tabby's chain ChainNATOutgoing, hooked first in
// POSTROUTING, matching the ipsets IPSetMasqPools (source) and IPSetAllPools (not the
// destination). Disabled pools count too: their workloads keep their addresses. The
// result is the IPv4 nat table's state; its IPv6 field is the ip6tables nat table's,
// with IPSetMasqPools6 and IPSetAllPools6. A family with no natOutgoing pool has an
// empty state, so its chain, hook and sets go. Pure; never nil, nor its IPv6 field.
func RenderNATOutgoing(pools []EncapPool) *FilterState {
	fs := renderNATFamily(pools, false)
	fs.IPv6 = renderNATFamily(pools, true)
	return fs
}

func renderNATFamily(pools []EncapPool, v6 bool) *FilterState {
	fs := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	allName, masqName, family := IPSetAllPools, IPSetMasqPools, ""
	if v6 {
		allName, masqName, family = IPSetAllPools6, IPSetMasqPools6, "inet6"
	}
	var all, masq []string
	for _, p := range pools {
		if !p.CIDR.IsValid() || p.CIDR.Addr().Is6() != v6 {
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
	fs.IPSets[allName] = &IPSet{Name: allName, Type: "hash:net", Family: family, Members: slices.Compact(all)}
	fs.IPSets[masqName] = &IPSet{Name: masqName, Type: "hash:net", Family: family, Members: slices.Compact(masq)}
	c := &chainBuilder{name: ChainNATOutgoing}
	c.add("-m set --match-set " + masqName + " src -m set ! --match-set " + allName + " dst -j MASQUERADE")
	fs.Chains[c.name] = c.rules
	fs.Hooks = []Hook{{Chain: "POSTROUTING", Target: ChainNATOutgoing}}
	return fs
}
