package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/datastore/embedded"
)

// expected is an event a test predicts from its own writes.
type expected struct {
	typ  datastore.EventType
	name string
	rev  string // ResourceVersion of Resource
}

func describe(ev datastore.Event) expected {
	return expected{ev.Type, ev.Resource.GetObjectMeta().Name, ev.Resource.GetObjectMeta().ResourceVersion}
}

func TestWatchDeliversEveryChangeInOrder(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	pre := mustCreate(t, c, newNetSet("default", "pre", "10.0.0.1"))

	ch := c.Watch(ctx, netsetKind, "", 0)
	snap := snapshot{}
	initial := untilSynced(t, ch)
	if len(initial) != 1 || describe(initial[0]) != (expected{datastore.Added, "pre", pre.GetObjectMeta().ResourceVersion}) {
		t.Fatalf("initial events: %+v", initial)
	}
	snap.apply(t, initial[0])

	var want []expected
	last := map[string]api.Resource{"pre": pre}
	for i := range 200 {
		name := fmt.Sprintf("s%02d", i%40)
		net := fmt.Sprintf("10.1.%d.%d", i/256, i%256)
		var ev expected
		switch cur := last[name]; {
		case cur == nil:
			r := mustCreate(t, c, newNetSet("default", name, net))
			ev, last[name] = expected{datastore.Added, name, r.GetObjectMeta().ResourceVersion}, r
		case i%3 == 0:
			if _, err := c.Delete(ctx, netsetKind, "default", name, ""); err != nil {
				t.Fatal(err)
			}
			ev, last[name] = expected{datastore.Deleted, name, cur.GetObjectMeta().ResourceVersion}, nil
		default:
			r, err := c.Apply(ctx, newNetSet("default", name, net))
			if err != nil {
				t.Fatal(err)
			}
			ev, last[name] = expected{datastore.Modified, name, r.GetObjectMeta().ResourceVersion}, r
		}
		want = append(want, ev)
	}
	// A transaction's changes arrive together, at one revision, in op order.
	out, err := c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newNetSet("default", "t1")},
		{Action: datastore.OpApply, Resource: newNetSet("default", "pre", "10.9.9.9")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, expected{datastore.Added, "t1", out[0].GetObjectMeta().ResourceVersion},
		expected{datastore.Modified, "pre", out[1].GetObjectMeta().ResourceVersion})

	var prevRev int64
	for i, w := range want {
		ev := nextEvent(t, ch)
		if got := describe(ev); got != w {
			t.Fatalf("event %d = %+v, want %+v", i, got, w)
		}
		if ev.Revision < prevRev {
			t.Fatalf("event %d at revision %d after %d", i, ev.Revision, prevRev)
		}
		prevRev = ev.Revision
		snap.apply(t, ev)
	}
	items, _, err := c.List(ctx, netsetKind, "")
	if err != nil {
		t.Fatal(err)
	}
	snap.equal(t, snapshotOf(t, items))
}

func TestWatchFromRevision(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	mustCreate(t, c, newPool("pool-a", "10.1.0.0/16"))
	mustCreate(t, c, newPool("pool-b", "10.2.0.0/16"))
	items, rev, err := c.List(ctx, poolKind, "")
	if err != nil {
		t.Fatal(err)
	}
	a := *items[0].(*api.IPPool)
	a.Spec.NATOutgoing = true
	a2, err := c.Update(ctx, &a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, poolKind, "", "pool-b", ""); err != nil {
		t.Fatal(err)
	}
	pc := mustCreate(t, c, newPool("pool-c", "10.3.0.0/16"))

	ch := c.Watch(ctx, poolKind, "", rev)
	if evs := untilSynced(t, ch); len(evs) != 0 {
		t.Fatalf("events before the start state is synced: %+v", evs)
	}
	snap := snapshotOf(t, items)
	for _, w := range []expected{
		{datastore.Modified, "pool-a", a2.GetObjectMeta().ResourceVersion},
		{datastore.Deleted, "pool-b", items[1].GetObjectMeta().ResourceVersion},
		{datastore.Added, "pool-c", pc.GetObjectMeta().ResourceVersion},
	} {
		ev := nextEvent(t, ch)
		if got := describe(ev); got != w {
			t.Fatalf("event %+v, want %+v", got, w)
		}
		snap.apply(t, ev)
	}
	now, _, _ := c.List(ctx, poolKind, "")
	snap.equal(t, snapshotOf(t, now))
}

