package datastore_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

var (
	poolKind   = mustKind("ippools")
	netsetKind = mustKind("networksets")
)

func mustKind(name string) *api.Kind {
	k, err := api.LookupKind(name)
	if err != nil {
		panic(err)
	}
	return k
}

func newPool(name, cidr string) *api.IPPool {
	p := poolKind.New().(*api.IPPool)
	p.Name, p.Spec.CIDR = name, cidr
	return p
}

func newNetSet(ns, name string, nets ...string) *api.NetworkSet {
	s := netsetKind.New().(*api.NetworkSet)
	s.Namespace, s.Name, s.Spec.Nets = ns, name, nets
	return s
}

// testCtx is a context that bounds a test's calls, so a broken etcd fails the test
// instead of hanging it.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func asJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustCreate(t testing.TB, c *datastore.Client, r api.Resource) api.Resource {
	t.Helper()
	out, err := c.Create(testCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nextEvent waits for the watch's next event; the deadline only catches a stuck watch.
func nextEvent(t testing.TB, ch <-chan datastore.Event) datastore.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event within 30s")
	}
	panic("unreachable")
}

// untilSynced collects change events up to and including the next Synced.
func untilSynced(t testing.TB, ch <-chan datastore.Event) []datastore.Event {
	t.Helper()
	var evs []datastore.Event
	for {
		ev := nextEvent(t, ch)
		switch ev.Type {
		case datastore.Synced:
			return evs
		case datastore.Error:
			t.Logf("watch error (retrying): %v", ev.Err)
		default:
			evs = append(evs, ev)
		}
	}
}

// snapshot is a subscriber's view built from watch events: name → JSON of the resource.
type snapshot map[string]string

func (s snapshot) apply(t testing.TB, ev datastore.Event) {
	t.Helper()
	m := ev.Resource.GetObjectMeta()
	key := m.Namespace + "/" + m.Name
	switch ev.Type {
	case datastore.Added:
		if _, ok := s[key]; ok {
			t.Errorf("Added %s, which the subscriber already has", key)
		}
		s[key] = asJSON(t, ev.Resource)
	case datastore.Modified:
		if s[key] != asJSON(t, ev.Old) {
			t.Errorf("Modified %s: Old is %s, subscriber has %s", key, asJSON(t, ev.Old), s[key])
		}
		s[key] = asJSON(t, ev.Resource)
	case datastore.Deleted:
		if s[key] != asJSON(t, ev.Old) {
			t.Errorf("Deleted %s: Old is %s, subscriber has %s", key, asJSON(t, ev.Old), s[key])
		}
		delete(s, key)
	}
}

func snapshotOf(t testing.TB, items []api.Resource) snapshot {
	s := snapshot{}
	for _, r := range items {
		s.apply(t, datastore.Event{Type: datastore.Added, Resource: r})
	}
	return s
}

func (s snapshot) equal(t testing.TB, want snapshot) {
	t.Helper()
	for k, v := range want {
		if s[k] != v {
			t.Errorf("snapshot %s = %s, want %s", k, s[k], v)
		}
	}
	for k := range s {
		if _, ok := want[k]; !ok {
			t.Errorf("snapshot has %s, which the store does not", k)
		}
	}
}
