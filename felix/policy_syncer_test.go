package felix

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/proxy"
)

// fakeState is a small policy state: two chains, a hook, and one set.
func fakeState() *FilterState {
	return &FilterState{
		Chains: map[string][]string{
			ChainForward: {
				"-m comment --comment tby:aaaaaaaaaaaaaaaa -j tby-pi-x",
			},
			"tby-pi-x": {
				"-m set --match-set tbyn-x src -m comment --comment tby:bbbbbbbbbbbbbbbb -j ACCEPT",
				"-m comment --comment tby:cccccccccccccccc -j DROP",
			},
		},
		Hooks: []Hook{{Chain: "FORWARD", Target: ChainForward}},
		IPSets: map[string]*IPSet{
			"tbyn-x": {Name: "tbyn-x", Type: "hash:net", Members: []string{"10.65.0.5/32", "10.66.0.0/24"}},
		},
	}
}

func newFakeSyncer(t *testing.T, f *fakeRunner) *PolicySyncer {
	t.Helper()
	s, err := NewPolicySyncer(context.Background(), f, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicySyncerFakeRunner(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save", "ip6tables-nft-save")
	s := newFakeSyncer(t, f)
	if s.Backend() != BackendNFT {
		t.Fatalf("backend %v, want nft", s.Backend())
	}
	ctx := context.Background()
	if err := s.Apply(ctx, fakeState()); err != nil {
		t.Fatal(err)
	}
	wantRestore := `*filter
:tby-FORWARD - [0:0]
:tby-pi-x - [0:0]
-A tby-FORWARD -m comment --comment tby:aaaaaaaaaaaaaaaa -j tby-pi-x
-A tby-pi-x -m set --match-set tbyn-x src -m comment --comment tby:bbbbbbbbbbbbbbbb -j ACCEPT
-A tby-pi-x -m comment --comment tby:cccccccccccccccc -j DROP
-I FORWARD 1 -m comment --comment tby:hook -j tby-FORWARD
COMMIT
`
	if got := f.restores("iptables-nft-restore"); !slices.Equal(got, []string{wantRestore}) {
		t.Errorf("iptables-nft-restore input:\n%q\nwant:\n%q", got, wantRestore)
	}
	wantSets := "create tbyn-x hash:net family inet\nadd tbyn-x 10.65.0.5/32 -exist\nadd tbyn-x 10.66.0.0/24 -exist\n"
	if got := f.restores("ipset"); !slices.Equal(got, []string{"", wantSets}) { // save, then restore
		t.Errorf("ipset input:\n%q\nwant %q", got, wantSets)
	}

	// The same state again: read back, nothing written.
	before := len(f.calls)
	if err := s.Apply(ctx, fakeState()); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.calls[before:] {
		if strings.HasSuffix(c.name, "-restore") || slices.Equal(c.args, []string{"restore"}) {
			t.Errorf("second apply wrote: %s %v\n%s", c.name, c.args, c.stdin)
		}
	}
	if st := s.Stats(); len(st.LastWritten) != 0 || st.RestoreLines != 0 || len(st.LastSetsUpdated) != 0 || st.Writes != 1 || st.Syncs != 2 {
		t.Errorf("stats after the second apply: %+v", st)
	}
	if _, err := s.Hooked(ctx); !errors.Is(err, ErrNeedsRunner) {
		t.Errorf("Hooked with a fake runner: %v, want ErrNeedsRunner", err)
	}
}

// observed records an ApplyObserver's calls.
type observed struct {
	mu    sync.Mutex
	calls []observation
}

type observation struct {
	writer string
	failed bool
}

func (o *observed) observer() ApplyObserver {
	return func(writer string, d time.Duration, err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if d < 0 {
			panic("negative duration")
		}
		o.calls = append(o.calls, observation{writer, err != nil})
	}
}

// take returns the calls so far and forgets them.
func (o *observed) take() []observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.calls
	o.calls = nil
	return c
}

func TestPolicySyncerStatsAndObserver(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	s := newFakeSyncer(t, f)
	var obs observed
	s.Observe = obs.observer()
	ctx := context.Background()
	want := fakeState()
	want.IPv6 = &FilterState{
		Chains: map[string][]string{ChainForward: {"-m comment --comment tby:dddddddddddddddd -j DROP"}},
		Hooks:  []Hook{{Chain: "FORWARD", Target: ChainForward}},
		IPSets: map[string]*IPSet{"tbyn6-x": {Name: "tbyn6-x", Type: "hash:net", Family: "inet6", Members: []string{"fd00::1/128"}}},
	}
	ok := []observation{{WriterIPTables, false}, {WriterIPSets, false}} // ipsets end after the tables
	type counters struct{ runs, lines, setRuns, members int }
	check := func(step string, want counters) {
		t.Helper()
		st := s.Stats()
		if got := (counters{st.RestoreRuns, st.RestoreLinesTotal, st.IPSetRestoreRuns, st.IPSetMembers}); got != want {
			t.Errorf("%s: counters %+v, want %+v", step, got, want)
		}
		if st.LastApplyTook <= 0 {
			t.Errorf("%s: LastApplyTook %v", step, st.LastApplyTook)
		}
	}

	// First apply: one restore per family (8 and 5 lines), one ipset restore, 3 members.
	if err := s.Apply(ctx, want); err != nil {
		t.Fatal(err)
	}
	check("first apply", counters{2, 13, 1, 3})
	if got := obs.take(); !slices.Equal(got, ok) {
		t.Errorf("first apply observed %v, want %v", got, ok)
	}

	// In sync: the counters stay, each writer is still observed.
	if err := s.Apply(ctx, want); err != nil {
		t.Fatal(err)
	}
	check("second apply", counters{2, 13, 1, 3})
	if got := obs.take(); !slices.Equal(got, ok) {
		t.Errorf("second apply observed %v, want %v", got, ok)
	}

	// The IPv6 set goes (its rule with it) and the IPv4 set grows: an ipset restore that
	// updates, one ip6tables-restore of 4 lines (*filter, the chain, its rule, COMMIT), and
	// a second ipset restore that destroys the stale set.
	want.IPv6.Chains[ChainForward] = []string{"-m comment --comment tby:eeeeeeeeeeeeeeee -j ACCEPT"}
	want.IPv6.IPSets = nil
	want.IPSets["tbyn-x"].Members = append(want.IPSets["tbyn-x"].Members, "10.67.0.0/24")
	if err := s.Apply(ctx, want); err != nil {
		t.Fatal(err)
	}
	check("third apply", counters{3, 13 + 4, 3, 3})
	if got := obs.take(); !slices.Equal(got, ok) {
		t.Errorf("third apply observed %v, want %v", got, ok)
	}
	if _, ok := f.sets["tbyn6-x"]; ok {
		t.Error("stale set tbyn6-x not destroyed")
	}

	// A failing iptables-restore: iptables observed as failed, ipsets as not, and the run
	// still counts.
	want.Chains[ChainForward] = append(want.Chains[ChainForward], "-m comment --comment tby:ffffffffffffffff -j DROP")
	f.missing["iptables-nft-restore"] = true
	if err := s.Apply(ctx, want); err == nil {
		t.Fatal("apply with a failing iptables-nft-restore succeeded")
	}
	check("failed apply", counters{4, 17 + 5, 3, 3})
	if got, want := obs.take(), []observation{{WriterIPTables, true}, {WriterIPSets, false}}; !slices.Equal(got, want) {
		t.Errorf("failed apply observed %v, want %v", got, want)
	}
	if st := s.Stats(); st.LastErr == nil || st.Syncs != 4 {
		t.Errorf("failed apply: LastErr %v, Syncs %d", st.LastErr, st.Syncs)
	}

	// A failing ipset save: only ipsets observed, as failed.
	f.missing["ipset"] = true
	if err := s.Apply(ctx, want); err == nil {
		t.Fatal("apply without ipset succeeded")
	}
	if got, want := obs.take(), []observation{{WriterIPSets, true}}; !slices.Equal(got, want) {
		t.Errorf("apply without ipset observed %v, want %v", got, want)
	}
}

// cachedState is fakeState with an IPv6 table of its own.
func cachedState() *FilterState {
	fs := fakeState()
	fs.IPv6 = &FilterState{
		Chains: map[string][]string{ChainForward: {"-m comment --comment tby:dddddddddddddddd -j DROP"}},
		Hooks:  []Hook{{Chain: "FORWARD", Target: ChainForward}},
		IPSets: map[string]*IPSet{"tbyn6-x": {Name: "tbyn6-x", Type: "hash:net", Family: "inet6", Members: []string{"fd00::1/128"}}},
	}
	return fs
}

// reads are the commands a pass runs to read the kernel back.
var fullReads = []string{"ipset save", "iptables-nft-save -t filter", "ip6tables-nft-save -t filter"}

func TestPolicySyncerCache(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	s := newFakeSyncer(t, f)
	ctx := context.Background()
	want := cachedState()
	drifted := false // changed from outside: the cache differs until a full pass
	step := func(what string, apply func(context.Context, *FilterState) error, wantCalls ...string) {
		t.Helper()
		m := f.mark()
		if err := apply(ctx, want); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := f.since(m); !slices.Equal(got, wantCalls) {
			t.Errorf("%s ran %q, want %q", what, got, wantCalls)
		}
		if !drifted {
			cacheMatchesKernel(t, what, s, f)
		}
	}

	// Nothing cached yet: the first update reads everything, and the tables only host
	// endpoint policy writes (both mangle tables, IPv6 raw) once, so that stale chains of
	// a past run would go (there are none): each family's tables with one save of them
	// all. Later passes find those tables clean and read each family's filter table alone.
	step("first update", s.ApplyCached, fullReads[0], "ipset restore", "iptables-nft-save", "ip6tables-nft-save",
		"iptables-nft-restore --noflush -w 5", "ip6tables-nft-restore --noflush -w 5")

	// The same state: nothing read, nothing run.
	step("unchanged update", s.ApplyCached)

	// One IPv4 chain changed: one iptables-restore of that chain, no save, no ipset, and
	// nothing for IPv6.
	want.Chains["tby-pi-x"] = append(slices.Clone(want.Chains["tby-pi-x"][:1]), "-m comment --comment tby:gggggggggggggggg -j REJECT")
	step("one chain changed", s.ApplyCached, "iptables-nft-restore --noflush -w 5")
	wantRestore := "*filter\n:tby-pi-x - [0:0]\n" +
		"-A tby-pi-x -m set --match-set tbyn-x src -m comment --comment tby:bbbbbbbbbbbbbbbb -j ACCEPT\n" +
		"-A tby-pi-x -m comment --comment tby:gggggggggggggggg -j REJECT\nCOMMIT\n"
	if got := f.restores("iptables-nft-restore"); got[len(got)-1] != wantRestore {
		t.Errorf("one chain changed wrote:\n%s\nwant:\n%s", got[len(got)-1], wantRestore)
	}
	if st := s.Stats(); !slices.Equal(st.LastWritten, []string{"tby-pi-x"}) || len(st.LastWritten6) != 0 || len(st.LastSetsUpdated) != 0 {
		t.Errorf("one chain changed: stats %+v", st)
	}

	// One set's members changed: one ipset restore, no table.
	want.IPSets["tbyn-x"].Members = append(slices.Clone(want.IPSets["tbyn-x"].Members), "10.67.0.0/24")
	step("one set changed", s.ApplyCached, "ipset restore")
	if st := s.Stats(); !slices.Equal(st.LastSetsUpdated, []string{"tbyn-x"}) || st.IPSetMembers != 4 {
		t.Errorf("one set changed: stats %+v", st)
	}

	// The IPv6 set goes with its rule: ip6tables-restore, then the stale set destroyed.
	want.IPv6.Chains[ChainForward] = []string{"-m comment --comment tby:eeeeeeeeeeeeeeee -j ACCEPT"}
	want.IPv6.IPSets = nil
	step("IPv6 set gone", s.ApplyCached, "ip6tables-nft-restore --noflush -w 5", "ipset restore")
	step("unchanged update after the destroy", s.ApplyCached)

	// A full pass reads everything back and, in sync, writes nothing.
	step("refresh", s.Apply, fullReads...)

	// A chain deleted from outside (with the hook to it) stays deleted while updates trust
	// the cache, and the next full pass puts both back, writing only them.
	f.outside(t, "iptables-nft", "*filter\n-D FORWARD -m comment --comment tby:hook -j tby-FORWARD\n-F tby-FORWARD\n-X tby-FORWARD\nCOMMIT\n")
	drifted = true
	step("update after the drift", s.ApplyCached)
	if f.hasChain("iptables-nft", "filter", ChainForward) {
		t.Fatal("the fake kept the chain")
	}
	drifted = false
	step("refresh after the drift", s.Apply, fullReads[0], fullReads[1], "iptables-nft-restore --noflush -w 5", fullReads[2])
	if st := s.Stats(); !slices.Equal(st.LastWritten, []string{ChainForward}) {
		t.Errorf("the repair wrote %v, want [%s]", st.LastWritten, ChainForward)
	}
	if !f.hasChain("iptables-nft", "filter", ChainForward) {
		t.Error("the refresh did not restore the deleted chain")
	}
	step("unchanged update after the repair", s.ApplyCached)

	// A failed restore empties the cache: the next update reads everything again.
	want.Chains["tby-pi-x"] = fakeState().Chains["tby-pi-x"]
	f.failNext["iptables-nft-restore"] = 1
	if err := s.ApplyCached(ctx, want); err == nil {
		t.Fatal("apply with a failing iptables-nft-restore succeeded")
	}
	step("update after a failed restore", s.ApplyCached, fullReads[0], fullReads[1], "iptables-nft-restore --noflush -w 5", fullReads[2])
	step("unchanged update after the retry", s.ApplyCached)

	// A failed ipset restore likewise.
	want.IPSets["tbyn-x"].Members = want.IPSets["tbyn-x"].Members[:1]
	f.failNext["ipset"] = 1
	if err := s.ApplyCached(ctx, want); err == nil {
		t.Fatal("apply with a failing ipset restore succeeded")
	}
	step("update after a failed ipset restore", s.ApplyCached, fullReads[0], "ipset restore", fullReads[1], fullReads[2])
}

func TestPolicySyncerRunCache(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	s := newFakeSyncer(t, f)
	want := cachedState()
	// run runs s.Run with interval until fn (polled) is true, within 5s.
	run := func(what string, interval time.Duration, fn func() bool) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, interval) }()
		defer func() { cancel(); <-done }()
		s.Update(want)
		for deadline := time.Now().Add(5 * time.Second); !fn(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s; calls %q", what, f.since(0))
			}
		}
	}
	synced := func() bool { st := s.Stats(); return st.Syncs > 0 && st.LastErr == nil }
	run("first sync", time.Hour, synced)

	// An update whose write fails against the cache is retried at once, reading the
	// kernel: the change is in place long before the next full pass.
	want.Chains["tby-pi-x"] = want.Chains["tby-pi-x"][:1]
	f.failNext["iptables-nft-restore"] = 1
	m := f.mark()
	run("retry", time.Hour, func() bool { st := s.Stats(); return st.Syncs >= 3 && st.LastErr == nil })
	if got, want := f.since(m), append([]string{"iptables-nft-restore --noflush -w 5"}, fullReads[0], fullReads[1], "iptables-nft-restore --noflush -w 5", fullReads[2]); !slices.Equal(got, want) {
		t.Errorf("a failed update then its retry ran %q, want %q", got, want)
	}

	// A chain deleted from outside is put back by the periodic full pass.
	f.outside(t, "iptables-nft", "*filter\n-F tby-pi-x\n-X tby-pi-x\nCOMMIT\n")
	m = f.mark()
	run("drift repair", 20*time.Millisecond, func() bool { return f.hasChain("iptables-nft", "filter", "tby-pi-x") })
	if got := f.since(m); !slices.Contains(got, "iptables-nft-save -t filter") {
		t.Errorf("the repair did not read the table: %q", got)
	}
}

