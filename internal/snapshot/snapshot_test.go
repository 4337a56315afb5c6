package snapshot

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

func kind(t testing.TB, plural string) *api.Kind {
	k, err := api.LookupKind(plural)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// countingSource is a Source whose Watch calls are counted and whose events the test sends.
type countingSource struct {
	mu      sync.Mutex
	watches map[string]int
	chans   map[string]chan datastore.Event
}

func newCountingSource(kinds []*api.Kind) *countingSource {
	s := &countingSource{watches: map[string]int{}, chans: map[string]chan datastore.Event{}}
	for _, k := range kinds {
		s.chans[k.Plural] = make(chan datastore.Event, 16)
	}
	return s
}

func (s *countingSource) Watch(_ context.Context, k *api.Kind, _ string, _ int64) <-chan datastore.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches[k.Plural]++
	return s.chans[k.Plural]
}

type fakeAffinities chan map[netip.Prefix]string

func (f fakeAffinities) WatchAllAffinities(context.Context) <-chan map[netip.Prefix]string { return f }

func pool(name, cidr string) *api.IPPool {
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.VersionCalico}}
	p.Name, p.Spec.CIDR = name, cidr
	return p
}

func node(name string) *api.Node {
	n := &api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}}
	n.Name = name
	return n
}

// waitView waits for a notification and returns the view that satisfies ok.
func waitView(t *testing.T, s *Snapshot, sub <-chan struct{}, ok func(*View) bool) *View {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if v := s.View(); ok(v) {
			return v
		}
		select {
		case <-sub:
		case <-deadline:
			t.Fatalf("no such view within 5s; last: synced=%v generation=%d", s.View().Synced, s.View().Generation)
		}
	}
}

