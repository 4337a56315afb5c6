package felix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultPolicyRefresh is the period of the syncer's full passes when none is given.
const DefaultPolicyRefresh = 5 * time.Second

// PolicySyncer makes the kernel's filter table and ipsets match a FilterState.
type PolicySyncer struct {
	run     CommandRunner
	backend Backend
	log     *slog.Logger
	noIPv6  bool // ip6tables does not work here: IPv6 state is not synced
	version string

	// Observe, if set, is told of each apply: WriterIPTables for the table restores, then
	// WriterIPSets for the ipset steps around them, their durations summed (only
	// WriterIPSets when those failed before the tables ran). Set it before Run or Apply.
	Observe ApplyObserver

	// applyMu makes applies one at a time; it guards cache.
	applyMu sync.Mutex
	cache   dataplaneCache

	mu      sync.Mutex
	desired *FilterState
	nat     *FilterState // from UpdateNAT; nil until then
	raw     *FilterState // from UpdateRaw; nil until then
	kick    chan struct{}
	stats   SyncStats

	// clean lists the tables only host endpoint policy writes (mangle of both families,
	// IPv6 raw) that are known to hold nothing of tabby's, so that a nil state for them
	// costs no command; any other is synced, a nil state as an empty one (syncTables).
	// Guarded by applyMu.
	clean map[tableKey]bool

	// Settings changed while Run runs, guarded by mu: the full pass period (Run's
	// argument until SetInterval), whether hooks are appended (SetChainInsertMode), the
	// backend detected at start (SetBackend "auto"), the backend the next pass moves to,
	// and the one that pass left, whose chains are removed once the new one is written.
	interval     time.Duration
	intervalSet  bool
	newInterval  chan struct{}
	appendHooks  bool
	detected     Backend
	nextBackend  *Backend
	staleBackend *Backend
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
	LastApplyTook   time.Duration // of the last sync, whether it wrote or not

	// Cumulative counters, for metrics. A run counts whether or not it succeeded.
	RestoreRuns       int // iptables-restore and ip6tables-restore runs, filter and nat
	RestoreLinesTotal int // lines of input those runs were given
	IPSetRestoreRuns  int // ipset restore runs (creating and updating sets, destroying stale ones)
	// IPSetMembers is how many members tabby's ipsets (both families) hold, as of the
	// last ipset step that succeeded.
	IPSetMembers int
}

// NewPolicySyncer detects the backend and returns a syncer with nothing desired yet.
func NewPolicySyncer(ctx context.Context, run CommandRunner, log *slog.Logger) (*PolicySyncer, error) {
	if log == nil {
		log = slog.Default()
	}
	b, err := DetectBackend(ctx, run)
	if err != nil {
		return nil, err
	}
	s := &PolicySyncer{run: run, backend: b, detected: b, log: log, kick: make(chan struct{}, 1), newInterval: make(chan struct{}, 1)}
	if _, err := run.Run(ctx, nil, b.Save6, "-t", "filter"); err != nil {
		s.noIPv6 = true
		log.Warn("ip6tables does not work: IPv6 policy is not enforced", "err", err)
	}
	if _, real := run.(Runner); real { // go-iptables runs the binary itself: not with fakes
		if s.version, err = BackendVersion(b, false); err != nil {
			log.Warn("iptables version unknown", "err", err)
		}
	}
	log.Info("iptables backend", "backend", b.Name, "version", s.version, "ipv6", !s.noIPv6)
	return s, nil
}

// Backend says which backend the syncer uses.
func (s *PolicySyncer) Backend() Backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backend
}

// SetBackend moves policy's chains to another backend: "auto" (the one detected at
// start), "legacy" or "nft". The next pass writes every chain to the new backend, then
// removes policy's chains and hooks from the old one (until that succeeds, every pass
// tries again); ipsets, which both backends share, stay. Before the syncer was given a
// state, it only chooses the backend, which Backend then returns.
func (s *PolicySyncer) SetBackend(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b Backend
	switch name {
	case "auto":
		b = s.detected
	case BackendLegacy.Name:
		b = BackendLegacy
	case BackendNFT.Name:
		b = BackendNFT
	default:
		return fmt.Errorf("iptables backend %q: want auto, legacy or nft", name)
	}
	if s.desired == nil && s.stats.Syncs == 0 {
		s.backend, s.nextBackend = b, nil // nothing written yet: only a choice
		return nil
	}
	if s.nextBackend == nil && b == s.backend || s.nextBackend != nil && b == *s.nextBackend {
		return nil
	}
	s.nextBackend = &b
	poke(s.kick)
	return nil
}

