package felix

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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
