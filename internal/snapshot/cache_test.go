package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// cacheView is a synced view of pools and nodes with resource versions, labels and an
// affinity: what a cache must give back.
func cacheView(t *testing.T) (*View, []*api.Kind) {
	t.Helper()
	p := pool("a", "10.0.0.0/16")
	p.ResourceVersion = "12"
	n := node("n1")
	n.ResourceVersion, n.Labels = "7", map[string]string{"rack": "r1"}
	v, err := NewView(map[netip.Prefix]string{netip.MustParsePrefix("10.0.1.0/26"): "n1"}, p, n, node("n2"))
	if err != nil {
		t.Fatal(err)
	}
	return v, []*api.Kind{kind(t, "ippools"), kind(t, "nodes")}
}

func TestCacheRoundTrip(t *testing.T) {
	v, kinds := cacheView(t)
	path := filepath.Join(t.TempDir(), "state", "snapshot-cache.json")
	written := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	if err := WriteCache(path, "n1", v, written); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCache(path, "n1", kinds)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Synced || !got.CachedAt.Equal(written) {
		t.Errorf("read back: synced %v, cached at %v; want synced, %v", got.Synced, got.CachedAt, written)
	}
	if !reflect.DeepEqual(got.resources, v.resources) || !reflect.DeepEqual(got.Affinities, v.Affinities) {
		t.Errorf("read back\n%#v %v\nwant\n%#v %v", got.resources, got.Affinities, v.resources, v.Affinities)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := ReadCache(filepath.Join(t.TempDir(), "none"), "n1", kinds); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing cache: %v, want fs.ErrNotExist", err)
	}
}

// Every kind of bad file is refused whole, with an error saying what is wrong.
func TestCacheRefused(t *testing.T) {
	v, kinds := cacheView(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := WriteCache(good, "n1", v, time.Now()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(edit func(f map[string]any)) []byte {
		var f map[string]any
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		edit(f)
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name  string
		data  []byte
		node  string
		kinds []*api.Kind
		want  string
	}{
		{"truncated", data[:len(data)/2], "n1", kinds, "not a snapshot cache (corrupt?)"},
		{"empty", nil, "n1", kinds, "not a snapshot cache (corrupt?)"},
		{"flipped byte", []byte(strings.Replace(string(data), "10.0.0.0/16", "10.9.0.0/16", 1)), "n1", kinds, "checksum mismatch"},
		{"version", rewrite(func(f map[string]any) { f["version"] = CacheVersion + 1 }), "n1", kinds, "version 2: this agent reads version 1"},
		{"format", rewrite(func(f map[string]any) { f["format"] = "other" }), "n1", kinds, `format "other"`},
		{"other node", data, "n2", kinds, `written by node "n1", this is "n2"`},
		{"other kinds", data, "n1", append(kinds, kind(t, "services")), "holds kinds ippools,nodes, this agent watches ippools,nodes,services"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadCache(path, c.node, c.kinds)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("ReadCache = %v, %v; want an error naming %s and saying %q", got, err, path, c.want)
			}
			if got != nil {
				t.Error("a view came back with the error")
			}
		})
	}
}