func TestOneWatchPerKindAndSynced(t *testing.T) {
	pools, nodes := kind(t, "ippools"), kind(t, "nodes")
	src := newCountingSource([]*api.Kind{pools, nodes})
	aff := make(fakeAffinities, 1)
	s := New(src, aff, []*api.Kind{pools, nodes}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := s.Subscribe()
	go s.Run(ctx)

	src.chans["ippools"] <- datastore.Event{Type: datastore.Added, Resource: pool("a", "10.0.0.0/16")}
	src.chans["ippools"] <- datastore.Event{Type: datastore.Synced}
	src.chans["nodes"] <- datastore.Event{Type: datastore.Added, Resource: node("n1")}
	src.chans["nodes"] <- datastore.Event{Type: datastore.Synced}
	v := waitView(t, s, sub, func(v *View) bool { return v.Count(nodes) == 1 && v.Count(pools) == 1 })
	if v.Synced {
		t.Fatal("view synced before the affinity watch delivered anything")
	}
	aff <- map[netip.Prefix]string{netip.MustParsePrefix("10.0.1.0/26"): "n1", netip.MustParsePrefix("10.0.0.0/26"): "n1", netip.MustParsePrefix("10.0.2.0/26"): "n2"}
	v = waitView(t, s, sub, func(v *View) bool { return v.Synced })
	if got, want := v.AffineBlocks("n1"), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/26"), netip.MustParsePrefix("10.0.1.0/26")}; !slices.Equal(got, want) {
		t.Errorf("AffineBlocks(n1) = %v, want %v", got, want)
	}
	if p, ok := Get[*api.IPPool](v, "", "a"); !ok || p.Spec.CIDR != "10.0.0.0/16" {
		t.Errorf("Get pool a = %v, %v", p, ok)
	}
	src.mu.Lock()
	if src.watches["ippools"] != 1 || src.watches["nodes"] != 1 || len(src.watches) != 2 {
		t.Errorf("watches opened = %v, want one per kind", src.watches)
	}
	src.mu.Unlock()

	// A change to nodes leaves the pools' map shared: Differs tells them apart.
	src.chans["nodes"] <- datastore.Event{Type: datastore.Added, Resource: node("n2")}
	v2 := waitView(t, s, sub, func(v *View) bool { return v.Count(nodes) == 2 })
	if v2.Differs(v, false, pools) {
		t.Error("pools differ after a change to nodes only")
	}
	if !v2.Differs(v, false, nodes) {
		t.Error("nodes do not differ after a node was added")
	}
	if v2.Differs(v, true) {
		t.Error("affinities differ though none changed")
	}
	// The old view is unchanged: readers may keep it.
	if v.Count(nodes) != 1 {
		t.Errorf("an earlier view changed: %d nodes", v.Count(nodes))
	}
	if got := List[*api.Node](v2); len(got) != 2 || got[0].Name != "n1" || got[1].Name != "n2" {
		t.Errorf("List nodes = %v, want n1, n2 in key order", got)
	}

	// A second Synced of a kind is a resync; an error is reported until it.
	src.chans["nodes"] <- datastore.Event{Type: datastore.Error, Err: context.DeadlineExceeded}
	deadline := time.Now().Add(5 * time.Second)
	for len(s.WatchErrors()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if errs := s.WatchErrors(); errs["nodes"] == nil {
		t.Fatalf("WatchErrors = %v, want nodes' error", errs)
	}
	src.chans["nodes"] <- datastore.Event{Type: datastore.Synced}
	waitView(t, s, sub, func(*View) bool { return s.Resyncs() == 1 })
	if errs := s.WatchErrors(); len(errs) != 0 {
		t.Errorf("WatchErrors after the resync = %v, want none", errs)
	}
}

func TestSubscribeAfterPublishIsSignalled(t *testing.T) {
	pools := kind(t, "ippools")
	src := newCountingSource([]*api.Kind{pools})
	s := New(src, nil, []*api.Kind{pools}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := s.Subscribe()
	go s.Run(ctx)
	src.chans["ippools"] <- datastore.Event{Type: datastore.Synced}
	waitView(t, s, first, func(v *View) bool { return v.Synced })
	late := s.Subscribe()
	select {
	case <-late:
	case <-time.After(time.Second):
		t.Fatal("a subscriber that came after a publish was not signalled")
	}
}

// TestOverEtcd runs the snapshot over a real etcd: a write reaches the view, a delete
// leaves it.
func TestOverEtcd(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pools := kind(t, "ippools")
	if _, err := ds.Create(ctx, pool("before", "10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}
	s := New(ds, nil, []*api.Kind{pools, kind(t, "nodes")}, nil)
	sub := s.Subscribe()
	go s.Run(ctx)
	waitView(t, s, sub, func(v *View) bool { return v.Synced && v.Count(pools) == 1 })
	if _, err := ds.Create(ctx, pool("after", "10.2.0.0/16")); err != nil {
		t.Fatal(err)
	}
	waitView(t, s, sub, func(v *View) bool { _, ok := Get[*api.IPPool](v, "", "after"); return ok })
	if _, err := ds.Delete(ctx, pools, "", "before", ""); err != nil {
		t.Fatal(err)
	}
	v := waitView(t, s, sub, func(v *View) bool { return v.Count(pools) == 1 })
	if _, ok := Get[*api.IPPool](v, "", "before"); ok {
		t.Error("a deleted pool is still in the view")
	}
}

// With shares the kinds it does not touch, so Differs sees only the written kind changed,
// and leaves the view it started from as it was.
func TestViewWith(t *testing.T) {
	nodes, pools := kind(t, "nodes"), kind(t, "ippools")
	v, err := NewView(nil, node("n1"), pool("a", "10.0.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := v.With(pool("b", "10.1.0.0/16"), pool("a", "10.2.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if next.Differs(v, true, nodes) || !next.Differs(v, false, pools) {
		t.Errorf("Differs: nodes %v (want false), pools %v (want true)", next.Differs(v, true, nodes), next.Differs(v, false, pools))
	}
	if got := List[*api.IPPool](next); len(got) != 2 || got[0].Spec.CIDR != "10.2.0.0/16" {
		t.Errorf("next's pools = %v, want a replaced and b added", got)
	}
	if got := List[*api.IPPool](v); len(got) != 1 || got[0].Spec.CIDR != "10.0.0.0/16" {
		t.Errorf("the first view's pools changed: %v", got)
	}
}

// TestStalled: a subscriber that leaves a notification untaken is reported, by the
// function that subscribed, once it is older than the limit; taking it clears the
// report, and a subscriber with nothing pending is never stalled.
func TestStalled(t *testing.T) {
	pools := kind(t, "ippools")
	src := newCountingSource([]*api.Kind{pools})
	s := New(src, nil, []*api.Kind{pools}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	busy, idle := s.Subscribe(), s.Subscribe()
	go s.Run(ctx)
	src.chans["ippools"] <- datastore.Event{Type: datastore.Synced}
	waitView(t, s, idle, func(v *View) bool { return v.Synced })
	if got := s.Stalled(time.Hour); len(got) != 0 {
		t.Errorf("Stalled(1h) = %v right after a publish", got)
	}
	got := s.Stalled(0)
	if len(got) != 1 || !strings.Contains(got[0], "snapshot.TestStalled has not taken a change published") {
		t.Fatalf("Stalled(0) = %v, want the busy subscriber, named by its function", got)
	}
	<-busy
	if got := s.Stalled(0); len(got) != 0 {
		t.Errorf("Stalled(0) = %v after the notification was taken", got)
	}
}
