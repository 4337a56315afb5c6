package main

import "testing"

// TestPolicyCheckHostEndpoint: apply, get and delete a HostEndpoint; policy check
// decides traffic to its expectedIPs by host endpoint policy (one without interfaceName
// too), and refuses a bad one.
func TestPolicyCheckHostEndpoint(t *testing.T) {
	n := startNode(t, t.TempDir())
	apply(t, n, `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: etcd1-eth0, labels: {role: etcd}}
spec: {node: etcd1, interfaceName: eth0, expectedIPs: [192.0.2.11]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: etcd-clients}
spec:
  selector: role == 'etcd'
  ingress: [{action: Allow, protocol: TCP, source: {nets: [192.0.2.0/28]}, destination: {ports: [2379]}}]
`)
	out := n.ok(t, "get", "hostendpoints")
	assertContains(t, "get", out, "etcd1-eth0", "etcd1", "eth0", "192.0.2.11")
	out = n.ok(t, "policy", "check", "192.0.2.5", "192.0.2.11", "--port", "2379")
	assertContains(t, "allowed client", out, "ALLOWED", "ingress of host endpoint etcd1-eth0: allowed by tier default: GlobalNetworkPolicy etcd-clients ingress[0] (Allow)")
	out = n.ok(t, "policy", "check", "192.0.2.50", "192.0.2.11", "--port", "2379")
	assertContains(t, "other client", out, "DENIED", "ingress of host endpoint etcd1-eth0: denied by tier default: no rule allowed it")
	out = n.ok(t, "policy", "check", "192.0.2.11", "192.0.2.50", "--port", "443")
	assertContains(t, "the host's egress", out, "DENIED", "egress  of host endpoint etcd1-eth0: denied by no policy applies; no profile rules: denied (a host endpoint's default)")
	if _, errOut, err := n.ctl(t, "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: bad}\nspec: {node: etcd1}\n", "apply", "-f", "-"); err == nil {
		t.Error("a host endpoint without interfaceName nor expectedIPs was applied")
	} else {
		assertContains(t, "bad host endpoint", errOut, "spec.interfaceName: required when expectedIPs is empty")
	}
	// Without interfaceName, found by its addresses, as in Calico.
	apply(t, n, "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: etcd1-by-addr, labels: {role: etcd}}\nspec: {node: etcd1, expectedIPs: [192.0.2.12]}\n")
	out = n.ok(t, "policy", "check", "192.0.2.5", "192.0.2.12", "--port", "2379")
	assertContains(t, "found by address", out, "ALLOWED", "ingress of host endpoint etcd1-by-addr: allowed by tier default: GlobalNetworkPolicy etcd-clients ingress[0] (Allow)")
	n.ok(t, "delete", "hostendpoint", "etcd1-eth0")
	n.ok(t, "delete", "hostendpoint", "etcd1-by-addr")
	out = n.ok(t, "policy", "check", "192.0.2.50", "192.0.2.11", "--port", "2379")
	assertContains(t, "deleted", out, "ALLOWED", "192.0.2.11 is not a workload or host endpoint")
}
