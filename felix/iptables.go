package felix

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Backend is the iptables flavour felix drives: its save and restore commands.
type Backend struct {
	Name            string // "nft" or "legacy"
	Save, Restore   string
	Save6, Restore6 string // ip6tables
}

// Backends tabby knows, by name.
var (
	BackendNFT = Backend{Name: "nft", Save: "iptables-nft-save", Restore: "iptables-nft-restore",
		Save6: "ip6tables-nft-save", Restore6: "ip6tables-nft-restore"}
	BackendLegacy = Backend{Name: "legacy", Save: "iptables-legacy-save", Restore: "iptables-legacy-restore",
		Save6: "ip6tables-legacy-save", Restore6: "ip6tables-legacy-restore"}
)

// Runner runs a command, optionally inside a network namespace, and returns its standard
// output. stdin may be nil.
type Runner struct {
	// NetNS, when set, runs commands with "ip netns exec NetNS".
	NetNS string
}

// Run runs name with args.
func (r Runner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if r.NetNS != "" {
		args = append([]string{"netns", "exec", r.NetNS, name}, args...)
		name = "ip"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// DetectBackend picks nft or legacy as Calico's auto mode does: kubelet's hint chain
// (KUBE-IPTABLES-HINT) or tabby's own chains say which one is in use; otherwise the one
// with more rules wins, and nft on a tie (Debian's default). A backend whose save
// command is missing or fails does not count.
func DetectBackend(ctx context.Context, r Runner) (Backend, error) {
	type count struct {
		ok          bool
		rules, hint int
	}
	counts := map[string]count{}
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		out, err := r.Run(ctx, nil, b.Save)
		if err != nil {
			continue
		}
		c := count{ok: true}
		for line := range strings.SplitSeq(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "-A "):
				c.rules++
			case strings.HasPrefix(line, ":KUBE-IPTABLES-HINT "), strings.HasPrefix(line, ":"+ChainForward+" "):
				c.hint++
			}
		}
		counts[b.Name] = c
	}
	nft, legacy := counts["nft"], counts["legacy"]
	switch {
	case !nft.ok && !legacy.ok:
		return Backend{}, errors.New("neither iptables-nft-save nor iptables-legacy-save works: install iptables")
	case !nft.ok:
		return BackendLegacy, nil
	case !legacy.ok:
		return BackendNFT, nil
	case legacy.hint > 0 && nft.hint == 0:
		return BackendLegacy, nil
	case nft.hint > 0 && legacy.hint == 0:
		return BackendNFT, nil
	case legacy.rules > nft.rules:
		return BackendLegacy, nil
	}
	return BackendNFT, nil
}

// KernelFilter is what the kernel has of tabby's in the filter table.
type KernelFilter struct {
	// Chains maps each tby- chain to its rules' hashes, in order; a rule without a tabby
	// hash (added by someone else) has "".
	Chains map[string][]string
	// Hooks maps a kernel chain (FORWARD, INPUT) to the positions (1-based) of rules that
	// jump to tabby chains, with those rules' text.
	Hooks map[string][]hookRule
}

type hookRule struct {
	pos  int
	text string // after "-A CHAIN "
}

// is says whether the kernel's rule is hook h (iptables-save quotes the comment).
func (r hookRule) is(h Hook) bool { return strings.ReplaceAll(r.text, `"`, "") == h.Rule() }

var ruleLineRE = regexp.MustCompile(`^-A (\S+) (.*)$`)
var hashRE = regexp.MustCompile(`--comment "?` + hashCommentPrefix + `([a-z2-7]{16})"?`)

// ParseFilter reads iptables-save output of the filter table, keeping only tabby's
// chains and the rules of other chains that jump to them.
func ParseFilter(save []byte) KernelFilter { return ParseTable(save, "filter") }