// SetInterval changes the period of full passes, Run's argument until then; 0 is
// DefaultPolicyRefresh. Setting the period it has changes nothing (the next full pass
// is not put off).
func (s *PolicySyncer) SetInterval(d time.Duration) {
	s.mu.Lock()
	changed := !s.intervalSet || s.interval != d
	s.interval, s.intervalSet = d, true
	s.mu.Unlock()
	if changed {
		poke(s.newInterval)
	}
}

// SetChainInsertMode says whether the hooks into the kernel's chains are appended at
// their bottom (Calico's chainInsertMode Append) rather than inserted at their top; the
// next pass moves them.
func (s *PolicySyncer) SetChainInsertMode(appendHooks bool) {
	s.mu.Lock()
	changed := s.appendHooks != appendHooks
	s.appendHooks = appendHooks
	s.mu.Unlock()
	if changed {
		poke(s.kick)
	}
}

// IPv6 says whether ip6tables works here, so that IPv6 state is synced.
func (s *PolicySyncer) IPv6() bool { return !s.noIPv6 }

// Version is the backend's iptables version ("1.8.9"), from go-iptables; "" when unknown
// or the syncer does not run the real Runner.
func (s *PolicySyncer) Version() string { return s.version }

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
	poke(s.kick)
}

// UpdateNAT sets the desired nat table state (RenderNATOutgoing), which Run applies
// beside the filter state of Update: one writer for every tabby ipset, so neither part's
// sets look stale to the other.
func (s *PolicySyncer) UpdateNAT(nat *FilterState) {
	s.mu.Lock()
	s.nat = nat
	s.mu.Unlock()
	poke(s.kick)
}

// UpdateRaw sets the desired raw table state (RenderDNSNotrack), which Run applies beside
// the filter state of Update, with that state's own Raw (untracked host endpoint policy)
// after it; its IPv6 field likewise in the IPv6 raw table. Until UpdateRaw is called, Run
// leaves the IPv4 raw table alone.
func (s *PolicySyncer) UpdateRaw(raw *FilterState) {
	s.mu.Lock()
	s.raw = raw
	s.mu.Unlock()
	poke(s.kick)
}

// Run applies each update with ApplyCached, and every interval runs a full Apply, which
// reads the kernel back and repairs what was changed from outside (a flushed or edited
// chain, a missing hook, an altered set). An update that fails against the cache is
// retried at once with a full Apply: the kernel may have changed under the cache.
func (s *PolicySyncer) Run(ctx context.Context, interval time.Duration) error {
	s.mu.Lock()
	if !s.intervalSet {
		s.interval = interval
	}
	s.mu.Unlock()
	t := time.NewTicker(s.period())
	defer t.Stop()
	for {
		full := false
		select {
		case <-ctx.Done():
			return nil
		case <-s.newInterval:
			t.Reset(s.period())
			continue
		case <-s.kick:
		case <-t.C:
			full = true
		}
		s.mu.Lock()
		fs := s.desired
		if fs != nil {
			c := *fs
			c.NAT = s.nat
			fs = hooksAppended(withRaw(&c, s.raw), s.appendHooks)
		}
		s.mu.Unlock()
		if fs == nil {
			continue
		}
		full = s.switchBackend() || full
		trusted, err := s.applyOnce(ctx, fs, full)
		if err != nil && trusted && ctx.Err() == nil {
			s.log.Debug("policy sync against the cache failed; reading the kernel and retrying", "err", err)
			_, err = s.applyOnce(ctx, fs, true)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Error("policy sync failed; retrying at the next resync", "err", err)
		}
		if err == nil {
			s.removeStaleBackend(ctx)
		}
	}
}

// period is the full pass period.
func (s *PolicySyncer) period() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interval <= 0 {
		return DefaultPolicyRefresh
	}
	return s.interval
}