// cacheMatchesKernel checks that what s cached is what reading f's kernel gives.
func cacheMatchesKernel(t *testing.T, what string, s *PolicySyncer, f *fakeRunner) {
	t.Helper()
	ctx := context.Background()
	for key, cached := range s.cache.tables {
		save, err := f.Run(ctx, nil, key.save, "-t", key.table)
		if err != nil {
			t.Fatal(err)
		}
		if k := ParseTable(save, key.table); !reflect.DeepEqual(cached, k) {
			t.Errorf("%s: cached %v %+v, the kernel has %+v", what, key, cached, k)
		}
	}
	if s.cache.sets == nil {
		return
	}
	save, err := f.Run(ctx, nil, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	sorted := func(ks KernelSets) KernelSets {
		out := KernelSets{}
		for name, set := range ks {
			c := *set
			c.Members = slices.Sorted(slices.Values(set.Members))
			out[name] = &c
		}
		return out
	}
	show := func(ks KernelSets) (out []IPSet) {
		for _, name := range slices.Sorted(maps.Keys(ks)) {
			out = append(out, *ks[name])
		}
		return out
	}
	if ks := ParseIPSets(save); !reflect.DeepEqual(sorted(s.cache.sets), sorted(ks)) {
		t.Errorf("%s: cached sets %+v, the kernel has %+v", what, show(s.cache.sets), show(ks))
	}
}

// TestPolicySyncerHookAfterProxy: a hook the policy syncer inserts between full passes
// goes after the Service proxy's hook in the same kernel chain, though the proxy put its
// hook there after the syncer's cache was read: the syncer reads the table again before
// inserting a hook, so the proxy's REJECT stays before policy's ACCEPT.
func TestPolicySyncerHookAfterProxy(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	s := newFakeSyncer(t, f)
	ctx := context.Background()
	want := cachedState()
	if err := s.ApplyCached(ctx, want); err != nil {
		t.Fatal(err)
	}
	// The proxy's iptables mode hooks INPUT, the cache knowing nothing of it.
	svc := proxy.IPTChainServices
	f.outside(t, "iptables-nft", "*filter\n:"+svc+" - [0:0]\n-I INPUT 1 -m comment --comment tby:hook -j "+svc+"\nCOMMIT\n")
	want.Chains[ChainInput] = []string{"-m comment --comment tby:hhhhhhhhhhhhhhhh -j ACCEPT"}
	want.Hooks = append(want.Hooks, Hook{Chain: "INPUT", Target: ChainInput})
	m := f.mark()
	if err := s.ApplyCached(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, wantCalls := f.since(m), []string{"iptables-nft-save -t filter", "iptables-nft-restore --noflush -w 5"}; !slices.Equal(got, wantCalls) {
		t.Errorf("a new hook between full passes ran %q, want %q (read the table, then write)", got, wantCalls)
	}
	f.mu.Lock()
	input := slices.Clone(f.table("iptables-nft", "filter").rules["INPUT"])
	f.mu.Unlock()
	if len(input) != 2 || !strings.HasSuffix(input[0], "-j "+svc) || !strings.HasSuffix(input[1], "-j "+ChainInput) {
		t.Errorf("INPUT: %q, want the proxy's hook, then policy's", input)
	}
}

// TestPolicySyncerLiveSettings: settings changed while Run runs reach the kernel without
// a restart. Append mode moves the hook below another program's rule in FORWARD (and
// back on Insert); a backend switch writes the chains to the new backend and removes
// them and their hook from the old one, leaving other programs' rules; a shorter
// interval makes the full passes that repair drift.
func TestPolicySyncerLiveSettings(t *testing.T) {
	f := newFakeRunner()
	f.outside(t, "iptables-legacy", "*filter\n-A FORWARD -s 10.9.0.0/16 -j ACCEPT\nCOMMIT\n") // auto picks legacy, which has rules
	s := newFakeSyncer(t, f)
	if got := s.Backend().Name; got != "legacy" {
		t.Fatalf("detected backend %s, want legacy", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	s.Update(fakeState())
	forward := func(family string) []string {
		f.mu.Lock()
		defer f.mu.Unlock()
		if tb := f.table(family, "filter"); tb != nil {
			return slices.Clone(tb.rules["FORWARD"])
		}
		return nil
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s; legacy FORWARD %q, nft FORWARD %q", what, forward("iptables-legacy"), forward("iptables-nft"))
			}
		}
	}
	hookAt := func(family string, i int) func() bool {
		return func() bool {
			fw := forward(family)
			n := 0
			for _, r := range fw {
				if strings.HasSuffix(r, "-j "+ChainForward) {
					n++
				}
			}
			if i < 0 {
				i = len(fw) - 1
			}
			return n == 1 && len(fw) == 2 && i < len(fw) && strings.HasSuffix(fw[i], "-j "+ChainForward)
		}
	}
	waitFor("hook inserted at the top", hookAt("iptables-legacy", 0))

	s.SetChainInsertMode(true)
	waitFor("hook moved to the bottom", hookAt("iptables-legacy", -1))
	s.SetChainInsertMode(false)
	waitFor("hook back at the top", hookAt("iptables-legacy", 0))

	if err := s.SetBackend("nftables"); err == nil {
		t.Error("SetBackend(nftables) succeeded, want an error naming the choices")
	}
	if err := s.SetBackend("nft"); err != nil {
		t.Fatal(err)
	}
	waitFor("chains on nft, gone from legacy", func() bool {
		return f.hasChain("iptables-nft", "filter", "tby-pi-x") && !f.hasChain("iptables-legacy", "filter", "tby-pi-x") &&
			slices.Equal(forward("iptables-legacy"), []string{"-s 10.9.0.0/16 -j ACCEPT"}) && len(forward("iptables-nft")) == 1
	})
	if got := s.Backend().Name; got != "nft" {
		t.Errorf("Backend() = %s after the switch, want nft", got)
	}
	if err := s.SetBackend("auto"); err != nil {
		t.Fatal(err)
	}
	waitFor("back on the detected backend", func() bool {
		return f.hasChain("iptables-legacy", "filter", "tby-pi-x") && !f.hasChain("iptables-nft", "filter", "tby-pi-x")
	})

	// A chain flushed from outside waits for the next full pass: an hour, until the
	// interval is shortened.
	s.SetInterval(20 * time.Millisecond)
	f.outside(t, "iptables-legacy", "*filter\n-F tby-pi-x\nCOMMIT\n")
	waitFor("drift repaired by the shorter full pass", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.table("iptables-legacy", "filter").rules["tby-pi-x"]) == 2
	})
}

