package datastore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

func TestTxnAllOrNothing(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	taken := mustCreate(t, c, newNetSet("default", "taken"))

	stale := newNetSet("default", "taken", "10.0.0.9")
	stale.ResourceVersion = "1"
	for _, tc := range []struct {
		bad      datastore.Op
		sentinel error
		text     string
	}{
		{datastore.Op{Action: datastore.OpCreate, Resource: newNetSet("default", "taken")}, datastore.ErrAlreadyExists,
			"txn op 2: create networksets/default/taken: already exists"},
		{datastore.Op{Action: datastore.OpUpdate, Resource: stale}, datastore.ErrConflict,
			"txn op 2: update networksets/default/taken: revision conflict (stored revision " + taken.GetObjectMeta().ResourceVersion + ", given 1)"},
		{datastore.Op{Action: datastore.OpDelete, Resource: newNetSet("default", "absent")}, datastore.ErrNotFound,
			"txn op 2: delete networksets/default/absent: not found"},
		{datastore.Op{Action: datastore.OpApply, Resource: newNetSet("default", "bad", "not-a-net")}, nil,
			"txn op 2: apply networksets/default/bad: invalid: spec.nets[0]"},
	} {
		_, err := c.Txn(ctx, []datastore.Op{
			{Action: datastore.OpCreate, Resource: newNetSet("default", "a")},
			{Action: datastore.OpApply, Resource: newPool("pool-a", "10.1.0.0/16")},
			tc.bad,
		})
		if err == nil || (tc.sentinel != nil && !errors.Is(err, tc.sentinel)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("txn error %v, want %v naming %q", err, tc.sentinel, tc.text)
		}
		sets, _, _ := c.List(ctx, netsetKind, "")
		pools, _, _ := c.List(ctx, poolKind, "")
		if len(sets) != 1 || len(pools) != 0 {
			t.Errorf("failed txn wrote: %s %s", asJSON(t, sets), asJSON(t, pools))
		}
	}

	_, err := c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newNetSet("default", "a")},
		{Action: datastore.OpDelete, Resource: newNetSet("default", "a")},
	})
	if err == nil || !strings.Contains(err.Error(), "txn ops 0 and 1 both write networksets/default/a") {
		t.Errorf("duplicate key: %v", err)
	}
}

func TestTxnCommits(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	upd := mustCreate(t, c, newNetSet("default", "upd", "10.0.0.1")).(*api.NetworkSet)
	del := mustCreate(t, c, newNetSet("default", "del", "10.0.0.2"))
	mustCreate(t, c, newNetSet("default", "app", "10.0.0.3"))

	upd.Spec.Nets = []string{"10.0.1.1"}
	out, err := c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newPool("pool-a", "10.1.0.0/16")},
		{Action: datastore.OpUpdate, Resource: upd},
		{Action: datastore.OpApply, Resource: newNetSet("default", "app", "10.0.1.3")},
		{Action: datastore.OpDelete, Resource: newNetSet("default", "del")},
	})
	if err != nil {
		t.Fatal(err)
	}
	commit := out[0].GetObjectMeta().ResourceVersion
	for i, r := range out[:3] {
		if r.GetObjectMeta().ResourceVersion != commit {
			t.Errorf("op %d stored at revision %s, op 0 at %s: not one transaction", i, r.GetObjectMeta().ResourceVersion, commit)
		}
	}
	if asJSON(t, out[3]) != asJSON(t, del) {
		t.Errorf("delete op returned %s, want %s", asJSON(t, out[3]), asJSON(t, del))
	}
	sets, rev, err := c.List(ctx, netsetKind, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || asJSON(t, sets[0]) != asJSON(t, out[2]) || asJSON(t, sets[1]) != asJSON(t, out[1]) {
		t.Errorf("after txn: %s", asJSON(t, sets))
	}
	if want := rv(t, out[0]); rev != want {
		t.Errorf("store revision %d after txn, want %d: one commit", rev, want)
	}
}

func TestOverlappingPoolsRefused(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	a := mustCreate(t, c, newPool("pool-a", "10.1.0.0/16"))

	_, err := c.Create(ctx, newPool("pool-b", "10.1.128.0/17"))
	if err == nil || !strings.Contains(err.Error(), "IP pools would overlap: ") || !strings.Contains(err.Error(), `"pool-b"`) {
		t.Errorf("overlapping create: %v", err)
	}
	_, err = c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newPool("pool-x", "10.2.0.0/16")},
		{Action: datastore.OpCreate, Resource: newPool("pool-y", "10.2.3.0/24")},
	})
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("txn creating overlapping pools: %v", err)
	}
	moved := *a.(*api.IPPool)
	mustCreate(t, c, newPool("pool-c", "10.3.0.0/16"))
	moved.Spec.CIDR = "10.3.0.0/24"
	if _, err := c.Update(ctx, &moved); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("update moving a pool onto another: %v", err)
	}
	// Replacing a pool by an overlapping one in one transaction is fine.
	if _, err := c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpDelete, Resource: newPool("pool-a", "")},
		{Action: datastore.OpCreate, Resource: newPool("pool-b", "10.1.128.0/17")},
	}); err != nil {
		t.Errorf("swap pool-a for pool-b: %v", err)
	}
	pools, _, _ := datastore.ListAs[*api.IPPool](ctx, c, "")
	var got []string
	for _, p := range pools {
		got = append(got, p.Name+"="+p.Spec.CIDR)
	}
	if strings.Join(got, " ") != "pool-b=10.1.128.0/17 pool-c=10.3.0.0/16" {
		t.Errorf("pools: %s", got)
	}
}

