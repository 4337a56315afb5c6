package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// policyCheck runs tabbyctl policy check on a cell: its verdict and its report.
func (m *matrixLab) policyCheck(c cell) (bool, string, error) {
	// A node is named by its address: policy check takes workloads' names, not nodes'.
	out, stderr, code := m.l.Run("", "ctl", "policy", "check", c.from, m.addr(c.to).String(), "--protocol", c.proto, "--port", fmt.Sprint(c.port))
	if code != 0 {
		return false, "", fmt.Errorf("policy check %s: exit %d: %s", c, code, stderr)
	}
	first, _, _ := strings.Cut(out, "\n")
	return strings.HasSuffix(first, ": ALLOWED"), out, nil
}

// policyCheckWorkers is how many policy checks run at once: each is a tabbyctl process
// that mostly waits on etcd.
const policyCheckWorkers = 6

// expectPolicyCheck requires tabbyctl policy check to agree with the kernel on every
// cell (expectMatrix has seen the kernel agree with the oracle).
func (m *matrixLab) expectPolicyCheck(t testing.TB, scenario string) {
	t.Helper()
	observed := m.observe(t)
	cells := make(chan cell)
	var mu sync.Mutex
	var diff []string
	var wg sync.WaitGroup
	for range policyCheckWorkers {
		wg.Go(func() {
			for c := range cells {
				got, out, err := m.policyCheck(c)
				mu.Lock()
				switch {
				case err != nil:
					diff = append(diff, "  "+err.Error())
				case got != observed[c]:
					diff = append(diff, fmt.Sprintf("  %s: observed %s, policy check %s:\n%s", c, verdictWord(observed[c]), verdictWord(got), out))
				}
				mu.Unlock()
			}
		})
	}
	for _, c := range m.cells() {
		cells <- c
	}
	close(cells)
	wg.Wait()
	if len(diff) > 0 {
		slices.Sort(diff)
		t.Errorf("%s: policy check differs from the kernel on %d cells:\n%s", scenario, len(diff), strings.Join(diff, "\n"))
	}
}

// expectDecidedBy requires policy check to agree with the kernel on every cell, and its
// report of cells to name what decided them.
func expectDecidedBy(cells map[cell]string) func(*testing.T, *matrixLab) {
	return func(t *testing.T, m *matrixLab) {
		m.expectPolicyCheck(t, "policy check")
		for c, want := range cells {
			if _, out, err := m.policyCheck(c); err != nil {
				t.Error(err)
			} else if !strings.Contains(out, want) {
				t.Errorf("policy check %s does not say %q:\n%s", c, want, out)
			}
		}
	}
}

// Tiers with Pass: tiers run in their order, not their names'; a rule's Pass and a
// tier's defaultAction Pass move on to the next tier.
var tiersScenario = policyScenario{"tiers in order, with Pass rules and defaultAction Pass", `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: zz-first}
spec: {order: 10, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: aa-second}
spec: {order: 20}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: zz-first.guard}
spec:
  tier: zz-first
  namespaceSelector: ns == 'x'
  ingress:
  - {action: Deny, protocol: UDP, source: {namespaceSelector: ns == 'y'}}
  - {action: Pass, protocol: TCP, destination: {ports: [81]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: aa-second.only-z}
spec:
  tier: aa-second
  namespaceSelector: ns == 'x'
  ingress:
  - {action: Allow, source: {namespaceSelector: ns == 'z'}}
  - {action: Pass, source: {namespaceSelector: ns == 'y'}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-81, namespace: x}
spec:
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [81]}}]
`, "", expectDecidedBy(map[cell]string{
	{"y/a", "x/b", "udp", 80}: "tier zz-first: GlobalNetworkPolicy zz-first.guard ingress[0] (Deny)",
	{"z/a", "x/b", "tcp", 80}: "tier aa-second: GlobalNetworkPolicy aa-second.only-z ingress[0] (Allow)",
	{"y/a", "x/b", "tcp", 81}: "tier default: NetworkPolicy x/allow-81 ingress[0] (Allow)",
	{"y/a", "x/b", "tcp", 80}: "tier default: no rule allowed it",
	{"x/a", "x/b", "tcp", 80}: "tier aa-second: no rule allowed it",
})}

// A service-account Deny: by account name (a global policy: any namespace's; a
// namespaced one: its own namespace's) and a policy selecting by serviceAccountSelector.
var serviceAccountScenario = policyScenario{"service-account Deny, serviceAccountSelector", `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-sa-b-into-z}
spec:
  namespaceSelector: ns == 'z'
  ingress: [{action: Deny, source: {serviceAccounts: {names: [sa-b]}}}, {action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: own-sa-a-only, namespace: "y"}
spec:
  ingress: [{action: Allow, source: {serviceAccounts: {names: [sa-a]}}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sa-c-no-udp-out}
spec:
  serviceAccountSelector: projectcalico.org/name == 'sa-c'
  types: [Egress]
  egress: [{action: Deny, protocol: UDP}, {action: Allow}]
`, "", expectDecidedBy(map[cell]string{
	{"x/b", "z/a", "tcp", 80}: "GlobalNetworkPolicy no-sa-b-into-z ingress[0] (Deny)",
	{"x/a", "z/b", "tcp", 80}: "GlobalNetworkPolicy no-sa-b-into-z ingress[1] (Allow)",
	{"x/c", "x/a", "udp", 80}: "GlobalNetworkPolicy sa-c-no-udp-out egress[0] (Deny)",
})}

// services matches: to a Service's endpoints on its ports, and from its endpoints.
var servicesScenario = policyScenario{"services: to a Service's endpoints and ports, from its endpoints", `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: "y"}
spec:
  clusterIP: None
  selector: {pod: b}
  ports: [{name: http, port: 8080, targetPort: 80}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-to-web, namespace: x}
spec:
  types: [Egress]
  egress: [{action: Allow, destination: {services: {name: web, namespace: "y"}}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: not-from-web}
spec:
  namespaceSelector: ns == 'z'
  ingress: [{action: Deny, source: {services: {name: web, namespace: "y"}}}, {action: Allow}]
`, `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: "y"}
spec:
  clusterIP: None
  selector: {pod: c}
  ports: [{name: http, port: 8080, targetPort: 81}]
`, expectDecidedBy(map[cell]string{
	{"x/a", "y/b", "tcp", 80}: "NetworkPolicy x/only-to-web egress[0] (Allow)",
	{"y/b", "z/a", "tcp", 80}: "GlobalNetworkPolicy not-from-web ingress[0] (Deny)",
})}