// TestWatchRelistsAfterCompaction: the subscriber's start revision is compacted away,
// so the watcher must relist and send exactly the difference.
func TestWatchRelistsAfterCompaction(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	for _, name := range []string{"keep", "mod", "del"} {
		mustCreate(t, c, newNetSet("default", name, "10.0.0.1"))
	}
	known, rev, err := c.List(ctx, netsetKind, "")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := c.Apply(ctx, newNetSet("default", "mod", "10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	del, err := c.Delete(ctx, netsetKind, "default", "del", "")
	if err != nil {
		t.Fatal(err)
	}
	added := mustCreate(t, c, newNetSet("default", "new"))
	mustCreate(t, c, newNetSet("default", "tmp"))
	if _, err := c.Delete(ctx, netsetKind, "default", "tmp", ""); err != nil {
		t.Fatal(err)
	}
	_, listRev, _ := c.List(ctx, netsetKind, "")
	if _, err := c.Etcd().Compact(ctx, listRev); err != nil {
		t.Fatal(err)
	}

	// Watch from the compacted revision cannot know what the subscriber holds.
	old := c.Watch(ctx, netsetKind, "", rev)
	if ev := nextEvent(t, old); ev.Type != datastore.Error || !errors.Is(ev.Err, datastore.ErrCompacted) {
		t.Errorf("watch from a compacted revision: %+v, want an Error wrapping ErrCompacted", ev)
	}
	if _, open := <-old; open {
		t.Error("watch from a compacted revision stays open")
	}

	ch := c.WatchFrom(ctx, netsetKind, "", known, rev)
	if evs := untilSynced(t, ch); len(evs) != 0 {
		t.Fatalf("events before the known state is synced: %+v", evs)
	}
	diff := untilSynced(t, ch)
	want := []expected{
		{datastore.Deleted, "del", del.GetObjectMeta().ResourceVersion},
		{datastore.Modified, "mod", mod.GetObjectMeta().ResourceVersion},
		{datastore.Added, "new", added.GetObjectMeta().ResourceVersion},
	}
	if len(diff) != len(want) {
		t.Fatalf("relist sent %d events, want %d: %+v", len(diff), len(want), diff)
	}
	snap := snapshotOf(t, known)
	for i, ev := range diff {
		if got := describe(ev); got != want[i] {
			t.Errorf("relist event %d = %+v, want %+v", i, got, want[i])
		}
		if ev.Revision != listRev {
			t.Errorf("relist event %d at revision %d, want the list's %d", i, ev.Revision, listRev)
		}
		snap.apply(t, ev)
	}
	fresh, _, _ := c.List(ctx, netsetKind, "")
	snap.equal(t, snapshotOf(t, fresh))

	// The watch goes on from the list.
	later := mustCreate(t, c, newNetSet("default", "later"))
	if got := describe(nextEvent(t, ch)); got != (expected{datastore.Added, "later", later.GetObjectMeta().ResourceVersion}) {
		t.Errorf("after the relist: %+v", got)
	}
}

func TestWatchDeletes(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	var last []api.Resource
	for i := range 6 {
		last = append(last, mustCreate(t, c, newNetSet("ns"+fmt.Sprint(i%2), fmt.Sprintf("s%d", i), "10.0.0.1")))
	}
	ch := c.Watch(ctx, netsetKind, "ns0", 0)
	snap := snapshot{}
	for _, ev := range untilSynced(t, ch) {
		snap.apply(t, ev)
	}
	if len(snap) != 3 {
		t.Fatalf("namespace ns0 watch starts with %d resources, want 3", len(snap))
	}
	s0, err := c.Apply(ctx, newNetSet("ns0", "s0", "10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	snap.apply(t, nextEvent(t, ch))
	for i := range 6 {
		if _, err := c.Delete(ctx, netsetKind, fmt.Sprintf("ns%d", i%2), fmt.Sprintf("s%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []api.Resource{s0, last[2], last[4]} {
		ev := nextEvent(t, ch)
		if ev.Type != datastore.Deleted || asJSON(t, ev.Resource) != asJSON(t, w) {
			t.Fatalf("event %v %s, want Deleted carrying the last value %s", ev.Type, asJSON(t, ev.Resource), asJSON(t, w))
		}
		snap.apply(t, ev)
	}
	if len(snap) != 0 {
		t.Errorf("snapshot after deleting everything: %v", snap)
	}
}

// TestWatchSurvivesEtcdRestart: the stream breaks, and while the watching client waits
// to reconnect another client writes and compacts the history it missed. Whether the
// watcher resumes or relists, the subscriber must end up with exactly the store's state.
func TestWatchSurvivesEtcdRestart(t *testing.T) {
	cfg := embedded.Config{
		DataDir:      filepath.Join(t.TempDir(), "etcd"),
		ListenClient: "http://127.0.0.1:0", ListenPeer: "http://127.0.0.1:0",
		UnsafeNoFsync: true,
	}
	ctx := testCtx(t)
	e, err := embedded.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenClient = e.Endpoints()[0] // the same port again, so the client finds it
	cfg.ListenPeer = "http://" + freePort(t)
	c, err := datastore.Connect(ctx, datastore.Config{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close() // before etcd, whose graceful stop waits for open watch streams
		if e != nil {
			e.Close()
		}
	})

	for i := range 5 {
		mustCreate(t, c, newNetSet("default", fmt.Sprintf("s%d", i)))
	}
	ch := c.Watch(ctx, netsetKind, "", 0)
	snap := snapshot{}
	for _, ev := range untilSynced(t, ch) {
		snap.apply(t, ev)
	}

	e.Close()
	if e, err = embedded.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	other := datastoretest.Connect(t, e)
	if _, err := other.Delete(ctx, netsetKind, "default", "s0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Apply(ctx, newNetSet("default", "s1", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	sentinel := mustCreate(t, other, newNetSet("default", "zz-last"))
	if _, err := other.Etcd().Compact(ctx, rv(t, sentinel)); err != nil {
		t.Fatal(err)
	}
	for {
		ev := nextEvent(t, ch)
		if ev.Type == datastore.Error {
			t.Logf("watch error (retrying): %v", ev.Err)
			continue
		}
		snap.apply(t, ev)
		if ev.Type == datastore.Added && ev.Resource.GetObjectMeta().Name == "zz-last" {
			break
		}
	}
	items, _, _ := c.List(ctx, netsetKind, "")
	snap.equal(t, snapshotOf(t, items))
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestWatchEnds(t *testing.T) {
	c := datastoretest.Start(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	ch := c.Watch(ctx, netsetKind, "", 0)
	untilSynced(t, ch)
	cancel()
	for ev := range ch {
		t.Errorf("event after cancel: %+v", ev)
	}

	ch = c.Watch(testCtx(t), netsetKind, "", 0)
	untilSynced(t, ch)
	c.Close()
	ev, open := <-ch
	if !open || ev.Type != datastore.Error || !strings.Contains(ev.Err.Error(), "client closed") {
		t.Errorf("after Close: %+v (open %v), want an Error naming the closed client", ev, open)
	}
	if _, open := <-ch; open {
		t.Error("watch stays open after its client closed")
	}

	bad := c.Watch(testCtx(t), poolKind, "ns", 0)
	if ev := <-bad; ev.Type != datastore.Error || !strings.Contains(ev.Err.Error(), "not namespaced") {
		t.Errorf("watch of a cluster-wide kind in a namespace: %+v", ev)
	}
}