// TestConcurrentOverlappingPools: writers each create a different pool, all
// overlapping; each alone would pass validation, but only one may commit.
func TestConcurrentOverlappingPools(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			p := newPool("pool-"+string(rune('a'+i)), "10.50.0.0/16")
			<-start
			_, errs[i] = c.Create(ctx, p)
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !strings.Contains(err.Error(), "overlaps"):
			t.Errorf("writer %d: %v, want an overlap error", i, err)
		}
	}
	pools, _, _ := c.List(ctx, poolKind, "")
	if won != 1 || len(pools) != 1 {
		t.Errorf("%d writers won, %d pools stored; want 1 and 1", won, len(pools))
	}
}

// TestCreateOfTakenName: creates write without reading first (the compare checks that
// the name is free), so a taken name must still fail with ErrAlreadyExists and change
// nothing.
func TestCreateOfTakenName(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	taken := mustCreate(t, c, newNetSet("default", "taken", "10.0.0.1"))

	_, err := c.Create(ctx, newNetSet("default", "taken", "10.0.0.2"))
	if !errors.Is(err, datastore.ErrAlreadyExists) || err.Error() != "create networksets/default/taken: already exists" {
		t.Errorf("Create of a taken name: %v", err)
	}
	_, err = c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newNetSet("default", "free")},
		{Action: datastore.OpCreate, Resource: newNetSet("default", "taken")},
	})
	if !errors.Is(err, datastore.ErrAlreadyExists) || err.Error() != "txn op 1: create networksets/default/taken: already exists" {
		t.Errorf("Txn creating a taken name: %v", err)
	}
	got, err := c.Get(ctx, netsetKind, "default", "taken")
	if err != nil || asJSON(t, got) != asJSON(t, taken) {
		t.Errorf("after the failed creates: %s (%v), want %s", asJSON(t, got), err, asJSON(t, taken))
	}
	if _, err := c.Get(ctx, netsetKind, "default", "free"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("the failed Txn created networksets/default/free: %v", err)
	}
}

// TestTxnLease: a resource put under a lease is deleted with the lease (a watcher sees
// it go); one put without stays.
func TestTxnLease(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	lease, err := c.Etcd().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpApply, Resource: newNetSet("default", "leased"), Lease: lease.ID},
		{Action: datastore.OpApply, Resource: newNetSet("default", "kept")},
	}); err != nil {
		t.Fatal(err)
	}
	events := c.Watch(ctx, netsetKind, "", 0)
	for ev := range events {
		if ev.Type == datastore.Synced {
			break
		}
	}
	if _, err := c.Etcd().Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Type != datastore.Deleted || ev.Resource.GetObjectMeta().Name != "leased" {
		t.Errorf("after the lease's revocation: %v %s, want leased deleted", ev.Type, ev.Resource.GetObjectMeta().Name)
	}
	if sets, _, _ := c.List(ctx, netsetKind, ""); len(sets) != 1 || sets[0].GetObjectMeta().Name != "kept" {
		t.Errorf("left: %s, want kept", asJSON(t, sets))
	}
}

// TestTxnLimits: 10,000 small writes go in one transaction (etcd's default request limit
// refused 5,000, and the client's default message size 10,000); a transaction whose keys
// and values exceed MaxRequestBytes is refused before it is sent, saying so, and writes
// nothing.
func TestTxnLimits(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	ops := make([]datastore.Op, 10000)
	for i := range ops {
		ops[i] = datastore.Op{Action: datastore.OpApply, Resource: newNetSet("default", fmt.Sprintf("set-%05d", i), fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))}
	}
	if _, err := c.Txn(ctx, ops); err != nil {
		t.Fatalf("10,000 writes in one transaction: %v", err)
	}
	// Again: now each write also compares against the stored revision.
	if _, err := c.Txn(ctx, ops); err != nil {
		t.Fatalf("10,000 updates in one transaction: %v", err)
	}

	big := make([]datastore.Op, 20)
	for i := range big {
		s := newNetSet("big", fmt.Sprintf("big-%02d", i))
		s.Annotations = map[string]string{"note": strings.Repeat("x", 600<<10)}
		big[i] = datastore.Op{Action: datastore.OpCreate, Resource: s}
	}
	_, err := c.Txn(ctx, big)
	if !errors.Is(err, datastore.ErrTooLarge) || !strings.Contains(err.Error(), "MiB of keys and values, more than the 10.0 MiB one etcd request may carry") {
		t.Errorf("a transaction of 12 MiB: %v", err)
	}
	if got, _, err := datastore.ListAs[*api.NetworkSet](ctx, c, "big"); err != nil || len(got) != 0 {
		t.Errorf("after the refused transaction: %d sets (%v)", len(got), err)
	}
}
