package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

const populated = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64600, serviceClusterIPs: [{cidr: 10.96.0.0/16}]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.70.0.0/24, blockSize: 28, natOutgoing: true, ipipMode: Always}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: a}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-db}
spec:
  selector: app == 'db'
  types: [Ingress]
`

// TestDatastoreExportImport exports a populated datastore (resources, a Service with
// claimed addresses, workloads with IPAM state, a live agent's record), imports it into
// a fresh tabby-node --datastore-only, and checks: the import's export equals the export
// (a stable round trip), ipam check is clean there, the Service keeps its addresses, the
// live agent's record is not carried, and a second import is refused as not empty.
func TestDatastoreExportImport(t *testing.T) {
	src := startNode(t, t.TempDir())
	apply(t, src, populated)
	c, ds := ipamOn(t, src), dsOn(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, node := range []string{"n1", "n1", "n2"} {
		addWorkload(ctx, t, ds, c, node, fmt.Sprintf("c%d", i))
	}
	if _, err := c.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: ipam.TunnelIPIP.Handle("n2"), Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateConfig(ctx, func(cfg *ipam.Config) { cfg.MaxBlocksPerHost = 4 }); err != nil {
		t.Fatal(err)
	}
	lease, err := ds.Etcd().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.PutAgentRecord(ctx, datastore.AgentRecord{Node: "n1", Started: time.Now()}, lease.ID); err != nil {
		t.Fatal(err)
	}
	export := src.ok(t, "datastore", "export")
	assertContains(t, "export", export, "kind: DatastoreExport", "kind: IPPool", "kind: Service", "clusterIP: 10.", "kind: WorkloadEndpoint",
		"key: blocks/10.70.0.", "key: affinities/n1/", "key: handles/tabby-net.c0", "key: handles/ipip-tunnel-addr-n2", "key: config", "maxBlocksPerHost: 4")
	for _, no := range []string{"uid:", "creationTimestamp:", "resourceVersion:", "agents"} {
		if strings.Contains(export, no) {
			t.Errorf("export holds %q:\n%s", no, export)
		}
	}
	file := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(file, []byte(export), 0o644); err != nil {
		t.Fatal(err)
	}

	dst := startNode(t, t.TempDir())
	assertContains(t, "import", dst.ok(t, "datastore", "import", "-f", file), "Imported 10 resources and 9 IPAM records.")
	if again := dst.ok(t, "datastore", "export"); again != export {
		t.Errorf("the import's export differs from the export:\n--- export\n%s\n--- after import\n%s", export, again)
	}
	assertContains(t, "ipam check after import", dst.ok(t, "ipam", "check"), "4 allocations", "No problems found.")
	assertContains(t, "services after import", src.ok(t, "get", "services", "-n", "shop", "-o", "wide"), strings.Fields(dst.ok(t, "get", "services", "-n", "shop"))[7])
	assertContains(t, "node list after import", dst.ok(t, "node", "list"), "n1", "down")
	assertContains(t, "second import", dst.fails(t, "datastore", "import", "-f", file), "the datastore is not empty", "nothing was written")
}

// TestDatastoreImportMalformed: an import that is malformed anywhere (a resource's
// unknown field, an invalid value, an IPAM record of the wrong shape, the wrong kind of
// document) is refused with an error naming the resource or record and the field, and
// leaves the datastore empty.
func TestDatastoreImportMalformed(t *testing.T) {
	src := startNode(t, t.TempDir())
	apply(t, src, populated)
	if _, err := ipamOn(t, src).UpdateConfig(context.Background(), func(cfg *ipam.Config) { cfg.StrictAffinity = false }); err != nil {
		t.Fatal(err)
	}
	export := src.ok(t, "datastore", "export")
	dst := startNode(t, t.TempDir())
	ds := dsOn(t, dst)
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"unknown field", "natOutgoing: true", "natOutgoingg: true", []string{"resources[1]", `IPPool "p"`, "spec.natOutgoingg"}},
		{"invalid value", "blockSize: 28", "blockSize: 99", []string{"resources[1]", `IPPool "p"`, "blockSize"}},
		{"bad IPAM record", "strictAffinity: false", "strictAffinity: 3", []string{`ipam[`, `key "config"`, "strictAffinity"}},
		{"unknown IPAM key", "key: config", "key: configs", []string{`key "configs"`, "not an IPAM record"}},
		{"wrong document", "kind: DatastoreExport", "kind: List", []string{`kind "List"`, "want tabby.io/v1 DatastoreExport"}},
		{"unknown top-level field", "ipam:", "ipams:", []string{"ipams"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(export, tc.from, tc.to, 1)
			if bad == export {
				t.Fatalf("%q not in the export:\n%s", tc.from, export)
			}
			_, errOut, err := dst.ctl(t, bad, "datastore", "import", "-f", "-")
			if err == nil {
				t.Fatal("import succeeded")
			}
			assertContains(t, "import error", errOut, append(tc.want, "nothing was written")...)
			if n, first, err := ds.Keys(context.Background(), "/tabby/"); err != nil || n != 0 {
				t.Errorf("after a refused import: %d keys (%s), %v", n, first, err)
			}
		})
	}
}
