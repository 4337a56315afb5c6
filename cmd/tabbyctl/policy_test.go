package main

import (
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	n := startNode(t, t.TempDir())
	apply(t, n, `apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {node: n1, interfaceName: tabby1, ipNetworks: ["10.1.0.1/32"]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {node: n2, interfaceName: tabby2, ipNetworks: ["10.1.0.2/32"]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
`)
	out := n.ok(t, "policy", "check", "prod/web", "prod/db", "--port", "5432")
	assertContains(t, "allowed flow", out, "ALLOWED", "knp.default.db-from-web ingress[0].from[0].ports(TCP) (Allow)", "no policy applies")
	out = n.ok(t, "policy", "check", "prod/web", "10.1.0.2", "--port", "5433")
	assertContains(t, "denied port", out, "DENIED", "default deny")
	out = n.ok(t, "policy", "check", "192.0.2.7", "prod/db", "--port", "5432", "--protocol", "udp")
	assertContains(t, "outside source", out, "DENIED", "192.0.2.7 is not a workload or host endpoint")
	n.fails(t, "policy", "check", "prod/nope", "prod/db")
	n.fails(t, "policy", "check", "prod/web", "prod/db", "--protocol", "bogus")
}
