package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

func TestRegisterNode(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx := context.Background()
	v4 := netip.MustParsePrefix("172.31.1.10/24")

	n, err := registerNode(ctx, ds, "node1", v4, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.BGP.IPv4Address != "172.31.1.10/24" {
		t.Errorf("ipv4Address = %q", n.Spec.BGP.IPv4Address)
	}

	// An operator's labels and AS number survive a re-registration with a new address.
	asn := api.ASNumber(65001)
	n.Labels = map[string]string{"rack": "a"}
	n.Spec.BGP.ASNumber = &asn
	if _, err := ds.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	rev := n.ResourceVersion
	again, err := registerNode(ctx, ds, "node1", v4, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion == rev {
		t.Fatal("test setup: update did not change the revision")
	}
	unchanged, _ := datastore.GetAs[*api.Node](ctx, ds, "", "node1")
	if unchanged.ResourceVersion != again.ResourceVersion {
		t.Errorf("re-registering with the same address wrote the node again")
	}
	moved, err := registerNode(ctx, ds, "node1", netip.MustParsePrefix("172.31.1.11/24"), netip.MustParsePrefix("fd00::11/64"))
	if err != nil {
		t.Fatal(err)
	}
	if moved.Labels["rack"] != "a" || moved.Spec.BGP.ASNumber == nil || *moved.Spec.BGP.ASNumber != asn {
		t.Errorf("re-registration lost operator fields: %+v", moved)
	}
	if moved.Spec.BGP.IPv4Address != "172.31.1.11/24" || moved.Spec.BGP.IPv6Address != "fd00::11/64" {
		t.Errorf("addresses = %q, %q", moved.Spec.BGP.IPv4Address, moved.Spec.BGP.IPv6Address)
	}

	// Another node may not take node1's address.
	_, err = registerNode(ctx, ds, "node2", netip.MustParsePrefix("172.31.1.11/24"), netip.Prefix{})
	if err == nil || !strings.Contains(err.Error(), "already used by node node1") {
		t.Errorf("duplicate address: err = %v", err)
	}
	if _, err := datastore.GetAs[*api.Node](ctx, ds, "", "node2"); err == nil {
		t.Error("node2 was written although its address was taken")
	}
}