// switchBackend makes a pending SetBackend the backend, remembering the old one as
// stale; it says whether it did (the pass must then read the new backend's tables).
func (s *PolicySyncer) switchBackend() bool {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextBackend == nil {
		return false
	}
	old := s.backend
	s.backend, s.nextBackend = *s.nextBackend, nil
	if old == s.backend {
		return false
	}
	// Switched back before the last switch's cleanup: the chains to remove are those
	// that switch wrote.
	s.staleBackend = &old
	s.cache.reset()
	s.clean = nil // the new backend's tables are read and synced whole
	s.log.Info("iptables backend switched", "from", old.Name, "to", s.backend.Name)
	return true
}

// removeStaleBackend removes policy's chains and hooks from the backend a switch left,
// once the new one is written.
func (s *PolicySyncer) removeStaleBackend(ctx context.Context) {
	s.mu.Lock()
	stale := s.staleBackend
	s.mu.Unlock()
	if stale == nil {
		return
	}
	chains, err := removeFrom(ctx, s.run, *stale, []Owner{OwnerPolicy})
	if err != nil {
		s.log.Error("removing policy's chains from the old iptables backend failed; retrying after the next pass", "backend", stale.Name, "err", err)
		return
	}
	s.mu.Lock()
	if s.staleBackend == stale {
		s.staleBackend = nil
	}
	s.mu.Unlock()
	s.log.Info("old iptables backend cleaned", "backend", stale.Name, "chains", chains)
}

// withRaw is fs with raw (UpdateRaw's) before fs's own raw tables' states (combineRaw): its
// IPv4 part in fs.Raw, its IPv6 field, when it has chains, in fs.IPv6.Raw. No raw: fs with
// no IPv4 raw state, which leaves that table alone. fs is not changed.
func withRaw(fs, raw *FilterState) *FilterState {
	c := *fs
	c.Raw = nil
	if raw == nil {
		return &c
	}
	c.Raw = combineRaw(raw, fs.Raw)
	if v6 := raw.IPv6; fs.IPv6 != nil && v6 != nil && len(v6.Chains) > 0 {
		c6 := *fs.IPv6
		c6.Raw = combineRaw(v6, fs.IPv6.Raw)
		c.IPv6 = &c6
	}
	return &c
}

// hooksAppended is fs (and its other tables' states) with every hook appended, or
// inserted; fs is not changed.
func hooksAppended(fs *FilterState, appendHooks bool) *FilterState {
	if fs == nil {
		return nil
	}
	c := *fs
	c.Hooks = slices.Clone(fs.Hooks)
	for i := range c.Hooks {
		c.Hooks[i].Append = appendHooks
	}
	c.IPv6, c.NAT, c.Raw, c.Mangle = hooksAppended(fs.IPv6, appendHooks), hooksAppended(fs.NAT, appendHooks),
		hooksAppended(fs.Raw, appendHooks), hooksAppended(fs.Mangle, appendHooks)
	return &c
}

// Apply makes the kernel match fs once, in a full pass: it reads the kernel's ipsets and
// tables (ipset save, iptables-save), then runs ipset restore (new and updated sets), one
// iptables-restore --noflush -w per table of the changed chains and hooks, then destroys
// stale sets. What it read and wrote becomes the cache ApplyCached plans against.
func (s *PolicySyncer) Apply(ctx context.Context, fs *FilterState) error {
	_, err := s.applyOnce(ctx, fs, true)
	return err
}

// ApplyCached is Apply planned against the cache of what the syncer last read or wrote,
// trusting that nothing else changed tabby's chains and sets since: it reads only what the
// cache lacks, and a table or the ipsets with nothing to write cost no command. Any
// failure empties the cache, so the next pass reads the kernel again.
func (s *PolicySyncer) ApplyCached(ctx context.Context, fs *FilterState) error {
	_, err := s.applyOnce(ctx, fs, false)
	return err
}

