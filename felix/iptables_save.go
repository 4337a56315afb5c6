package felix

import (
	"bufio"
	"bytes"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/tabby-net/tabby/proxy"
)

// KernelFilter is what the kernel has of one of tabby's iptables writers in a table.
type KernelFilter struct {
	// Chains maps each of the writer's chains to its rules' hashes, in order; a rule
	// without a tabby hash (added by someone else) has "".
	Chains map[string][]string
	// Hooks maps a chain that is not tabby's (FORWARD, INPUT) to the positions (1-based)
	// of rules that jump to the writer's chains, with those rules' text.
	Hooks map[string][]hookRule
	// Lead maps a kernel chain to how many rules at its top are hooks of writers whose
	// hooks stand before these (hookOrder): this writer's hook belongs right after them.
	Lead map[string]int
	// Len maps each kernel chain that is not tabby's to how many rules it has (the
	// other writer's hooks included): an appended hook belongs last.
	Len map[string]int
}

// Owner is which of felix's two iptables writers owns a chain. All of tabby's chains
// start with ChainPrefix (tby-); the Service proxy's (iptables mode) with the longer
// proxy.IPTablesChainPrefix (tby-k-), and every other tby- chain is policy's. Each writer
// reads, rewrites and deletes only the chains it owns and the hooks jumping to them,
// and deletes those of its own it did not render, leftovers of an older tabby included;
// so a tby- chain is always someone's to clean, and neither writer touches the other's.
type Owner int

// The owners of a chain.
const (
	OwnerNone   Owner = iota // not tabby's
	OwnerPolicy              // PolicySyncer (and RenderNATOutgoing, RenderNoTrack)
	OwnerProxy               // ServiceProxyIPTables
)

// ChainOwner returns the writer that owns the chain named name.
func ChainOwner(name string) Owner {
	switch {
	case strings.HasPrefix(name, proxy.IPTablesChainPrefix):
		return OwnerProxy
	case strings.HasPrefix(name, ChainPrefix):
		return OwnerPolicy
	}
	return OwnerNone
}

// hookOrder lists felix's two iptables writers in the order their hooks stand at the top
// of a kernel chain they share: the Service proxy's (iptables mode) first, so that its
// REJECT of a new connection to a Service without endpoints comes before policy's ACCEPT
// in FORWARD.
var hookOrder = []Owner{OwnerProxy, OwnerPolicy}

// hookMu serializes those writers from reading a table to restoring it: a hook's place
// depends on the other writer's hooks (KernelFilter.Lead), so a plan made on a read that
// the other's restore changed meanwhile would insert the hook in the wrong place (policy's
// ACCEPT before the proxy's REJECT until the proxy's next full pass).
var hookMu sync.Mutex

type hookRule struct {
	pos  int
	text string // after "-A CHAIN "
}

// is says whether the kernel's rule is hook h (iptables-save quotes the comment).
func (r hookRule) is(h Hook) bool { return strings.ReplaceAll(r.text, `"`, "") == h.Rule() }

var ruleLineRE = regexp.MustCompile(`^-A (\S+) (.*)$`)

// jumpTarget returns the chain a rule's text jumps to or goes to (-j, -g); "" if none.
// It reads the words in place: ParseTableOf calls it on every rule of other programs'.
func jumpTarget(text string) string {
	word := func(s string) (string, string) {
		w, rest, _ := strings.Cut(strings.TrimLeft(s, " "), " ")
		return w, rest
	}
	for rest := text; rest != ""; {
		var w string
		if w, rest = word(rest); w == "-j" || w == "-g" {
			target, _ := word(rest)
			return target
		}
	}
	return ""
}

// ParseFilter reads iptables-save output of the filter table, keeping only policy's
// chains and the rules of other chains that jump to them.
func ParseFilter(save []byte) KernelFilter { return ParseTable(save, "filter") }

// ParseTable is ParseFilter for any table (filter, nat, raw).
func ParseTable(save []byte, table string) KernelFilter {
	return ParseTableOf(save, table, OwnerPolicy)
}

// ParseTableOf is ParseTable for the chains of owner (OwnerPolicy, or OwnerProxy for the
// Service proxy's) and the hooks that jump to them from chains that are not tabby's. The
// other writer's chains are not read at all.
func ParseTableOf(save []byte, table string, owner Owner) KernelFilter {
	k := KernelFilter{Chains: map[string][]string{}, Hooks: map[string][]hookRule{}, Lead: map[string]int{}}
	earlier := hookOrder[:max(0, slices.Index(hookOrder, owner))]
	inTable := false
	pos := map[string]int{}
	below := map[string]bool{} // a chain has had a rule that is not an earlier writer's hook
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			inTable = line == "*"+table
		case !inTable:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := k.Chains[name]; !ok && ChainOwner(name) == owner {
				k.Chains[name] = []string{}
			}
		case strings.HasPrefix(line, "-A "):
			m := ruleLineRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			chain, text := m[1], m[2]
			switch ChainOwner(chain) {
			case owner:
				k.Chains[chain] = append(k.Chains[chain], ruleHash(text))
				continue
			case OwnerNone:
			default:
				continue // the other writer's
			}
			pos[chain]++
			target := ChainOwner(jumpTarget(text))
			if !below[chain] && slices.Contains(earlier, target) {
				k.Lead[chain]++
			} else {
				below[chain] = true
			}
			if target == owner {
				k.Hooks[chain] = append(k.Hooks[chain], hookRule{pos: pos[chain], text: text})
			}
		}
	}
	k.Len = pos
	return k
}

// ruleHash extracts the hash of a rule, desired or read back: the 16 characters of
// [a-z2-7] after the first `--comment tby:` or `--comment "tby:` that has them; "" if
// none does. It is what the regexp `--comment "?tby:([a-z2-7]{16})` finds, without the
// regexp, which took most of an update's own time: a sync plans every desired rule.
func ruleHash(rule string) string {
	const comment = "--comment "
	for {
		i := strings.Index(rule, comment)
		if i < 0 {
			return ""
		}
		rest := strings.TrimPrefix(rule[i+len(comment):], `"`)
		if h, ok := strings.CutPrefix(rest, hashCommentPrefix); ok && len(h) >= hashLen && isHash(h[:hashLen]) {
			return h[:hashLen]
		}
		rule = rule[i+1:]
	}
}

const hashLen = 16

// isHash says whether every byte of h is in [a-z2-7].
func isHash(h string) bool {
	for i := range len(h) {
		if c := h[i]; (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

func hashesOf(rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = ruleHash(r)
	}
	return out
}
