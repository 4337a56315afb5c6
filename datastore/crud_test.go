package datastore_test

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

func rv(t testing.TB, r api.Resource) int64 {
	t.Helper()
	n, err := strconv.ParseInt(r.GetObjectMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", r.GetObjectMeta().ResourceVersion, err)
	}
	return n
}

func wantErr(t testing.TB, err, sentinel error, text string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error %q does not contain %q", err, text)
	}
}

func TestCRUD(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)

	in := newPool("pool-a", "10.1.0.0/16")
	created := mustCreate(t, c, in).(*api.IPPool)
	if in.ResourceVersion != "" || in.UID != "" || in.Spec.BlockSize != 0 {
		t.Errorf("Create changed its argument: %+v", in)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(created.UID) {
		t.Errorf("UID %q is not a v4 UUID", created.UID)
	}
	if created.CreationTimestamp == nil || rv(t, created) == 0 {
		t.Errorf("created pool lacks creation time or revision: %+v", created.ObjectMeta)
	}
	if created.Spec.BlockSize != api.DefaultBlockSizeV4 {
		t.Errorf("defaults not applied: blockSize %d", created.Spec.BlockSize)
	}

	raw, err := c.Etcd().Get(ctx, datastore.ResourcePrefix+"ippools/pool-a")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("raw read: %v %v", raw, err)
	}
	if v := string(raw.Kvs[0].Value); strings.Contains(v, "resourceVersion") || !strings.Contains(v, created.UID) {
		t.Errorf("stored value %s: want the UID and no resourceVersion", v)
	}

	got, err := c.Get(ctx, poolKind, "", "pool-a")
	if err != nil {
		t.Fatal(err)
	}
	if asJSON(t, got) != asJSON(t, created) {
		t.Errorf("Get = %s, want %s", asJSON(t, got), asJSON(t, created))
	}

	_, err = c.Create(ctx, newPool("pool-a", "10.2.0.0/16"))
	wantErr(t, err, datastore.ErrAlreadyExists, "create ippools/pool-a: already exists")
	_, err = c.Get(ctx, poolKind, "", "nope")
	wantErr(t, err, datastore.ErrNotFound, "get ippools/nope: not found")

	// Update is compare-and-swap on the revision it was given.
	upd := *created
	upd.Spec.NATOutgoing = true
	upd.UID = "forged"
	updated, err := c.Update(ctx, &upd)
	if err != nil {
		t.Fatal(err)
	}
	u := updated.(*api.IPPool)
	if rv(t, u) <= rv(t, created) || !u.Spec.NATOutgoing {
		t.Errorf("update: %+v", u)
	}
	if u.UID != created.UID || !u.CreationTimestamp.Equal(*created.CreationTimestamp) {
		t.Errorf("update changed identity: uid %s→%s, created %v→%v", created.UID, u.UID, created.CreationTimestamp, u.CreationTimestamp)
	}
	_, err = c.Update(ctx, &upd) // upd still carries the old revision
	wantErr(t, err, datastore.ErrConflict, "update ippools/pool-a: revision conflict (stored revision "+u.ResourceVersion+", given "+created.ResourceVersion+")")
	noRV := newPool("pool-a", "10.1.0.0/16")
	if _, err := c.Update(ctx, noRV); err == nil || !strings.Contains(err.Error(), "resourceVersion required") {
		t.Errorf("update without resourceVersion: %v", err)
	}
	missing := newPool("pool-z", "10.9.0.0/16")
	missing.ResourceVersion = "5"
	_, err = c.Update(ctx, missing)
	wantErr(t, err, datastore.ErrNotFound, "update ippools/pool-z: not found")

	// Apply creates, replaces without a revision, and is compare-and-swap with one.
	applied, err := c.Apply(ctx, newPool("pool-b", "10.2.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	replaced, err := c.Apply(ctx, newPool("pool-b", "10.3.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if replaced.GetObjectMeta().UID != applied.GetObjectMeta().UID || replaced.(*api.IPPool).Spec.CIDR != "10.3.0.0/16" {
		t.Errorf("apply over existing: %s (was %s)", asJSON(t, replaced), asJSON(t, applied))
	}
	_, err = c.Apply(ctx, applied) // stale revision
	wantErr(t, err, datastore.ErrConflict, "apply ippools/pool-b: revision conflict")

	items, rev, err := c.List(ctx, poolKind, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].GetObjectMeta().Name != "pool-a" || items[1].GetObjectMeta().Name != "pool-b" {
		t.Fatalf("List = %s", asJSON(t, items))
	}
	if rev < rv(t, replaced) {
		t.Errorf("List revision %d older than the last write %d", rev, rv(t, replaced))
	}

	_, err = c.Delete(ctx, poolKind, "", "pool-a", created.ResourceVersion)
	wantErr(t, err, datastore.ErrConflict, "delete ippools/pool-a: revision conflict")
	deleted, err := c.Delete(ctx, poolKind, "", "pool-a", u.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	if asJSON(t, deleted) != asJSON(t, u) {
		t.Errorf("Delete returned %s, want the last value %s", asJSON(t, deleted), asJSON(t, u))
	}
	if _, err := c.Delete(ctx, poolKind, "", "pool-b", ""); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, poolKind, "", "pool-a", "")
	wantErr(t, err, datastore.ErrNotFound, "delete ippools/pool-a: not found")
	if items, _, err := c.List(ctx, poolKind, ""); err != nil || len(items) != 0 {
		t.Errorf("List after deletes = %v, %v", items, err)
	}
}

func TestNamespacedKeys(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)

	mustCreate(t, c, newNetSet("b", "x", "10.0.0.1"))
	mustCreate(t, c, newNetSet("a", "y", "10.0.0.2"))
	mustCreate(t, c, newNetSet("a", "x", "10.0.0.3"))
	mustCreate(t, c, newNetSet("default", "z"))
	if _, err := c.Create(ctx, newNetSet("", "w")); err == nil || !strings.Contains(err.Error(), "metadata.namespace") {
		t.Errorf("create without a namespace: %v", err)
	}
	raw, err := c.Etcd().Get(ctx, datastore.ResourcePrefix+"networksets/a/x")
	if err != nil || len(raw.Kvs) != 1 {
		t.Errorf("key networksets/a/x: %v, %v", raw, err)
	}

	names := func(items []api.Resource) (out []string) {
		for _, r := range items {
			out = append(out, r.GetObjectMeta().Namespace+"/"+r.GetObjectMeta().Name)
		}
		return out
	}
	all, _, err := c.List(ctx, netsetKind, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(all), " "); got != "a/x a/y b/x default/z" {
		t.Errorf("List all namespaces = %s", got)
	}
	inA, _, err := c.List(ctx, netsetKind, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(inA), " "); got != "a/x a/y" {
		t.Errorf("List namespace a = %s", got)
	}

	if _, err := c.Get(ctx, netsetKind, "", "x"); err == nil || err.Error() != `get: networksets "x": namespace required` {
		t.Errorf("Get without namespace: %v", err)
	}
	if _, err := c.Delete(ctx, netsetKind, "", "x", ""); err == nil || err.Error() != `delete: networksets "x": namespace required` {
		t.Errorf("Delete without namespace: %v", err)
	}
	if _, _, err := c.List(ctx, poolKind, "a"); err == nil || !strings.Contains(err.Error(), "not namespaced") {
		t.Errorf("List of a cluster-wide kind in a namespace: %v", err)
	}
	got, err := datastore.GetAs[*api.NetworkSet](ctx, c, "b", "x")
	if err != nil || got.Spec.Nets[0] != "10.0.0.1" {
		t.Errorf("GetAs = %+v, %v", got, err)
	}
	sets, _, err := datastore.ListAs[*api.NetworkSet](ctx, c, "a")
	if err != nil || len(sets) != 2 || sets[1].Name != "y" {
		t.Errorf("ListAs = %+v, %v", sets, err)
	}
}