// Readers racing writers see a whole file every time, and no temporary file is left.
func TestCacheWriteAtomic(t *testing.T) {
	v, kinds := cacheView(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "cache")
	if err := WriteCache(path, "n1", v, time.Now()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := ReadCache(path, "n1", kinds); err != nil {
				readErr = err
				return
			}
		}
	})
	next := v
	for i := range 200 {
		var err error
		if next, err = next.With(node("n" + string(rune('a'+i%26)))); err != nil {
			t.Fatal(err)
		}
		if err := WriteCache(path, "n1", next, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Errorf("a reader saw a partial cache: %v", readErr)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("files left beside the cache: %v", entries)
	}
	// A failed write leaves the previous cache as it was.
	before, _ := os.ReadFile(path)
	if err := os.Mkdir(path+".blocker", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteCache(path+".blocker", "n1", v, time.Now()); err == nil {
		t.Error("a write over a directory succeeded")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the cache changed")
	}
}

// A seeded snapshot serves the cached view, untouched by the live watches' partial
// state, until every watch has synced; then one view holds the live state.
func TestSeedUntilLiveSync(t *testing.T) {
	cached, kinds := cacheView(t)
	cached.CachedAt = time.Now().Add(-time.Minute)
	pools, nodes := kinds[0], kinds[1]
	src := newCountingSource(kinds)
	aff := make(fakeAffinities, 1)
	s := New(src, aff, kinds, nil)
	s.Seed(cached)
	sub := s.Subscribe()
	select {
	case <-sub:
	default:
		t.Fatal("a subscriber to a seeded snapshot was not signalled")
	}
	if v := s.View(); v != cached || !v.Synced {
		t.Fatalf("seeded view: %+v", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	src.chans["ippools"] <- datastore.Event{Type: datastore.Added, Resource: pool("b", "10.1.0.0/16")}
	src.chans["ippools"] <- datastore.Event{Type: datastore.Synced}
	src.chans["nodes"] <- datastore.Event{Type: datastore.Added, Resource: node("n1")}
	src.chans["nodes"] <- datastore.Event{Type: datastore.Synced}
	// Not whole yet (no affinities): the cached view stands. Steady for a moment.
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s.View() != cached {
			t.Fatal("the cached view was replaced before every watch synced")
		}
	}
	aff <- map[netip.Prefix]string{netip.MustParsePrefix("10.1.0.0/26"): "n1"}
	v := waitView(t, s, sub, func(v *View) bool { return v != cached })
	if !v.Synced || !v.CachedAt.IsZero() {
		t.Errorf("live view: synced %v, cached at %v; want synced, live", v.Synced, v.CachedAt)
	}
	if _, ok := Get[*api.IPPool](v, "", "a"); ok || v.Count(pools) != 1 || v.Count(nodes) != 1 {
		t.Errorf("live view holds %d pools, %d nodes (pool a %v); want the live state only", v.Count(pools), v.Count(nodes), ok)
	}
	if got := v.AffineBlocks("n1"); len(got) != 1 || got[0] != netip.MustParsePrefix("10.1.0.0/26") {
		t.Errorf("live affinities: %v", got)
	}
}

// KeepCache writes a burst of views once, only live synced ones, and the last one when
// it stops.
func TestKeepCache(t *testing.T) {
	pools := kind(t, "ippools")
	src := newCountingSource([]*api.Kind{pools})
	s := New(src, nil, []*api.Kind{pools}, nil)
	path := filepath.Join(t.TempDir(), "cache")
	ctx, cancel := context.WithCancel(context.Background())
	runDone, keepDone := make(chan struct{}), make(chan struct{})
	go func() { s.Run(ctx); close(runDone) }()
	go func() { s.KeepCache(ctx, path, "n1", 300*time.Millisecond); close(keepDone) }()
	defer func() { cancel(); <-runDone; <-keepDone }()

	src.chans["ippools"] <- datastore.Event{Type: datastore.Added, Resource: pool("a", "10.0.0.0/16")}
	// Not synced: nothing is written.
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			t.Fatal("an unsynced view was written")
		}
	}
	src.chans["ippools"] <- datastore.Event{Type: datastore.Synced}
	src.chans["ippools"] <- datastore.Event{Type: datastore.Added, Resource: pool("b", "10.1.0.0/16")}
	var got *View
	for deadline := time.Now().Add(5 * time.Second); got == nil || got.Count(pools) != 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("cache never held both pools: %v", got)
		}
		got, _ = ReadCache(path, "n1", []*api.Kind{pools})
	}
	// A change just before the end is written at the end.
	src.chans["ippools"] <- datastore.Event{Type: datastore.Added, Resource: pool("c", "10.2.0.0/16")}
	waitView(t, s, s.Subscribe(), func(v *View) bool { return v.Count(pools) == 3 })
	cancel()
	<-keepDone
	if got, err := ReadCache(path, "n1", []*api.Kind{pools}); err != nil || got.Count(pools) != 3 {
		t.Errorf("cache after stop: %v, %v; want 3 pools", got, err)
	}
}