// TestPolicySyncerAppendCache: an appended hook goes below another program's rule, the
// cache records where (it matches the kernel read back, and an unchanged pass writes
// nothing), a rule another program appends later does not move the hook (as Calico's
// append mode leaves it), and insert mode takes it back to the top.
func TestPolicySyncerAppendCache(t *testing.T) {
	f := newFakeRunner("iptables-legacy-save")
	f.outside(t, "iptables-nft", "*filter\n-A FORWARD -s 10.9.0.0/16 -j ACCEPT\nCOMMIT\n")
	s := newFakeSyncer(t, f)
	ctx := context.Background()
	forward := func() []string {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Clone(f.table("iptables-nft", "filter").rules["FORWARD"])
	}
	isHook := func(r string) bool { return strings.HasSuffix(r, "-j "+ChainForward) }
	apply := func(what string, appendHooks bool) {
		t.Helper()
		if err := s.ApplyCached(ctx, hooksAppended(fakeState(), appendHooks)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		cacheMatchesKernel(t, what, s, f)
	}

	apply("appended", true)
	if fw := forward(); len(fw) != 2 || !isHook(fw[1]) {
		t.Fatalf("FORWARD after an appended hook: %q, want the other rule, then the hook", fw)
	}
	m := f.mark()
	apply("appended again", true)
	if got := f.since(m); slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "restore") }) {
		t.Errorf("an unchanged pass wrote: %q", got)
	}

	f.outside(t, "iptables-nft", "*filter\n-A FORWARD -s 10.8.0.0/16 -j DROP\nCOMMIT\n")
	if err := s.Apply(ctx, hooksAppended(fakeState(), true)); err != nil {
		t.Fatal(err)
	}
	cacheMatchesKernel(t, "a rule appended after the hook", s, f)
	if fw := forward(); len(fw) != 3 || !isHook(fw[1]) {
		t.Errorf("FORWARD after another program appended a rule: %q, want the hook left in the middle", fw)
	}

	apply("inserted", false)
	if fw := forward(); len(fw) != 3 || !isHook(fw[0]) || slices.IndexFunc(fw[1:], isHook) >= 0 {
		t.Errorf("FORWARD back in insert mode: %q, want the hook first and once", fw)
	}
}

