package felix

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeRunner is a CommandRunner that keeps an iptables and ipset kernel in memory, enough
// of it for the PolicySyncer: *-save prints tables as iptables-save does, *-restore
// --noflush applies :chain, -A, -I, -D, -F and -X, and ipset save/restore handle
// create, add, flush, swap and destroy. It records every call.
type fakeRunner struct {
	mu    sync.Mutex
	calls []fakeCall
	// missing commands fail as if not installed.
	missing map[string]bool
	// failNext[name] is how many of name's next runs fail (and do nothing).
	failNext map[string]int
	// tables by command family ("iptables-nft", "ip6tables-legacy", ...) and table name.
	tables map[string]map[string]*fakeTable
	sets   map[string]*IPSet
}

type fakeCall struct {
	name  string
	args  []string
	stdin string
}

type fakeTable struct {
	chains []string // in creation order, built-in ones first
	rules  map[string][]string
}

var fakeBuiltins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

func newFakeRunner(missing ...string) *fakeRunner {
	f := &fakeRunner{missing: map[string]bool{}, failNext: map[string]int{}, tables: map[string]map[string]*fakeTable{}, sets: map[string]*IPSet{}}
	for _, m := range missing {
		f.missing[m] = true
	}
	return f
}

// mark is the number of calls so far, for since.
func (f *fakeRunner) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// since returns the calls after mark m as "name args..." (stdin left out).
func (f *fakeRunner) since(m int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls[m:] {
		out = append(out, strings.Join(append([]string{c.name}, c.args...), " "))
	}
	return out
}

// restores returns the stdin of each call of name, in order.
func (f *fakeRunner) restores(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.name == name {
			out = append(out, c.stdin)
		}
	}
	return out
}

// outside applies restore input to family's tables as another program would: not
// recorded as a call.
func (f *fakeRunner) outside(t *testing.T, family, in string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.restore(family, in); err != nil {
		t.Fatal(err)
	}
}

// hasChain says whether family's table holds chain.
func (f *fakeRunner) hasChain(family, table, chain string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.table(family, table).chains, chain)
}

func (f *fakeRunner) table(family, name string) *fakeTable {
	if f.tables[family] == nil {
		f.tables[family] = map[string]*fakeTable{}
	}
	t := f.tables[family][name]
	if t == nil {
		t = &fakeTable{chains: slices.Clone(fakeBuiltins[name]), rules: map[string][]string{}}
		f.tables[family][name] = t
	}
	return t
}

func (f *fakeRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{name: name, args: args, stdin: string(stdin)})
	if f.missing[name] {
		return nil, fmt.Errorf("%s: executable file not found in $PATH", name)
	}
	if f.failNext[name] > 0 {
		f.failNext[name]--
		return nil, fmt.Errorf("%s: injected failure", name)
	}
	switch {
	case name == "ipset" && len(args) == 1 && args[0] == "save":
		return f.ipsetSave(), nil
	case name == "ipset" && len(args) == 1 && args[0] == "restore":
		return nil, f.ipsetRestore(string(stdin))
	case strings.HasSuffix(name, "-save"):
		family := strings.TrimSuffix(name, "-save")
		// Without -t, every table (filter at least), as iptables-save prints those loaded.
		tables := slices.Sorted(maps.Keys(f.tables[family]))
		if !slices.Contains(tables, "filter") {
			tables = append(tables, "filter")
		}
		if len(args) == 2 && args[0] == "-t" {
			tables = args[1:]
		}
		var b strings.Builder
		for _, tn := range tables {
			f.table(family, tn).save(&b, tn)
		}
		return []byte(b.String()), nil
	case strings.HasSuffix(name, "-restore"):
		if !slices.Contains(args, "--noflush") {
			return nil, fmt.Errorf("%s without --noflush", name)
		}
		return nil, f.restore(strings.TrimSuffix(name, "-restore"), string(stdin))
	}
	return nil, fmt.Errorf("fakeRunner: unexpected command %s %v", name, args)
}

func (t *fakeTable) save(b *strings.Builder, name string) {
	fmt.Fprintf(b, "*%s\n", name)
	for _, c := range t.chains {
		policy := "-"
		if slices.Contains(fakeBuiltins[name], c) {
			policy = "ACCEPT"
		}
		fmt.Fprintf(b, ":%s %s [0:0]\n", c, policy)
	}
	for _, c := range t.chains {
		for _, r := range t.rules[c] {
			fmt.Fprintf(b, "-A %s %s\n", c, r)
		}
	}
	b.WriteString("COMMIT\n")
}

