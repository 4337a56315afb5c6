package felix

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
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
}
