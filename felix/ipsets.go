package felix

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// KernelSets maps each tby ipset to its type and members.
type KernelSets map[string]*IPSet

// ParseIPSets reads `ipset save` output, keeping tabby's sets.
func ParseIPSets(save []byte) KernelSets {
	ks := KernelSets{}
	for line := range strings.SplitSeq(string(save), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasPrefix(f[1], IPSetPrefix) {
			continue
		}
		switch f[0] {
		case "create":
			ks[f[1]] = &IPSet{Name: f[1], Type: f[2], Members: []string{}}
			if i := slices.Index(f, "family"); i > 0 && i+1 < len(f) && f[i+1] == "inet6" {
				ks[f[1]].Family = "inet6"
			}
		case "add":
			if s := ks[f[1]]; s != nil {
				s.Members = append(s.Members, f[2])
			}
		}
	}
	return ks
}

// SetsPlan is what one sync does to ipsets: Restore (ipset restore input, before the
// iptables restore) creates and updates sets, Destroy (after it, when no rule uses
// them any more) removes stale ones.
type SetsPlan struct {
	Restore, Destroy []byte
	Updated          []string
	Deleted          []string
}

// tempSet names the set an update is built in before it is swapped in.
func tempSet(name string) string { return IPSetPrefix + "t" + name[len(IPSetPrefix)+1:] }

// PlanIPSets: a new set is created with its members; a set whose members differ is
// built whole in a temporary set and swapped in (atomic for the rules using it); a set of
// another type is destroyed and recreated... which its rules prevent, so type is part of
// every set's name and that does not happen. Pure.
func PlanIPSets(have KernelSets, want map[string]*IPSet) SetsPlan {
	var p SetsPlan
	var b, d bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		h := have[name]
		members := slices.Clone(w.Members)
		slices.Sort(members)
		if h != nil {
			hm := slices.Clone(h.Members)
			slices.Sort(hm)
			if h.Type == w.Type && h.Family == w.Family && slices.Equal(hm, normalizeMembers(w.Type, members)) {
				continue
			}
		}
		p.Updated = append(p.Updated, name)
		family := "inet"
		if w.Family == "inet6" {
			family = "inet6"
		}
		target := name
		if h != nil {
			target = tempSet(name)
			fmt.Fprintf(&b, "create %s %s family %s -exist\nflush %s\n", target, w.Type, family, target)
		} else {
			fmt.Fprintf(&b, "create %s %s family %s\n", target, w.Type, family)
		}
		for _, m := range members {
			fmt.Fprintf(&b, "add %s %s -exist\n", target, m)
		}
		if h != nil {
			fmt.Fprintf(&b, "swap %s %s\ndestroy %s\n", target, name, target)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[name]; !ok {
			p.Deleted = append(p.Deleted, name)
			fmt.Fprintf(&d, "destroy %s\n", name)
		}
	}
	p.Restore, p.Destroy = b.Bytes(), d.Bytes()
	return p
}

// normalizeMembers writes members as ipset save prints them: a /32 or /128 net without
// its length.
func normalizeMembers(typ string, ms []string) []string {
	if typ != "hash:net" {
		return ms
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		if strings.Contains(m, ":") {
			out[i] = strings.TrimSuffix(m, "/128")
		} else {
			out[i] = strings.TrimSuffix(m, "/32")
		}
	}
	slices.Sort(out)
	return out
}
