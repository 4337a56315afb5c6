package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/ipam"
)

// TestUndoUnknownWrite: an ADD whose endpoint write timed out after etcd applied it
// removes that endpoint before it releases the addresses it names; when the endpoint
// cannot be read, the addresses stay allocated (never released under an endpoint that
// may name them), and the error says so.
func TestUndoUnknownWrite(t *testing.T) {
	ctx := context.Background()
	for _, reachable := range []bool{true, false} {
		t.Run(fmt.Sprintf("etcd reachable %v", reachable), func(t *testing.T) {
			e := datastoretest.StartEmbedded(t)
			connect := func() *datastore.Client {
				ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: e.Endpoints()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ds.Close() })
				return ds
			}
			ds, observer := connect(), connect()
			for _, r := range []api.Resource{
				&api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "p"}, Spec: api.IPPoolSpec{CIDR: "10.80.0.0/24"}},
				&api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "node1"}},
			} {
				if _, err := ds.Create(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			id, err := newWorkloadID(testConf(t, ""), testCID, "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web")
			if err != nil {
				t.Fatal(err)
			}
			ad := &adder{id: id, ds: ds, ipam: ipam.New(ds, slog.New(slog.DiscardHandler)), log: slog.New(slog.DiscardHandler)}
			got, err := ad.ipam.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: id.Handle, Node: id.Node, Attrs: id.ipamAttrs()})
			if err != nil {
				t.Fatal(err)
			}
			a := got.IPv4[0]
			// The write reached etcd; its answer did not reach the plugin.
			if err := writeEndpoint(ctx, ds, id.endpoint([]netip.Addr{a.Addr}, "ee:ee:ee:ee:ee:ee"), nil); err != nil {
				t.Fatal(err)
			}
			if !reachable {
				ds.Close()
			}
			lost := fmt.Errorf("write workload endpoint: %w", context.DeadlineExceeded)
			if !datastore.Unknown(lost) {
				t.Fatal("a write cut by its deadline is not one of unknown outcome")
			}
			err = ad.undoUnknownWrite(ctx, lost, []ipam.Assignment{a}, nil)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("undo returned %v, want the write's error", err)
			}
			w, werr := getEndpoint(ctx, observer, id.Namespace, id.Endpoint)
			alloc, aerr := ipam.New(observer, nil).GetAllocation(ctx, a.Addr)
			if reachable {
				if w != nil || werr != nil || !errors.Is(aerr, ipam.ErrNotAllocated) {
					t.Errorf("after undo: endpoint %v (%v), allocation %v (%v); want both gone", w, werr, alloc, aerr)
				}
				return
			}
			if w == nil || aerr != nil || alloc.Handle != id.Handle {
				t.Errorf("after an undo that could not read the endpoint: endpoint %v (%v), allocation %v (%v); want both kept", w, werr, alloc, aerr)
			}
			if !strings.Contains(err.Error(), "its addresses stay allocated until the IPAM garbage collector") {
				t.Errorf("undo's error does not say the addresses stay: %v", err)
			}
		})
	}
}