// TestPolicySyncerSameInterval: setting the interval the syncer has (the agent does on
// every render) does not wake Run to reset its ticker, which would put the full pass
// off for as long as renders come faster than the interval.
func TestPolicySyncerSameInterval(t *testing.T) {
	s := newFakeSyncer(t, newFakeRunner("iptables-legacy-save"))
	s.SetInterval(time.Second)
	if len(s.newInterval) != 1 {
		t.Fatal("a new interval did not wake Run")
	}
	<-s.newInterval
	s.SetInterval(time.Second)
	if len(s.newInterval) != 0 {
		t.Error("the same interval woke Run to reset its ticker")
	}
}

// TestPolicySyncerBackendCleanupRetried: when removing policy's chains from the old
// backend fails, the new backend keeps working and a later pass removes them.
func TestPolicySyncerBackendCleanupRetried(t *testing.T) {
	f := newFakeRunner()
	s := newFakeSyncer(t, f)
	if got := s.Backend().Name; got != "nft" {
		t.Fatalf("detected %s on empty tables, want nft", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	s.Update(fakeState())
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s; calls %q", what, f.since(0))
			}
		}
	}
	waitFor("chains on nft", func() bool { return f.hasChain("iptables-nft", "filter", "tby-pi-x") })
	f.mu.Lock()
	f.failNext["iptables-nft-restore"] = 1 // the cleanup's first restore
	f.mu.Unlock()
	if err := s.SetBackend("legacy"); err != nil {
		t.Fatal(err)
	}
	waitFor("chains on legacy, the failed cleanup leaving nft's", func() bool {
		f.mu.Lock()
		failed := f.failNext["iptables-nft-restore"] == 0
		f.mu.Unlock()
		return failed && f.hasChain("iptables-legacy", "filter", "tby-pi-x")
	})
	if !f.hasChain("iptables-nft", "filter", "tby-pi-x") {
		t.Fatal("the failed cleanup removed nft's chains")
	}
	s.SetInterval(20 * time.Millisecond) // the next full pass retries
	waitFor("nft cleaned by a later pass", func() bool { return !f.hasChain("iptables-nft", "filter", "tby-pi-x") })
	if !f.hasChain("iptables-legacy", "filter", "tby-pi-x") {
		t.Error("legacy lost policy's chains")
	}
}
