package main

import (
	"context"
	"math/big"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/ipam"
)

func TestPoolsAvailable(t *testing.T) {
	pool := func(name, cidr string, size, inUse int, disabled bool) ipam.PoolUsage {
		return ipam.PoolUsage{Name: name, CIDR: netip.MustParsePrefix(cidr), Size: big.NewInt(int64(size)), InUse: inUse, Disabled: disabled}
	}
	full4 := pool("full", "10.0.0.0/30", 4, 4, false)
	free4 := pool("free", "10.1.0.0/30", 4, 1, false)
	off4 := pool("off", "10.2.0.0/30", 4, 0, true)
	free6 := pool("v6", "fd00::/126", 4, 0, false)
	v4, both := &ipamConf{}, &ipamConf{AssignIPv6: ptr(flag(true))}
	for _, c := range []struct {
		pools []ipam.PoolUsage
		conf  *ipamConf
		want  string // "" for available
	}{
		{[]ipam.PoolUsage{full4, free4}, v4, ""},
		{[]ipam.PoolUsage{full4, off4}, v4, "no IPv4 IPPool has a free address: full (10.0.0.0/30, 4 of 4 in use); off (10.2.0.0/30, 0 of 4 in use, disabled)"},
		{nil, v4, "there is no IPv4 IPPool"},
		{[]ipam.PoolUsage{free4}, both, "there is no IPv6 IPPool"},
		{[]ipam.PoolUsage{free4, free6}, both, ""},
		{[]ipam.PoolUsage{full4, free4}, &ipamConf{IPv4Pools: []string{"10.0.0.0/30"}}, "no IPv4 IPPool has a free address: full"},
		{[]ipam.PoolUsage{free4}, &ipamConf{IPv4Pools: []string{"nosuch"}}, "none of the IPv4 pools the configuration names (nosuch) exists"},
		{[]ipam.PoolUsage{free6}, &ipamConf{AssignIPv4: ptr(flag(false)), AssignIPv6: ptr(flag(true))}, ""},
	} {
		err := poolsAvailable(c.pools, c.conf)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("pools %v: got %v, want %q", c.pools, err, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestStaleEndpoints(t *testing.T) {
	c := testConf(t, "")
	c.ValidAttachments = []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}
	wep := func(name, node, network, cid, ifName string) *api.WorkloadEndpoint {
		return &api.WorkloadEndpoint{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{annotationNetwork: network}},
			Spec:       api.WorkloadEndpointSpec{Node: node, ContainerID: cid, Endpoint: ifName},
		}
	}
	weps := []*api.WorkloadEndpoint{
		wep("valid", "node1", "tabby-net", "c1", "eth0"),
		wep("other-iface", "node1", "tabby-net", "c1", "net1"),
		wep("gone", "node1", "tabby-net", "c2", "eth0"),
		wep("other-node", "node2", "tabby-net", "c3", "eth0"),
		wep("other-network", "node1", "storage-net", "c4", "eth0"),
	}
	var names []string
	for _, w := range staleEndpoints(weps, c) {
		names = append(names, w.Name)
	}
	if strings.Join(names, " ") != "other-iface gone" {
		t.Errorf("stale: %v", names)
	}
}

// TestReadNode: ADD refuses a node that is not registered, naming it and where its name
// came from: nodename in the configuration (7) or the host name (11).
func TestReadNode(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx := context.Background()
	if _, err := ds.Create(ctx, &api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "node1"}}); err != nil {
		t.Fatal(err)
	}
	configured, err := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "tabby-cni", "nodename": "node1"}`), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := readNode(ctx, ds, configured); err != nil || n.Name != "node1" {
		t.Errorf("registered node: %v %v", n, err)
	}
	configured.NodeName = "nodez"
	_, err = readNode(ctx, ds, configured)
	wantError(t, "configured node not registered", cniError(err), types.ErrInvalidNetworkConfig, `node "nodez" (nodename in the network configuration) is not registered in etcd`)
	fromHost, err := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "tabby-cni"}`), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = readNode(ctx, ds, fromHost)
	wantError(t, "host name not registered", cniError(err), types.ErrTryAgainLater, `node "host-a" (the host name: the configuration sets no nodename) is not registered in etcd: start tabby-node on this host`)
}