// ParseTable is ParseFilter for any table (filter, nat).
func ParseTable(save []byte, table string) KernelFilter {
	k := KernelFilter{Chains: map[string][]string{}, Hooks: map[string][]hookRule{}}
	inFilter := false
	pos := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			inFilter = line == "*"+table
		case !inFilter:
		case strings.HasPrefix(line, ":"+ChainPrefix):
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
			if strings.HasPrefix(chain, ChainPrefix) {
				hash := ""
				if h := hashRE.FindStringSubmatch(text); h != nil {
					hash = h[1]
				}
				k.Chains[chain] = append(k.Chains[chain], hash)
			} else if strings.Contains(text, "-j "+ChainPrefix) || strings.Contains(text, "-g "+ChainPrefix) {
				k.Hooks[chain] = append(k.Hooks[chain], hookRule{pos: pos[chain], text: text})
			}
		}
	}
	return k
}

// ruleHash extracts the hash of a desired rule.
func ruleHash(rule string) string {
	if h := hashRE.FindStringSubmatch(rule); h != nil {
		return h[1]
	}
	return ""
}

// FilterPlan is what one sync writes.
type FilterPlan struct {
	// Restore is the input of one iptables-restore --noflush; empty when nothing changes.
	Restore []byte
	// Written and Deleted list the chains the restore rewrites and removes.
	Written, Deleted []string
	Hooks            int // hook rules (re)inserted
}

// PlanFilter compares the kernel with the desired state and writes only what differs:
// a chain whose hashes differ is rewritten whole (declaring it flushes it), a tby- chain
// not desired is flushed and deleted, and each hook must be its chain's first rule,
// exactly once. Pure.
func PlanFilter(k KernelFilter, want *FilterState) FilterPlan { return PlanTable(k, want, "filter") }

// PlanTable is PlanFilter for any table (filter, nat).
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
		hs := k.Hooks[chain]
		if want1 != nil && len(hs) == 1 && hs[0].pos == 1 && hs[0].is(*want1) {
			continue
		}
		for _, h := range hs {
			fmt.Fprintf(&b, "-D %s %s\n", chain, h.text)
		}
	}
	for _, h := range want.Hooks {
		hs := k.Hooks[h.Chain]
		if len(hs) == 1 && hs[0].pos == 1 && hs[0].is(h) {
			continue
		}
		fmt.Fprintf(&b, "-I %s 1 %s\n", h.Chain, h.Rule())
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

func hashesOf(rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = ruleHash(r)
	}
	return out
}

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

// PolicySyncer makes the kernel's filter table and ipsets match a FilterState.
type PolicySyncer struct {
	run     Runner
	backend Backend
	log     *slog.Logger
	noIPv6  bool // ip6tables does not work here: IPv6 state is not synced

	mu      sync.Mutex
	desired *FilterState
	nat     *FilterState // from UpdateNAT; nil until then
	kick    chan struct{}
	stats   SyncStats
}

// SyncStats counts what the syncer did.
type SyncStats struct {
	Syncs, Writes   int
	RestoreLines    int // lines of the last iptables-restore input
	LastWritten     []string
	RestoreLines6   int // and of ip6tables-restore
	LastWritten6    []string
	LastSetsUpdated []string
	LastWrittenNAT  []string // chains of the nat table the last sync wrote
	LastErr         error
	LastSync        time.Time
	LastTook        time.Duration // of the last sync that wrote something
}

// NewPolicySyncer detects the backend and returns a syncer with nothing desired yet.
func NewPolicySyncer(ctx context.Context, run Runner, log *slog.Logger) (*PolicySyncer, error) {
	if log == nil {
		log = slog.Default()
	}
	b, err := DetectBackend(ctx, run)
	if err != nil {
		return nil, err
	}
	s := &PolicySyncer{run: run, backend: b, log: log, kick: make(chan struct{}, 1)}
	if _, err := run.Run(ctx, nil, b.Save6, "-t", "filter"); err != nil {
		s.noIPv6 = true
		log.Warn("ip6tables does not work: IPv6 policy is not enforced", "err", err)
	}
	log.Info("iptables backend", "backend", b.Name, "ipv6", !s.noIPv6)
	return s, nil
}

