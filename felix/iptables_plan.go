package felix

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
)

// FilterPlan is what one sync writes.
type FilterPlan struct {
	// Restore is the input of one iptables-restore --noflush; empty when nothing changes.
	Restore []byte
	// Written and Deleted list the chains the restore rewrites and removes.
	Written, Deleted []string
	Hooks            int // hook rules (re)inserted
}

// hookInPlace says whether h is the only hook into its kernel chain and stands right
// after the hooks of the writers before this one, or, appended, below them: last when it
// was appended, and not moved when other programs append rules after it (as Calico's
// append mode leaves them).
func (k KernelFilter) hookInPlace(h Hook) bool {
	hs := k.Hooks[h.Chain]
	if len(hs) != 1 || !hs[0].is(h) {
		return false
	}
	top := k.Lead[h.Chain] + 1
	if h.Append {
		return hs[0].pos > top || hs[0].pos == k.Len[h.Chain]
	}
	return hs[0].pos == top
}

// hooksInPlace says whether every hook of want is in place in k (hookInPlace).
func (k KernelFilter) hooksInPlace(want *FilterState) bool {
	for _, h := range want.Hooks {
		if !k.hookInPlace(h) {
			return false
		}
	}
	return true
}

// PlanTable compares the kernel's table (filter, nat, raw) with the desired state and
// writes only what differs: a chain whose hashes differ is rewritten whole (declaring it
// flushes it), a chain of k not desired is flushed and deleted, and each hook must be its
// chain's first rule after the hooks of writers that stand before it (k.Lead), exactly
// once; an Append hook goes to the bottom of its chain instead. Pure.
func PlanTable(k KernelFilter, want *FilterState, table string) FilterPlan {
	var p FilterPlan
	var b bytes.Buffer
	b.WriteString("*" + table + "\n")
	for _, name := range slices.Sorted(maps.Keys(want.Chains)) {
		have, ok := k.Chains[name]
		rules := want.Chains[name]
		if ok && slices.Equal(have, hashesOf(rules)) {
			continue
		}
		p.Written = append(p.Written, name)
		fmt.Fprintf(&b, ":%s - [0:0]\n", name)
	}
	for _, name := range p.Written {
		for _, r := range want.Chains[name] {
			fmt.Fprintf(&b, "-A %s %s\n", name, r)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(k.Chains)) {
		if _, ok := want.Chains[name]; !ok {
			p.Deleted = append(p.Deleted, name)
		}
	}
	// Hooks before deletions: a stale hook to a deleted chain must go first.
	for _, chain := range slices.Sorted(maps.Keys(k.Hooks)) {
		var want1 *Hook
		for i := range want.Hooks {
			if want.Hooks[i].Chain == chain {
				want1 = &want.Hooks[i]
			}
		}
		if want1 != nil && k.hookInPlace(*want1) {
			continue
		}
		for _, h := range k.Hooks[chain] {
			fmt.Fprintf(&b, "-D %s %s\n", chain, h.text)
		}
	}
	for _, h := range want.Hooks {
		if k.hookInPlace(h) {
			continue
		}
		if h.Append {
			fmt.Fprintf(&b, "-A %s %s\n", h.Chain, h.Rule())
		} else {
			fmt.Fprintf(&b, "-I %s %d %s\n", h.Chain, k.Lead[h.Chain]+1, h.Rule())
		}
		p.Hooks++
	}
	for _, name := range p.Deleted {
		fmt.Fprintf(&b, "-F %s\n", name)
	}
	for _, name := range p.Deleted {
		fmt.Fprintf(&b, "-X %s\n", name)
	}
	b.WriteString("COMMIT\n")
	if len(p.Written)+len(p.Deleted)+p.Hooks > 0 || bytes.Contains(b.Bytes(), []byte("\n-D ")) {
		p.Restore = b.Bytes()
	}
	return p
}
