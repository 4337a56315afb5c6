package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/internal/snapshot"
)

func TestStartSource(t *testing.T) {
	cached, err := snapshot.NewView(nil)
	if err != nil {
		t.Fatal(err)
	}
	unreachable := unreachableClient(t).CheckReachable(context.Background()) // a *datastore.ConnectError
	missing := fmt.Errorf("snapshot cache: %w", os.ErrNotExist)
	corrupt := errors.New("snapshot cache /var/lib/tabby/snapshot-cache.json: checksum mismatch: the file is corrupt")
	for _, c := range []struct {
		name      string
		reachErr  error
		path      string
		cached    *snapshot.View
		cacheErr  error
		wantCache bool
		wantErr   string // "" none
	}{
		{name: "etcd answers", path: "/c", cached: cached, wantCache: false},
		{name: "etcd answers, no cache", path: "/c", cacheErr: missing},
		{name: "unreachable, cache", reachErr: unreachable, path: "/c", cached: cached, wantCache: true},
		{name: "unreachable, no cache (new node)", reachErr: unreachable, path: "/c", cacheErr: missing,
			wantErr: "unreachable after 200ms: 127.0.0.1:"},
		{name: "unreachable, no cache (new node), why", reachErr: unreachable, path: "/c", cacheErr: missing,
			wantErr: "connection refused (no snapshot cache at /c to start from: a node's first start needs etcd)"},
		{name: "unreachable, corrupt cache", reachErr: unreachable, path: "/c", cacheErr: corrupt,
			wantErr: "(and the snapshot cache cannot be used: snapshot cache /var/lib/tabby/snapshot-cache.json: checksum mismatch: the file is corrupt)"},
		{name: "unreachable, cache off", reachErr: unreachable, wantErr: "(no snapshot cache configured to start from)"},
		{name: "cancelled", reachErr: context.Canceled, path: "/c", cached: cached, wantErr: "context canceled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := startSource(c.reachErr, c.path, c.cached, c.cacheErr)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || v != nil {
					t.Errorf("startSource = %v, %v; want no view and an error saying %q", v, err, c.wantErr)
				}
				return
			}
			if err != nil || (v != nil) != c.wantCache {
				t.Errorf("startSource = %v, %v; want from cache %v", v, err, c.wantCache)
			}
		})
	}
}

// unreachableClient is a client of an etcd that does not answer (a closed port).
func unreachableClient(t *testing.T) *datastore.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ds, err := datastore.Dial(datastore.Config{Endpoints: []string{addr}, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

// chooseStart reads the cache only when etcd does not answer, and starts from it then.
func TestChooseStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot-cache.json")
	cfg := Config{NodeName: "n1", SnapshotCache: path}
	down := unreachableClient(t)
	if _, err := chooseStart(context.Background(), down, cfg); err == nil || !strings.Contains(err.Error(), "no snapshot cache at "+path) {
		t.Fatalf("no cache, etcd down: %v", err)
	}
	n := &api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}}
	n.Name = "n1"
	v, err := snapshot.NewView(nil, n)
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot.New(nil, nil, snapshotKinds(), nil)
	s.Seed(v) // every kind the agent watches, as a live view has them
	if err := snapshot.WriteCache(path, "n1", s.View(), time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := chooseStart(context.Background(), down, cfg)
	if err != nil || got == nil || got.CachedAt.IsZero() {
		t.Fatalf("cache, etcd down: %v, %v; want the cached view", got, err)
	}
	if _, ok := snapshot.Get[*api.Node](got, "", "n1"); !ok {
		t.Error("the cached view lost the node")
	}
	up := datastoretest.Start(t)
	if got, err := chooseStart(context.Background(), up, cfg); err != nil || got != nil {
		t.Errorf("etcd up: %v, %v; want the live datastore", got, err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := chooseStart(context.Background(), down, cfg); err == nil || !strings.Contains(err.Error(), "cannot be used") {
		t.Errorf("corrupt cache, etcd down: %v", err)
	}
}

// The gated subsystems start only when the gate opens; deferredWrites opens it once etcd
// answers and the registration succeeded, and ends the agent if the registration fails.
func TestDeferredWrites(t *testing.T) {
	g := newWriteGate(false)
	started := make(chan struct{})
	gated := afterWrites(g, runFunc("lease", func(ctx context.Context) error { close(started); <-ctx.Done(); return nil }))
	registered := make(chan struct{}, 1)
	register := func(context.Context) error { registered <- struct{}{}; return nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	down := deferredWrites(unreachableClient(t), g, register, slog.New(slog.DiscardHandler))
	done := make(chan error, 2)
	go func() { done <- down.Run(ctx) }()
	go func() { done <- gated.Run(ctx) }()
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-registered:
			t.Fatal("registered while etcd does not answer")
		case <-started:
			t.Fatal("a gated subsystem started while etcd does not answer")
		default:
		}
		if g.isOpen() {
			t.Fatal("gate open while etcd does not answer")
		}
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("stopped with %v", err)
		}
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	up := datastoretest.Start(t)
	go func() { done <- deferredWrites(up, g, register, slog.New(slog.DiscardHandler)).Run(ctx) }()
	go func() { done <- gated.Run(ctx) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the gated subsystem did not start once etcd answered")
	}
	if len(registered) != 1 || !g.isOpen() {
		t.Errorf("registered %d times, gate open %v; want once, open", len(registered), g.isOpen())
	}
	cancel()
	<-done
	<-done

	failed := deferredWrites(up, newWriteGate(false), func(context.Context) error { return errors.New("address 10.0.0.5 is already used by node n2") }, slog.New(slog.DiscardHandler))
	if err := failed.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a failed registration: %v, want its error", err)
	}
}

// While the agent runs from its cache, readiness names the datastore, the cache and its
// age, and the writes that wait.
func TestDatastoreHealthFromCache(t *testing.T) {
	nodes, err := api.LookupKind("nodes")
	if err != nil {
		t.Fatal(err)
	}
	v, err := snapshot.NewView(nil)
	if err != nil {
		t.Fatal(err)
	}
	v.CachedAt = time.Now().Add(-90 * time.Second)
	snap := snapshot.New(nil, nil, []*api.Kind{nodes}, nil)
	snap.Seed(v)
	h := newDatastoreHealth(nil, snap, "/var/lib/tabby/snapshot-cache.json", newWriteGate(false), NewReadiness())
	got := strings.Join(h.reasons(errors.New("etcd at http://10.0.0.1:2379: context deadline exceeded")), "\n")
	for _, want := range []string{
		"datastore: unreachable: etcd at http://10.0.0.1:2379",
		"datastore: running from the snapshot cache /var/lib/tabby/snapshot-cache.json, written 1m30s ago",
		"datastore: writes wait for etcd",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("reasons:\n%s\nwant %q", got, want)
		}
	}
	if strings.Contains(got, "the snapshot has not synced yet") {
		t.Errorf("reasons say not synced though the cached view is whole:\n%s", got)
	}
}
