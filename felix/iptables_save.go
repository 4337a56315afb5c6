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

// KernelFilter is what the kernel has of tabby's in the filter table.
type KernelFilter struct {
	// Chains maps each tby- chain to its rules' hashes, in order; a rule without a tabby
	// hash (added by someone else) has "".
	Chains map[string][]string
	// Hooks maps a kernel chain (FORWARD, INPUT) to the positions (1-based) of rules that
	// jump to tabby chains, with those rules' text.
	Hooks map[string][]hookRule
	// Lead maps a kernel chain to how many rules at its top are hooks of writers whose
	// hooks stand before these (hookOrder): this writer's hook belongs right after them.
	Lead map[string]int
}

// hookOrder lists the prefixes of the chains of felix's two iptables writers, in the
// order their hooks stand at the top of a kernel chain they share: the Service proxy's
// (iptables mode) first, so that its REJECT of a new connection to a Service without
// endpoints comes before policy's ACCEPT in FORWARD.
var hookOrder = []string{proxy.IPTablesChainPrefix, ChainPrefix}

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

// ParseFilter reads iptables-save output of the filter table, keeping only tabby's
// chains and the rules of other chains that jump to them.
func ParseFilter(save []byte) KernelFilter { return ParseTable(save, "filter") }

// ParseTable is ParseFilter for any table (filter, nat).
func ParseTable(save []byte, table string) KernelFilter {
	return ParseTableOf(save, table, ChainPrefix)
}

// ParseTableOf is ParseTable for the chains starting with prefix (ChainPrefix, or
// proxy.IPTablesChainPrefix for the Service proxy's) and the hooks that jump to them.
func ParseTableOf(save []byte, table, prefix string) KernelFilter {
	k := KernelFilter{Chains: map[string][]string{}, Hooks: map[string][]hookRule{}, Lead: map[string]int{}}
	earlier := hookOrder[:max(0, slices.Index(hookOrder, prefix))]
	jumpsTo := func(text, prefix string) bool {
		return strings.Contains(text, "-j "+prefix) || strings.Contains(text, "-g "+prefix)
	}
	inFilter := false
	pos := map[string]int{}
	below := map[string]bool{} // a chain has had a rule that is not an earlier writer's hook
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			inFilter = line == "*"+table
		case !inFilter:
		case strings.HasPrefix(line, ":"+prefix):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := k.Chains[name]; !ok {
				k.Chains[name] = []string{}
			}
		case strings.HasPrefix(line, "-A "):
			m := ruleLineRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			chain, text := m[1], m[2]
			pos[chain]++
			if strings.HasPrefix(chain, prefix) {
				k.Chains[chain] = append(k.Chains[chain], ruleHash(text))
				continue
			}
			if !below[chain] && slices.ContainsFunc(earlier, func(p string) bool { return jumpsTo(text, p) }) {
				k.Lead[chain]++
			} else {
				below[chain] = true
			}
			if jumpsTo(text, prefix) {
				k.Hooks[chain] = append(k.Hooks[chain], hookRule{pos: pos[chain], text: text})
			}
		}
	}
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
