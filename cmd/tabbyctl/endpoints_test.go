package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// TestGetEndpoints: `get endpoints` shows the endpoints the agents derive, a row each
// with READY, SERVING and HEALTH (a failing record takes its endpoint out), for selector
// Services and for one reading its Endpoints resource; a stored Endpoints no Service
// reads is listed too, -o yaml still prints the stored resources, and `get services -o
// wide` lists each Service's ready endpoints. A bad health check annotation is refused
// and nothing written; EndpointHealth records cannot be applied.
func TestGetEndpoints(t *testing.T) {
	n := startNode(t, t.TempDir())
	manifest := `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {tabby.io/health-check: "http:/healthz"}
spec:
  clusterIP: 10.96.0.7
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  clusterIP: 10.96.0.8
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: shop}
subsets: [{addresses: [{ip: 192.0.2.1}], notReadyAddresses: [{ip: 192.0.2.2}], ports: [{name: dns, port: 5353, protocol: UDP}]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: shop}
subsets: [{addresses: [{ip: 192.0.2.9}], ports: [{port: 80}]}]
`
	for i, node := range []string{"node1", "node1", "node2"} {
		manifest += fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w%d, namespace: shop, labels: {app: web}}
spec: {node: %s, interfaceName: tabby%d, ipNetworks: [10.244.0.%d/32]}
`, i+1, node, i+1, i+1)
	}
	// A bad annotation: refused naming it and its value, and nothing written.
	bad := strings.Replace(manifest, `tabby.io/health-check: "http:/healthz"`, `tabby.io/health-check: "http:/healthz", tabby.io/health-check-interval: 2x`, 1)
	if _, errOut, err := n.ctl(t, bad, "apply", "-f", "-"); err == nil ||
		!strings.Contains(errOut, `metadata.annotations["tabby.io/health-check-interval"]: "2x" is not a duration`) {
		t.Errorf("apply with a bad interval: %v: %s", err, errOut)
	}
	if got := n.ok(t, "get", "services", "-A"); strings.Contains(got, "web") {
		t.Errorf("a refused apply wrote:\n%s", got)
	}
	if _, errOut, err := n.ctl(t, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v: %s", err, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{n.endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	record := func(workload, node string, passing bool, reason string) *api.EndpointHealth {
		h := &api.EndpointHealth{TypeMeta: api.TypeMeta{Kind: "EndpointHealth", APIVersion: api.VersionTabby},
			Spec: api.EndpointHealthSpec{Service: "web", Workload: workload, Node: node, Check: "http:/healthz 10.244.0.1:8080",
				Passing: passing, Since: time.Now().UTC(), Reason: reason}}
		h.Namespace, h.Name = "shop", api.EndpointHealthName("web", workload)
		return h
	}
	for _, r := range []*api.EndpointHealth{record("w1", "node1", true, ""), record("w2", "node1", false, "GET 10.244.0.2:8080/healthz: HTTP 503 Service Unavailable")} {
		if _, err := ds.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	got := n.ok(t, "get", "endpoints", "-n", "shop")
	want := []string{
		"NAME ENDPOINTS NODE READY SERVING HEALTH",
		"ext 192.0.2.1:5353 - true true -",
		"ext 192.0.2.2:5353 - false false -",
		"web 10.244.0.1:8080 node1 true true passing",
		"web 10.244.0.2:8080 node1 false false failing",
		"web 10.244.0.3:8080 node2 true true unknown",
		"legacy 192.0.2.9:80 - - - -",
	}
	if g := fields(got); g != strings.Join(want, "\n") {
		t.Errorf("get endpoints -n shop:\n%s\nwant (spacing aside):\n%s", got, strings.Join(want, "\n"))
	}
	wide := n.ok(t, "get", "endpoints", "-n", "shop", "web", "-o", "wide")
	assertContains(t, "get endpoints web -o wide", wide, "TERMINATING", "WORKLOAD", "SOURCE", "REASON",
		"w2  ", "selector", "HTTP 503 Service Unavailable")
	if strings.Contains(wide, "ext") || strings.Contains(wide, "legacy") {
		t.Errorf("get endpoints web shows other names:\n%s", wide)
	}
	assertContains(t, "get endpoints -A", n.ok(t, "get", "endpoints", "-A"), "NAMESPACE", "shop ")
	assertContains(t, "get endpoints nothing", n.fails(t, "get", "endpoints", "-n", "shop", "nothing"),
		`endpoints "nothing": no Service and no Endpoints of that name`)
	assertContains(t, "get endpoints -o yaml", n.ok(t, "get", "endpoints", "-n", "shop", "-o", "yaml"), "kind: Endpoints", "name: legacy")

	svcs := n.ok(t, "get", "services", "-n", "shop", "-o", "wide")
	assertContains(t, "get services -o wide", svcs, "CLUSTER-IP", "PORTS", "ENDPOINTS", "10.96.0.7", "80/TCP",
		"10.244.0.1:8080,10.244.0.3:8080", "192.0.2.1:5353")

	y := n.ok(t, "get", "endpointhealths", "-n", "shop", "web.w2", "-o", "yaml")
	_, errOut, err := n.ctl(t, y, "apply", "-f", "-")
	if err == nil || !strings.Contains(errOut, "EndpointHealth records are written by the agent of the endpoint's node") {
		t.Errorf("apply of an EndpointHealth: %v: %s", err, errOut)
	}
}

// fields is a table with each line's cells single-spaced.
func fields(table string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(table), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}