// applyOnce is Apply (full) or ApplyCached, with the stats every apply updates; trusted
// says whether it planned anything against the cache.
func (s *PolicySyncer) applyOnce(ctx context.Context, fs *FilterState, full bool) (trusted bool, err error) {
	start := time.Now()
	s.applyMu.Lock()
	if full {
		s.cache.reset()
	}
	trusted = s.cache.tables != nil || s.cache.sets != nil
	err = s.apply(ctx, fs)
	if err != nil {
		s.cache.reset()
	}
	s.applyMu.Unlock()
	s.mu.Lock()
	s.stats.Syncs++
	s.stats.LastErr = err
	s.stats.LastSync = time.Now()
	s.stats.LastApplyTook = s.stats.LastSync.Sub(start)
	s.mu.Unlock()
	return trusted, err
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
			if nat6 := fs.NAT.IPv6; nat6 != nil && v6 != nil {
				maps.Copy(sets, nat6.IPSets)
			}
		}
	}
	sp, stale, setsTook, err := s.syncSets(ctx, fs.NAT == nil, sets)
	if err != nil {
		s.Observe.observe(WriterIPSets, setsTook, err)
		return err
	}
	tablesStart := time.Now()
	tp, err := s.syncTables(ctx, fs, v6)
	s.Observe.observeSince(WriterIPTables, tablesStart, err)
	if err != nil {
		s.Observe.observe(WriterIPSets, setsTook, nil) // what ran of the ipset steps succeeded
		return err
	}
	destroyStart := time.Now()
	err = s.destroySets(ctx, sp, stale)
	s.Observe.observe(WriterIPSets, setsTook+time.Since(destroyStart), err)
	if err != nil {
		return err
	}
	fp, fp6 := tp.filter, tp.filter6
	wrote := tp.wrote() || len(sp.Restore) > 0 || len(sp.Destroy) > 0
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
	s.stats.LastWrittenNAT = tp.nat.Written
	s.mu.Unlock()
	return nil
}

// syncSets reads the kernel's ipsets (unless cached) and creates and updates those of
// sets that differ; stale sets, holding stale members, stay until destroySets (rules may
// still use them). With keepNAT, the nat part's sets are left alone: that part is
// unknown, and its rules use them.
func (s *PolicySyncer) syncSets(ctx context.Context, keepNAT bool, sets map[string]*IPSet) (sp SetsPlan, stale int, took time.Duration, err error) {
	start := time.Now()
	if s.cache.sets == nil {
		setsOut, err := s.run.Run(ctx, nil, "ipset", "save")
		if err != nil {
			return SetsPlan{}, 0, time.Since(start), fmt.Errorf("read ipsets: %w", err)
		}
		s.cache.sets = ParseIPSets(setsOut)
	}
	have := s.cache.cloneSets()
	members := 0
	if keepNAT {
		for _, name := range []string{IPSetAllPools, IPSetMasqPools, IPSetAllPools6, IPSetMasqPools6} {
			if h := have[name]; h != nil {
				members += len(h.Members)
				delete(have, name)
			}
		}
	}
	sp = PlanIPSets(have, sets)
	for _, set := range sets {
		members += len(set.Members)
	}
	for _, name := range sp.Deleted {
		stale += len(have[name].Members)
	}
	if len(sp.Restore) > 0 {
		s.mu.Lock()
		s.stats.IPSetRestoreRuns++
		s.mu.Unlock()
		if _, err := s.run.Run(ctx, sp.Restore, "ipset", "restore"); err != nil {
			return sp, stale, time.Since(start), fmt.Errorf("update ipsets %v: %w", sp.Updated, err)
		}
		s.cache.wroteSets(sets, sp.Updated)
	}
	s.mu.Lock()
	s.stats.IPSetMembers = members + stale
	s.mu.Unlock()
	return sp, stale, time.Since(start), nil
}

// destroySets destroys the stale sets of sp, which hold stale members, once no rule uses
// them.
func (s *PolicySyncer) destroySets(ctx context.Context, sp SetsPlan, stale int) error {
	if len(sp.Destroy) == 0 {
		return nil
	}
	s.mu.Lock()
	s.stats.IPSetRestoreRuns++
	s.mu.Unlock()
	if _, err := s.run.Run(ctx, sp.Destroy, "ipset", "restore"); err != nil {
		return fmt.Errorf("destroy stale ipsets %v: %w", sp.Deleted, err)
	}
	s.cache.destroyedSets(sp.Deleted)
	s.mu.Lock()
	s.stats.IPSetMembers -= stale
	s.mu.Unlock()
	return nil
}

// tablePlans are the plans one apply ran, by table.
type tablePlans struct {
	filter, filter6, nat, raw, mangle, raw6, mangle6 FilterPlan
}

