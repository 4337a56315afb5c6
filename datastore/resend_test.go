package datastore_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

// TestWriteResentWhenMemberFails: a write whose etcd member fails mid-request (gRPC
// Unavailable) is sent again and succeeds, whether the failed send was applied (its reply
// lost: the resend's compare fails and finds the keys as written) or not (never arrived),
// and it is applied once. Creates without a read, creates and updates of pools (read
// first, compare on revisions) and deletes are each tried both ways.
func TestWriteResentWhenMemberFails(t *testing.T) {
	e := datastoretest.StartEmbedded(t)
	var fail atomic.Int32 // the next write fails this way: 0 none, 1 reply lost, 2 not sent
	var failed atomic.Int32
	inject := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r := req.(interface{ String() string }).String(); !strings.HasSuffix(method, "/Txn") || !strings.Contains(r, "request_put") && !strings.Contains(r, "request_delete_range") {
			return invoke(ctx, method, req, reply, cc, opts...)
		}
		switch fail.Swap(0) {
		case 1:
			if err := invoke(ctx, method, req, reply, cc, opts...); err != nil {
				return err
			}
			failed.Add(1)
			return status.Error(codes.Unavailable, "injected: the member died before replying")
		case 2:
			failed.Add(1)
			return status.Error(codes.Unavailable, "injected: the member died before the request arrived")
		}
		return invoke(ctx, method, req, reply, cc, opts...)
	}
	c, err := datastore.Connect(testCtx(t), datastore.WithInterceptor(datastore.Config{Endpoints: e.Endpoints()}, inject))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	for _, mode := range []int32{1, 2} {
		name := []string{"", "lost-reply", "not-sent"}[mode]
		before := failed.Load()

		fail.Store(mode)
		set, err := c.Create(ctx, newNetSet("ns", name, "10.0.0.0/8"))
		if err != nil {
			t.Fatalf("%s: create (no read) failed: %v", name, err)
		}
		fail.Store(mode)
		pool, err := c.Create(ctx, newPool(name, map[int32]string{1: "10.1.0.0/16", 2: "10.2.0.0/16"}[mode]))
		if err != nil {
			t.Fatalf("%s: create pool failed: %v", name, err)
		}
		pool.(*api.IPPool).Spec.Disabled = true
		fail.Store(mode)
		updated, err := c.Update(ctx, pool)
		if err != nil {
			t.Fatalf("%s: update pool failed: %v", name, err)
		}
		got, err := c.Get(ctx, poolKind, "", name)
		if err != nil || !got.(*api.IPPool).Spec.Disabled || got.GetObjectMeta().ResourceVersion != updated.GetObjectMeta().ResourceVersion {
			t.Errorf("%s: pool after update %+v (%v), want disabled at revision %s", name, got, err, updated.GetObjectMeta().ResourceVersion)
		}
		fail.Store(mode)
		if _, err := c.Delete(ctx, netsetKind, "ns", name, set.GetObjectMeta().ResourceVersion); err != nil {
			t.Fatalf("%s: delete failed: %v", name, err)
		}
		if n := failed.Load() - before; n != 4 {
			t.Fatalf("%s: %d writes failed by injection, want 4 (the test injects nothing)", name, n)
		}
	}
	sets, _, err := c.List(ctx, netsetKind, "ns")
	if err != nil || len(sets) != 0 {
		t.Errorf("network sets left: %v %v", sets, err)
	}
	pools, _, err := c.List(ctx, poolKind, "")
	if err != nil || len(pools) != 2 {
		t.Errorf("pools: %d (%v), want 2: each created once", len(pools), err)
	}
}