func (f *fakeRunner) restore(family, in string) error {
	var t *fakeTable
	exists := func(c string) error {
		if !slices.Contains(t.chains, c) {
			return fmt.Errorf("chain %s does not exist", c)
		}
		return nil
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(in, "\n"), "\n") {
		verb, rest, _ := strings.Cut(line, " ")
		chain, rule, _ := strings.Cut(rest, " ")
		switch {
		case strings.HasPrefix(line, "*"):
			t = f.table(family, line[1:])
		case line == "COMMIT":
			t = nil
		case t == nil:
			return fmt.Errorf("line outside a table: %q", line)
		case strings.HasPrefix(line, ":"):
			c, _, _ := strings.Cut(line[1:], " ")
			if !slices.Contains(t.chains, c) {
				t.chains = append(t.chains, c)
			}
			t.rules[c] = nil
		case verb == "-A":
			if err := exists(chain); err != nil {
				return err
			}
			t.rules[chain] = append(t.rules[chain], rule)
		case verb == "-I":
			if err := exists(chain); err != nil {
				return err
			}
			pos, r, _ := strings.Cut(rule, " ")
			n, err := strconv.Atoi(pos)
			if err != nil || n < 1 || n > len(t.rules[chain])+1 {
				return fmt.Errorf("fakeRunner: insert at %s of %s (%d rules)", pos, chain, len(t.rules[chain]))
			}
			t.rules[chain] = slices.Insert(t.rules[chain], n-1, r)
		case verb == "-D":
			i := slices.Index(t.rules[chain], rule)
			if i < 0 {
				return fmt.Errorf("no rule %q in %s", rule, chain)
			}
			t.rules[chain] = slices.Delete(t.rules[chain], i, i+1)
		case verb == "-F":
			t.rules[chain] = nil
		case verb == "-X":
			if err := exists(chain); err != nil {
				return err
			}
			t.chains = slices.DeleteFunc(t.chains, func(c string) bool { return c == chain })
			delete(t.rules, chain)
		default:
			return fmt.Errorf("fakeRunner: unexpected restore line %q", line)
		}
	}
	return nil
}

func (f *fakeRunner) ipsetSave() []byte {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.sets)) {
		s := f.sets[name]
		family := "inet"
		if s.Family == "inet6" {
			family = "inet6"
		}
		fmt.Fprintf(&b, "create %s %s family %s hashsize 1024 maxelem 65536\n", name, s.Type, family)
		for _, m := range s.Members {
			fmt.Fprintf(&b, "add %s %s\n", name, m)
		}
	}
	return []byte(b.String())
}

func (f *fakeRunner) ipsetRestore(in string) error {
	for line := range strings.SplitSeq(strings.TrimSuffix(in, "\n"), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			return fmt.Errorf("fakeRunner: ipset line %q", line)
		}
		exist := slices.Contains(fs, "-exist")
		s := f.sets[fs[1]]
		switch fs[0] {
		case "create":
			if s != nil && !exist {
				return fmt.Errorf("set %s exists", fs[1])
			}
			if s == nil {
				ns := &IPSet{Name: fs[1], Type: fs[2], Members: []string{}}
				if i := slices.Index(fs, "family"); i > 0 && fs[i+1] == "inet6" {
					ns.Family = "inet6"
				}
				f.sets[fs[1]] = ns
			}
		case "add":
			if s == nil {
				return fmt.Errorf("no set %s", fs[1])
			}
			m := normalizeMembers(s.Type, fs[2:3])[0] // the kernel prints a /32 net as an address
			if !slices.Contains(s.Members, m) {
				s.Members = append(s.Members, m)
			} else if !exist {
				return fmt.Errorf("%s already in %s", m, fs[1])
			}
		case "flush":
			if s == nil {
				return fmt.Errorf("no set %s", fs[1])
			}
			s.Members = []string{}
		case "swap":
			o := f.sets[fs[2]]
			if s == nil || o == nil {
				return fmt.Errorf("swap %s %s: no such set", fs[1], fs[2])
			}
			f.sets[fs[1]], f.sets[fs[2]] = o, s
			o.Name, s.Name = fs[1], fs[2]
		case "destroy":
			if s == nil {
				return fmt.Errorf("no set %s", fs[1])
			}
			delete(f.sets, fs[1])
		default:
			return fmt.Errorf("fakeRunner: ipset line %q", line)
		}
	}
	return nil
}