// wrote says whether any of the plans wrote something.
func (p tablePlans) wrote() bool {
	for _, fp := range []FilterPlan{p.filter, p.filter6, p.nat, p.raw, p.mangle, p.raw6, p.mangle6} {
		if fp.Restore != nil {
			return true
		}
	}
	return false
}

// syncTables makes the IPv4 filter table, the IPv6 one (v6, unless nil), the nat table
// (fs.NAT, unless nil; its IPv6 part too unless v6 is nil), the IPv4 raw table (fs.Raw,
// unless nil) and the mangle tables and the IPv6 raw one (fs.Mangle, v6.Raw, v6.Mangle:
// host endpoint policy; when nil, empty unless the table is known to hold nothing of
// tabby's) match. The tables of a family that are not cached are read with one save of
// them all (readUncached): a full pass reads each family once, however many tables it
// syncs.
func (s *PolicySyncer) syncTables(ctx context.Context, fs, v6 *FilterState) (tp tablePlans, err error) {
	b := s.backend
	var nat6 FilterPlan
	jobs := []tableJob{{b.Save, b.Restore, "filter", fs, false, &tp.filter, ""}}
	if v6 != nil {
		jobs = append(jobs, tableJob{b.Save6, b.Restore6, "filter", v6, false, &tp.filter6, "IPv6: "})
	}
	if fs.NAT != nil {
		jobs = append(jobs, tableJob{b.Save, b.Restore, "nat", fs.NAT, false, &tp.nat, "nat table: "})
		if fs.NAT.IPv6 != nil && v6 != nil {
			jobs = append(jobs, tableJob{b.Save6, b.Restore6, "nat", fs.NAT.IPv6, false, &nat6, "IPv6 nat table: "})
		}
	}
	if fs.Raw != nil {
		jobs = append(jobs, tableJob{b.Save, b.Restore, "raw", fs.Raw, false, &tp.raw, "raw table: "})
	}
	jobs = append(jobs, tableJob{b.Save, b.Restore, "mangle", fs.Mangle, true, &tp.mangle, "mangle table: "})
	if v6 != nil {
		jobs = append(jobs, tableJob{b.Save6, b.Restore6, "raw", v6.Raw, true, &tp.raw6, "IPv6 raw table: "},
			tableJob{b.Save6, b.Restore6, "mangle", v6.Mangle, true, &tp.mangle6, "IPv6 mangle table: "})
	}
	jobs = slices.DeleteFunc(jobs, func(j tableJob) bool { return j.want == nil && s.clean[tableKey{j.save, j.table}] })
	// One lock over the pass: a table read here is as fresh as syncTable's own read.
	hookMu.Lock()
	defer hookMu.Unlock()
	fresh, err := s.readUncached(ctx, jobs)
	if err != nil {
		return tp, err
	}
	for _, j := range jobs {
		want := j.want
		if want == nil {
			want = &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
		}
		if *j.plan, err = s.syncTable(ctx, j.save, j.restore, j.table, want, fresh[tableKey{j.save, j.table}]); err != nil {
			return tp, fmt.Errorf("%s%w", j.what, err)
		}
		if j.hostOnly {
			if s.clean == nil {
				s.clean = map[tableKey]bool{}
			}
			s.clean[tableKey{j.save, j.table}] = len(want.Chains) == 0 && len(want.Hooks) == 0
		}
	}
	tp.nat.Written = append(tp.nat.Written, nat6.Written...)
	if tp.nat.Restore == nil {
		tp.nat.Restore = nat6.Restore
	}
	return tp, nil
}

// tableJob is one table a pass syncs: its family's save and restore commands, the table,
// the state wanted (nil, for a table only host endpoint policy writes, hostOnly, is an
// empty one), where its plan goes and what an error of it is prefixed with.
type tableJob struct {
	save, restore, table string
	want                 *FilterState
	hostOnly             bool
	plan                 *FilterPlan
	what                 string
}