// Backend says which backend the syncer uses.
func (s *PolicySyncer) Backend() Backend { return s.backend }

// Stats returns a copy of the counters.
func (s *PolicySyncer) Stats() SyncStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Update sets the desired state; Run applies it.
func (s *PolicySyncer) Update(fs *FilterState) {
	s.mu.Lock()
	s.desired = fs
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// UpdateNAT sets the desired nat table state (RenderNATOutgoing), which Run applies
// beside the filter state of Update: one writer for every tabby ipset, so neither part's
// sets look stale to the other.
func (s *PolicySyncer) UpdateNAT(nat *FilterState) {
	s.mu.Lock()
	s.nat = nat
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run applies each update, and every interval reads the kernel back and repairs what
// was changed from outside (a flushed or edited chain, a missing hook, an altered set).
func (s *PolicySyncer) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
		}
		s.mu.Lock()
		fs := s.desired
		if fs != nil && s.nat != nil {
			c := *fs
			c.NAT = s.nat
			fs = &c
		}
		s.mu.Unlock()
		if fs == nil {
			continue
		}
		if err := s.Apply(ctx, fs); err != nil && ctx.Err() == nil {
			s.log.Error("policy sync failed; retrying at the next resync", "err", err)
		}
	}
}

// Apply makes the kernel match fs once: ipset restore (new and updated sets), one
// iptables-restore --noflush -w of the changed chains and hooks, then destroying stale
// sets.
func (s *PolicySyncer) Apply(ctx context.Context, fs *FilterState) error {
	err := s.apply(ctx, fs)
	s.mu.Lock()
	s.stats.Syncs++
	s.stats.LastErr = err
	s.stats.LastSync = time.Now()
	s.mu.Unlock()
	return err
}

func (s *PolicySyncer) apply(ctx context.Context, fs *FilterState) error {
	start := time.Now()
	v6 := fs.IPv6
	if s.noIPv6 {
		v6 = nil
	}
	// One set plan over both families: each family's sets are stale to the other.
	sets := fs.IPSets
	if v6 != nil || fs.NAT != nil {
		sets = maps.Clone(fs.IPSets)
		if v6 != nil {
			maps.Copy(sets, v6.IPSets)
		}
		if fs.NAT != nil {
			maps.Copy(sets, fs.NAT.IPSets)
		}
	}
	setsOut, err := s.run.Run(ctx, nil, "ipset", "save")
	if err != nil {
		return fmt.Errorf("read ipsets: %w", err)
	}
	have := ParseIPSets(setsOut)
	if fs.NAT == nil { // the nat part is unknown: keep its sets (its rules use them)
		delete(have, IPSetAllPools)
		delete(have, IPSetMasqPools)
	}
	sp := PlanIPSets(have, sets)
	if len(sp.Restore) > 0 {
		if _, err := s.run.Run(ctx, sp.Restore, "ipset", "restore"); err != nil {
			return fmt.Errorf("update ipsets %v: %w", sp.Updated, err)
		}
	}
	fp, err := s.syncTable(ctx, s.backend.Save, s.backend.Restore, "filter", fs)
	if err != nil {
		return err
	}
	var fp6, fpNAT FilterPlan
	if v6 != nil {
		if fp6, err = s.syncTable(ctx, s.backend.Save6, s.backend.Restore6, "filter", v6); err != nil {
			return fmt.Errorf("IPv6: %w", err)
		}
	}
	if fs.NAT != nil {
		if fpNAT, err = s.syncTable(ctx, s.backend.Save, s.backend.Restore, "nat", fs.NAT); err != nil {
			return fmt.Errorf("nat table: %w", err)
		}
	}
	if len(sp.Destroy) > 0 {
		if _, err := s.run.Run(ctx, sp.Destroy, "ipset", "restore"); err != nil {
			return fmt.Errorf("destroy stale ipsets %v: %w", sp.Deleted, err)
		}
	}
	wrote := fp.Restore != nil || fp6.Restore != nil || fpNAT.Restore != nil || len(sp.Restore) > 0 || len(sp.Destroy) > 0
	took := time.Since(start)
	if wrote {
		s.log.Debug("policy synced", "chains", len(fp.Written), "deleted", len(fp.Deleted),
			"chains6", len(fp6.Written), "deleted6", len(fp6.Deleted),
			"sets", len(sp.Updated), "stale-sets", len(sp.Deleted), "took", took)
	}
	s.mu.Lock()
	if wrote {
		s.stats.Writes++
		s.stats.LastTook = took
	}
	s.stats.RestoreLines = bytes.Count(fp.Restore, []byte("\n"))
	s.stats.LastWritten = fp.Written
	s.stats.RestoreLines6 = bytes.Count(fp6.Restore, []byte("\n"))
	s.stats.LastWritten6 = fp6.Written
	s.stats.LastSetsUpdated = sp.Updated
	s.stats.LastWrittenNAT = fpNAT.Written
	s.mu.Unlock()
	return nil
}

