package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// runHealthProbes runs node's health probe subsystem (with its own snapshot) until the
// returned stop is called.
func runHealthProbes(t *testing.T, ds *datastore.Client, node string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	snap := snapshot.New(ds, nil, snapshotKinds(), slog.Default())
	lease := newAgentLease(ds, node, "test")
	h := newHealthProbeSubsystem(node, ds, snap, &serviceIndex{}, lease, nil)
	done := make(chan error, 3)
	go func() { done <- snap.Run(ctx) }()
	go func() { done <- lease.Run(ctx) }()
	go func() { done <- h.Run(ctx) }()
	return func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("%s: %v", node, err)
			}
		}
	}
}

// TestHealthProbesInEtcd runs the probe subsystem against etcd and endpoints on
// loopback: node1 records its two endpoints passing (not node2's), then one failing once
// its server is gone. Restarted (a new run, the old lease not expired), it takes the
// records over under a new lease without the failing one ever reading passing or
// vanishing; a deleted endpoint's record goes; and when the lease of the agent goes, its
// records go with it.
func TestHealthProbesInEtcd(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx := context.Background()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return l
	}
	a, b := listen(), listen()
	defer a.Close()
	manifest := `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {tabby.io/health-check: tcp, tabby.io/health-check-interval: 100ms}
spec:
  clusterIP: 10.96.0.7
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`
	for i, w := range []struct {
		node string
		l    net.Listener
	}{{"node1", a}, {"node1", b}, {"node2", a}} {
		manifest += fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w%d, namespace: shop, labels: {app: web}}
spec: {node: %s, interfaceName: tabby%d, ipNetworks: [127.0.0.1/32], ports: [{name: http, protocol: TCP, port: %d}]}
`, i+1, w.node, i+1, w.l.Addr().(*net.TCPAddr).Port)
	}
	rs, err := api.Decode([]byte(manifest), "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if _, err := ds.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	records := func() map[string]*api.EndpointHealth {
		hs, _, err := datastore.ListAs[*api.EndpointHealth](ctx, ds, "shop")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*api.EndpointHealth{}
		for _, h := range hs {
			out[h.Name] = h
		}
		return out
	}
	// lease is the lease a record is under (0: none, or no record).
	lease := func(name string) clientv3.LeaseID {
		resp, err := ds.Etcd().Get(ctx, datastore.ResourcePrefix+kindEndpointHealths.Key("shop", name))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	poll := func(what string, cond func(map[string]*api.EndpointHealth) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(records()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s: %+v", what, records())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	passing := func(rs map[string]*api.EndpointHealth, name string) bool {
		return rs[name] != nil && rs[name].Spec.Passing && rs[name].Spec.Node == "node1"
	}

	stop := runHealthProbes(t, ds, "node1")
	poll("both of node1's endpoints passing", func(rs map[string]*api.EndpointHealth) bool {
		return passing(rs, "web.w1") && passing(rs, "web.w2") && len(rs) == 2
	})
	b.Close()
	poll("w2 failing", func(rs map[string]*api.EndpointHealth) bool {
		return rs["web.w2"] != nil && !rs["web.w2"].Spec.Passing && strings.Contains(rs["web.w2"].Spec.Reason, "refused")
	})
	first := lease("web.w2")
	if first == 0 || lease("web.w1") != first {
		t.Fatalf("records under leases %x and %x, want one lease of the agent", lease("web.w1"), first)
	}
	stop()

	// A restart: the records stay, and the new run takes them over.
	events := ds.Watch(ctx, kindEndpointHealths, "shop", 0)
	for ev := range events {
		if ev.Type == datastore.Synced {
			break
		}
	}
	stop = runHealthProbes(t, ds, "node1")
	poll("records under the new run's lease", func(map[string]*api.EndpointHealth) bool {
		l1, l2 := lease("web.w1"), lease("web.w2")
		return l1 != 0 && l1 != first && l2 == l1
	})
	second := lease("web.w2")
	// Drain what the takeover wrote: w2 must never have read passing, nor gone.
	for drained := false; !drained; {
		select {
		case ev := <-events:
			if h, _ := ev.Resource.(*api.EndpointHealth); h != nil && h.Name == "web.w2" && (ev.Type == datastore.Deleted || h.Spec.Passing) {
				t.Errorf("during the restart, w2's record: %v passing %v", ev.Type, h.Spec.Passing)
			}
		case <-time.After(300 * time.Millisecond):
			drained = true
		}
	}
	if rs := records(); rs["web.w2"].Spec.Passing || !passing(rs, "web.w1") {
		t.Errorf("after the restart: %+v", rs)
	}

	// An endpoint gone: its record goes.
	if _, err := ds.Delete(ctx, kindWorkloadEndpoints, "shop", "w1", ""); err != nil {
		t.Fatal(err)
	}
	poll("w1's record gone", func(rs map[string]*api.EndpointHealth) bool { return rs["web.w1"] == nil && rs["web.w2"] != nil })
	stop()

	// The agent gone for good: its lease expires (revoked here) and its records go.
	if _, err := ds.Etcd().Revoke(ctx, second); err != nil {
		t.Fatal(err)
	}
	if rs := records(); len(rs) != 0 {
		t.Errorf("records after the lease went: %+v", rs)
	}
}
