package felix

import (
	"maps"
	"slices"
)

// dataplaneCache is what the PolicySyncer last read from the kernel or wrote to it: per
// table (filter and nat, IPv4 and IPv6) tabby's chains with their rule hashes and the
// hooks into kernel chains, as ParseTable would read them back; and every tby ipset with
// its members, as ParseIPSets would. Between full passes the syncer plans against it
// instead of running iptables-save and ipset save. A missing entry is read on use.
type dataplaneCache struct {
	tables map[tableKey]KernelFilter
	sets   KernelSets // nil: not read
}

// tableKey names one table of one family: the save command (iptables-nft-save,
// ip6tables-legacy-save, ...) and the table.
type tableKey struct{ save, table string }

// reset forgets everything, so the next pass reads the kernel again.
func (c *dataplaneCache) reset() { *c = dataplaneCache{} }

// table returns the cached state of key.
func (c *dataplaneCache) table(key tableKey) (KernelFilter, bool) {
	k, ok := c.tables[key]
	return k, ok
}

// setTable records key's state.
func (c *dataplaneCache) setTable(key tableKey, k KernelFilter) {
	if c.tables == nil {
		c.tables = map[tableKey]KernelFilter{}
	}
	c.tables[key] = k
}

// wroteTable records key's state after the restore of fp = PlanTable(have, want, _)
// succeeded, have being the cached state it was planned against: exactly want's chains
// (those fp did not write already had want's hashes), and each hook alone at the top of
// its kernel chain. Two hooks in one kernel chain (which no renderer makes) would leave
// an order this does not model: the table is then forgotten and read again.
func (c *dataplaneCache) wroteTable(key tableKey, have KernelFilter, want *FilterState, fp FilterPlan) {
	for _, name := range fp.Written {
		have.Chains[name] = hashesOf(want.Chains[name])
	}
	for _, name := range fp.Deleted {
		delete(have.Chains, name)
	}
	// The restore deleted every hook not in place and put each wanted one that was not:
	// at the top, or appended last.
	hooks := make(map[string][]hookRule, len(want.Hooks))
	length := maps.Clone(have.Len)
	if length == nil {
		length = map[string]int{}
	}
	for chain, hs := range have.Hooks {
		if i := slices.IndexFunc(want.Hooks, func(h Hook) bool { return h.Chain == chain }); i >= 0 && have.hookInPlace(want.Hooks[i]) {
			hooks[chain] = hs
			continue
		}
		length[chain] -= len(hs)
	}
	for i, h := range want.Hooks {
		if slices.IndexFunc(want.Hooks, func(o Hook) bool { return o.Chain == h.Chain }) != i {
			delete(c.tables, key)
			return
		}
		if _, kept := hooks[h.Chain]; kept {
			continue
		}
		length[h.Chain]++
		pos := have.Lead[h.Chain] + 1
		if h.Append {
			pos = length[h.Chain]
		}
		hooks[h.Chain] = []hookRule{{pos: pos, text: h.Rule()}}
	}
	maps.DeleteFunc(length, func(_ string, n int) bool { return n == 0 }) // as ParseTable counts
	have.Hooks, have.Len = hooks, length
	c.setTable(key, have)
}

// wroteSets records the sets of want named in updated as an ipset restore of
// PlanIPSets(_, want) left them: their type, family and members as ipset save prints them.
func (c *dataplaneCache) wroteSets(want map[string]*IPSet, updated []string) {
	for _, name := range updated {
		w := want[name]
		members := slices.Clone(w.Members)
		slices.Sort(members)
		family := ""
		if w.Family == "inet6" {
			family = "inet6"
		}
		c.sets[name] = &IPSet{Name: name, Type: w.Type, Family: family, Members: normalizeMembers(w.Type, members)}
	}
}

// destroyedSets forgets the sets destroyed.
func (c *dataplaneCache) destroyedSets(names []string) {
	for _, name := range names {
		delete(c.sets, name)
	}
}

// cloneSets is a shallow copy of the cached sets, for a plan to take sets out of.
func (c *dataplaneCache) cloneSets() KernelSets { return maps.Clone(c.sets) }
