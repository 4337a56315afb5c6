package agent

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore/datastoretest"
)

// TestAgentLease runs the lease against etcd: the agent's record appears under the
// lease it reports; when that lease goes (revoked here, as when it expires) the record
// goes, holders are told, and a new lease brings the record back; when the agent stops,
// the record stays until its lease expires (it is not revoked).
func TestAgentLease(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := newAgentLease(ds, "node1", "v1.2.3")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()

	// waitLease waits for a current lease other than not, and the record under it.
	waitLease := func(not int64) int64 {
		t.Helper()
		for {
			id, changed := l.current()
			if id != 0 && int64(id) != not {
				resp, err := ds.Etcd().Get(ctx, "/tabby/agents/v1/node1")
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(id) {
					t.Fatalf("record %v, want one under lease %x", resp.Kvs, id)
				}
				return int64(id)
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatal("no new lease before the deadline")
			}
		}
	}
	first := waitLease(0)
	recs, err := ds.AgentRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs["node1"]; r.Node != "node1" || r.Version != "v1.2.3" || r.Started.IsZero() || r.TTL != agentLeaseTTL*time.Second {
		t.Errorf("record %+v", r)
	}

	if _, err := ds.Etcd().Revoke(ctx, clientv3.LeaseID(first)); err != nil {
		t.Fatal(err)
	}
	second := waitLease(first)
	if second == first {
		t.Fatalf("lease %x not renewed", first)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if recs, err := ds.AgentRecords(ctx); err != nil || len(recs) != 1 {
		t.Errorf("after a stop: records %v, %v; want the record until the lease expires", recs, err)
	}
}