// syncTable makes one table (filter or nat, of iptables or ip6tables) match want's
// chains and hooks with one restore --noflush of what differs.
func (s *PolicySyncer) syncTable(ctx context.Context, saveCmd, restoreCmd, table string, want *FilterState) (FilterPlan, error) {
	save, err := s.run.Run(ctx, nil, saveCmd, "-t", table)
	if err != nil {
		return FilterPlan{}, fmt.Errorf("read %s table: %w", table, err)
	}
	fp := PlanTable(ParseTable(save, table), want, table)
	if fp.Restore != nil {
		if _, err := s.run.Run(ctx, fp.Restore, restoreCmd, "--noflush", "-w", "5"); err != nil {
			return FilterPlan{}, fmt.Errorf("write chains %v: %w", fp.Written, err)
		}
		s.log.Debug("iptables written", "cmd", restoreCmd, "chains", len(fp.Written), "deleted", len(fp.Deleted), "hooks", fp.Hooks)
	}
	return fp, nil
}

// RemoveAll deletes every chain, hook and ipset of tabby's from the filter tables (IPv4
// and IPv6) and the IPv4 nat table of both backends (whichever has them) and the
// kernel's ipsets.
func RemoveAll(ctx context.Context, run Runner) (chains, sets int, err error) {
	empty := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	var errs []error
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		for _, cmds := range [][3]string{{b.Save, b.Restore, "filter"}, {b.Save6, b.Restore6, "filter"}, {b.Save, b.Restore, "nat"}} {
			save, err := run.Run(ctx, nil, cmds[0], "-t", cmds[2])
			if err != nil {
				continue // backend or family not installed or not usable
			}
			fp := PlanTable(ParseTable(save, cmds[2]), empty, cmds[2])
			if fp.Restore == nil {
				continue
			}
			if _, err := run.Run(ctx, fp.Restore, cmds[1], "--noflush", "-w", "5"); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", cmds[1], err))
				continue
			}
			chains += len(fp.Deleted)
		}
	}
	if out, err := run.Run(ctx, nil, "ipset", "save"); err == nil {
		sp := PlanIPSets(ParseIPSets(out), nil)
		if len(sp.Destroy) > 0 {
			if _, err := run.Run(ctx, sp.Destroy, "ipset", "restore"); err != nil {
				errs = append(errs, err)
			} else {
				sets = len(sp.Deleted)
			}
		}
	} else if !errors.Is(err, exec.ErrNotFound) {
		errs = append(errs, err)
	}
	return chains, sets, errors.Join(errs...)
}
