package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// TestNodeDelete: node list shows a node whose agent holds its lease alive and the
// others down; node delete refuses the live one without --force and, once its lease is
// gone, removes its Node and endpoints and releases its addresses, tunnel address and
// affinities, leaving another node's state alone; ipam check is clean after.
func TestNodeDelete(t *testing.T) {
	n := startNode(t, t.TempDir())
	apply(t, n, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.70.0.0/24, blockSize: 28}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n3}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-of-n3}
spec: {node: n3, peerIP: 192.0.2.1, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-of-n1}
spec: {node: n1, peerIP: 192.0.2.2, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: everyone}
spec: {peerIP: 192.0.2.3, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.n3}
spec: {listenPort: 1790}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n3}
spec: {ipipMTU: 1400}
`)
	c := ipamOn(t, n)
	ds := dsOn(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, node := range []string{"n1", "n3", "n3"} {
		addWorkload(ctx, t, ds, c, node, fmt.Sprintf("c%d", i))
	}
	if _, err := c.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: ipam.TunnelVXLAN.Handle("n3"), Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	lease, err := ds.Etcd().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.PutAgentRecord(ctx, datastore.AgentRecord{Node: "n3", Started: time.Now(), Version: "v9", TTL: time.Minute}, lease.ID); err != nil {
		t.Fatal(err)
	}

	out := n.ok(t, "node", "list")
	assertContains(t, "node list", out, "AGENT")
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "n1 ") && !strings.HasSuffix(l, "down"):
			t.Errorf("n1 (no agent record) not down: %q", l)
		case strings.HasPrefix(l, "n3 ") && !strings.Contains(l, "alive since") || strings.HasPrefix(l, "n3 ") && !strings.Contains(l, "v9"):
			t.Errorf("n3 (agent record) not alive: %q", l)
		}
	}
	errOut := n.fails(t, "node", "delete", "n3")
	assertContains(t, "delete of a live node", errOut, `node "n3": its agent is alive`, "--force")
	if got := names(t, n, "nodes"); len(got) != 2 {
		t.Fatalf("nodes after a refused delete: %v", got)
	}

	if _, err := ds.Etcd().Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	assertContains(t, "node list after the lease went", n.ok(t, "node", "list"), "down")
	// The command says what it did on stdout; IPAM's own log lines of it show on stderr
	// only when asked for with --log-level.
	out, errOut, err = n.ctl(t, "", "--log-level", "info", "node", "delete", "n3")
	assertContains(t, "node delete", out, "Deleted node n3: 2 workload endpoints, 3 addresses released, 1 block affinities released, 3 node-scoped BGP peers and configurations deleted.")
	if got := names(t, n, "bgppeers"); !slices.Equal(got, []string{"everyone", "tor-of-n1"}) {
		t.Errorf("BGP peers after delete: %v, want the global one and n1's", got)
	}
	if got := names(t, n, "bgpconfigurations"); len(got) != 0 {
		t.Errorf("BGP configurations after delete: %v, want n3's override gone", got)
	}
	if got := names(t, n, "felixconfigurations"); len(got) != 0 {
		t.Errorf("Felix configurations after delete: %v, want n3's override gone", got)
	}
	assertContains(t, "node delete --log-level info: stderr", errOut, `level=INFO msg="released the block affinity of a deleted node"`)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, n, "nodes"); len(got) != 1 || got[0] != "n1" {
		t.Errorf("nodes after delete: %v", got)
	}
	if got := names(t, n, "workloadendpoints"); len(got) != 1 || got[0] != "pod-c0" {
		t.Errorf("endpoints after delete: %v", got)
	}
	assertContains(t, "ipam check", n.ok(t, "ipam", "check"), "1 allocations", "1 affinities", "No problems found.")
	assertContains(t, "delete again", n.fails(t, "node", "delete", "n3"), `node "n3": not found`)
}

// TestNodeDeleteRacesWorkloadAdds sweeps node delete against workload adds on that node
// started at once, as tabby-cni makes them (read the Node, allocate, write the endpoint
// while the Node exists; a refused write releases its addresses): after the delete and
// the adds have all returned, ipam check is clean and no endpoint is on the deleted node,
// even from an add that read the Node before the delete and wrote after its last pass.
func TestNodeDeleteRacesWorkloadAdds(t *testing.T) {
	n := startNode(t, t.TempDir())
	apply(t, n, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.70.0.0/20, blockSize: 28}
`)
	c := ipamOn(t, n)
	ds := dsOn(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for round, adds := range []int{1, 4, 8, 16} {
		node := fmt.Sprintf("r%d", round)
		apply(t, n, "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: "+node+"}\n")
		addWorkload(ctx, t, ds, c, node, node+"-first")
		var wg sync.WaitGroup
		for i := range adds {
			wg.Go(func() { tryAddWorkload(ctx, ds, c, node, fmt.Sprintf("%s-c%d", node, i)) })
		}
		out, errOut, err := n.ctl(t, "", "node", "delete", node)
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: node delete: %v\n%s%s", round, err, out, errOut)
		}
		if strings.Contains(errOut, "INFO") {
			t.Errorf("round %d: node delete logged at info level without --log-level:\n%s", round, errOut)
		}
		assertContains(t, fmt.Sprintf("round %d: ipam check", round), n.ok(t, "ipam", "check"), "No problems found.")
		weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, ds, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range weps {
			if w.Spec.Node == node {
				t.Errorf("round %d: endpoint %s on the deleted node", round, w.Name)
			}
		}
	}
}

func addWorkload(ctx context.Context, t *testing.T, ds *datastore.Client, c *ipam.Client, node, containerID string) {
	t.Helper()
	if err := tryAddWorkload(ctx, ds, c, node, containerID); err != nil {
		t.Fatal(err)
	}
}

// tryAddWorkload adds a workload as tabby-cni's ADD does: the Node must exist, then
// addresses are allocated and the endpoint written while the Node still exists
// (datastore.NodeExistsCheck); a failed write releases them.
func tryAddWorkload(ctx context.Context, ds *datastore.Client, c *ipam.Client, node, containerID string) error {
	if _, err := datastore.GetAs[*api.Node](ctx, ds, "", node); err != nil {
		return err
	}
	handle := ipam.WorkloadHandle("tabby-net", containerID)
	res, err := c.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: handle, Node: node,
		Attrs: map[string]string{ipam.AttrNamespace: "default", ipam.AttrContainerID: containerID}})
	if err != nil {
		return err
	}
	a := res.IPv4[0]
	w := &api.WorkloadEndpoint{}
	w.APIVersion, w.Kind = api.VersionCalico, "WorkloadEndpoint"
	w.Namespace, w.Name = "default", "pod-"+containerID
	w.Spec = api.WorkloadEndpointSpec{Node: node, ContainerID: containerID, InterfaceName: "eth0", Workload: "pod-" + containerID,
		IPNetworks: []string{a.Addr.String() + "/32"}}
	if _, err := ds.WithWriteCheck(datastore.NodeExistsCheck(node)).Create(ctx, w); err != nil {
		_, rerr := c.ReleaseIPs(ctx, ipam.ReleaseOptions{Addr: a.Addr, Handle: handle, SequenceNumber: &a.SequenceNumber})
		return errors.Join(err, rerr)
	}
	return nil
}