func TestInvalidRefused(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	_, err := c.Create(ctx, newPool("bad", "not-a-cidr"))
	if err == nil || !strings.Contains(err.Error(), "create ippools/bad: invalid: spec.cidr") {
		t.Fatalf("create invalid pool: %v", err)
	}
	_, err = c.Apply(ctx, newPool("Bad_Name", "10.0.0.0/16"))
	if err == nil || !strings.Contains(err.Error(), "metadata.name") {
		t.Fatalf("apply badly named pool: %v", err)
	}
	if items, _, _ := c.List(ctx, poolKind, ""); len(items) != 0 {
		t.Errorf("invalid pools were stored: %s", asJSON(t, items))
	}
}

// TestConcurrentUpdates: writers that all read the same revision race to update it;
// compare-and-swap lets exactly one win.
func TestConcurrentUpdates(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	base := mustCreate(t, c, newNetSet("default", "shared", "10.0.0.1")).(*api.NetworkSet)

	const writers = 16
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			mine := *base
			mine.Spec.Nets = []string{"10.0.1." + strconv.Itoa(i)}
			<-start
			_, errs[i] = c.Update(ctx, &mine)
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, datastore.ErrConflict):
			t.Errorf("writer %d: %v, want a conflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d writers won, want exactly 1", won)
	}
}

// TestConcurrentApply: apply without a revision races too, but retries, so every
// writer succeeds and one of their values is left.
func TestConcurrentApply(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	const writers = 8
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := c.Apply(ctx, newNetSet("default", "shared", "10.0.2."+strconv.Itoa(i))); err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := datastore.GetAs[*api.NetworkSet](ctx, c, "default", "shared")
	if err != nil || len(got.Spec.Nets) != 1 || !strings.HasPrefix(got.Spec.Nets[0], "10.0.2.") {
		t.Errorf("after concurrent applies: %+v, %v", got, err)
	}
}