// readUncached reads, for each family with two or more of jobs' tables not cached, all
// its tables with one save (no -t) and caches jobs' tables from it, which it returns; a
// table the save does not print (not in the kernel yet) is cached as empty. A family with
// one uncached table is left to syncTable, which reads that table alone. The caller holds
// hookMu.
func (s *PolicySyncer) readUncached(ctx context.Context, jobs []tableJob) (map[tableKey]bool, error) {
	uncached := map[string][]string{} // save command: tables
	var saves []string
	for _, j := range jobs {
		if _, ok := s.cache.table(tableKey{j.save, j.table}); ok {
			continue
		}
		if uncached[j.save] == nil {
			saves = append(saves, j.save)
		}
		uncached[j.save] = append(uncached[j.save], j.table)
	}
	fresh := map[tableKey]bool{}
	for _, save := range saves {
		tables := uncached[save]
		if len(tables) < 2 {
			continue
		}
		out, err := s.run.Run(ctx, nil, save)
		if err != nil {
			return nil, fmt.Errorf("read %s tables: %w", strings.Join(tables, ", "), err)
		}
		for _, table := range tables {
			s.cache.setTable(tableKey{save, table}, ParseTable(out, table))
			fresh[tableKey{save, table}] = true
		}
	}
	return fresh, nil
}

// syncTable makes one table (filter or nat, of iptables or ip6tables) match want's
// chains and hooks with one restore --noflush of what differs, planned against the cache
// (the table is read when not cached, or when a hook is to be inserted and the cache was
// not read in this pass, fresh); nothing to write runs nothing. The caller holds hookMu.
func (s *PolicySyncer) syncTable(ctx context.Context, saveCmd, restoreCmd, table string, want *FilterState, fresh bool) (FilterPlan, error) {
	key := tableKey{saveCmd, table}
	have, ok := s.cache.table(key)
	// A hook to (re)insert goes after the Service proxy's hooks, which the cache may not
	// know of (they came after it was read): read the table first.
	if !ok || (!fresh && !have.hooksInPlace(want)) {
		save, err := s.run.Run(ctx, nil, saveCmd, "-t", table)
		if err != nil {
			return FilterPlan{}, fmt.Errorf("read %s table: %w", table, err)
		}
		have = ParseTable(save, table)
		s.cache.setTable(key, have)
	}
	fp := PlanTable(have, want, table)
	if fp.Restore != nil {
		s.mu.Lock()
		s.stats.RestoreRuns++
		s.stats.RestoreLinesTotal += bytes.Count(fp.Restore, []byte("\n"))
		s.mu.Unlock()
		if _, err := s.run.Run(ctx, fp.Restore, restoreCmd, "--noflush", "-w", "5"); err != nil {
			return FilterPlan{}, fmt.Errorf("write chains %v: %w", fp.Written, err)
		}
		s.cache.wroteTable(key, have, want, fp)
		s.log.Debug("iptables written", "cmd", restoreCmd, "chains", len(fp.Written), "deleted", len(fp.Deleted), "hooks", fp.Hooks)
	}
	return fp, nil
}

// RemoveAll deletes every chain of both of felix's iptables writers (ChainOwner: policy's
// and the Service proxy's in iptables mode) and the hooks into them, from the tables they
// write (filter, nat, raw and mangle of both families) of both backends (whichever has them),
// and tabby's ipsets.
func RemoveAll(ctx context.Context, run CommandRunner) (chains, sets int, err error) {
	var errs []error
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		n, err := removeFrom(ctx, run, b, hookOrder)
		chains += n
		errs = append(errs, err)
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

// removeFrom deletes the chains of owners and the hooks into them from every table
// tabby writes in backend b (a table or family b cannot read is skipped), and says how
// many chains it deleted.
func removeFrom(ctx context.Context, run CommandRunner, b Backend, owners []Owner) (chains int, err error) {
	empty := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	var errs []error
	for _, cmds := range [][2]string{{b.Save, b.Restore}, {b.Save6, b.Restore6}} {
		for _, table := range []string{"filter", "nat", "raw", "mangle"} {
			save, err := run.Run(ctx, nil, cmds[0], "-t", table)
			if err != nil {
				continue // backend, family or table not installed or not usable
			}
			var restore []byte
			deleted := 0
			for _, owner := range owners {
				fp := PlanTable(ParseTableOf(save, table, owner), empty, table)
				restore = append(restore, fp.Restore...)
				deleted += len(fp.Deleted)
			}
			if restore == nil {
				continue
			}
			if _, err := run.Run(ctx, restore, cmds[1], "--noflush", "-w", "5"); err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s: %w", cmds[1], table, err))
				continue
			}
			chains += deleted
		}
	}
	return chains, errors.Join(errs...)
}
