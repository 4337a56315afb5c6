package policy

import "testing"

// matchTests are TestEvaluate's cases of serviceAccounts, serviceAccountSelector and
// services matches.
var matchTests = []evalCase{
	{"serviceAccounts names: a namespaced policy's match their namespace's accounts", `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-sa-b, namespace: x}
spec:
  ingress: [{action: Deny, source: {serviceAccounts: {names: [sa-b, sa-nobody]}}}, {action: Allow}]
`, []probe{
		why(tcp("x/b", "x/a", 80, false), "NetworkPolicy x/no-sa-b ingress[0] (Deny)"),
		why(tcp("y/b", "x/a", 80, true), "NetworkPolicy x/no-sa-b ingress[1] (Allow)"),
		tcp("x/c", "x/a", 80, true),
	}},
	{"serviceAccounts selector over the accounts' labels (pcsa.), with a selector (AND)", `---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.y}
spec: {labelsToApply: {pcsa.role: admin}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: admins-to-z}
spec:
  namespaceSelector: ns == 'z'
  ingress:
  - {action: Deny, source: {selector: pod != 'c', serviceAccounts: {selector: role == 'admin'}}}
  - {action: Allow, source: {serviceAccounts: {names: [sa-a]}}}
`, []probe{
		why(tcp("y/a", "z/b", 80, false), "admins-to-z ingress[0] (Deny)"),
		tcp("y/b", "z/b", 80, false),
		why(tcp("y/c", "z/b", 80, false), "no rule allowed it"), // pod c is left out of the Deny; not sa-a
		why(tcp("x/a", "z/b", 80, true), "admins-to-z ingress[1] (Allow)"),
		tcp("x/b", "z/b", 80, false),
	}},
	{"serviceAccountSelector restricts the endpoints a policy applies to", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: lock-sa-c}
spec:
  serviceAccountSelector: projectcalico.org/name == 'sa-c'
  ingress: [{action: Deny}]
`, []probe{
		why(tcp("x/a", "y/c", 80, false), "lock-sa-c ingress[0] (Deny)"),
		tcp("y/a", "z/c", 80, false),
		why(tcp("x/a", "y/b", 80, true), "no policy applies"),
	}},
	{"services: a destination's endpoints with their ports, a source's endpoints", `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: "y"}
spec:
  selector: {pod: b}
  ports: [{name: http, port: 8080, targetPort: 80}, {name: dns, port: 53, targetPort: serve-81-udp, protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-web, namespace: x}
spec:
  selector: pod == 'a'
  egress: [{action: Allow, destination: {services: {name: web, namespace: "y"}}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: not-from-web}
spec:
  namespaceSelector: ns == 'z'
  ingress: [{action: Deny, source: {services: {name: web, namespace: "y"}}}, {action: Allow}]
`, []probe{
		why(tcp("x/a", "y/b", 80, true), "only-web egress[0] (Allow)"),
		why(tcp("x/a", "y/b", 81, false), "tier default: no rule allowed it"),
		udp("x/a", "y/b", 81, true),
		udp("x/a", "y/b", 80, false),
		tcp("x/a", "y/c", 80, false),
		why(tcp("y/b", "z/a", 80, false), "not-from-web ingress[0] (Deny)"),
		why(tcp("y/a", "z/a", 80, true), "not-from-web ingress[1] (Allow)"),
	}},
	{"services: a Service that does not exist matches nothing", `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-ghost, namespace: x}
spec:
  ingress: [{action: Deny, source: {services: {name: ghost}}}, {action: Allow}]
`, []probe{
		why(tcp("x/b", "x/a", 80, true), "deny-ghost ingress[1] (Allow)"),
	}},
}

// TestUsesServices: a model depends on the Services' endpoints only while a rule has a
// services match.
func TestUsesServices(t *testing.T) {
	if world(t, matchTests[0].yaml).UsesServices() {
		t.Error("a model without services matches uses services")
	}
	if !world(t, matchTests[3].yaml).UsesServices() {
		t.Error("a model with services matches does not use services")
	}
}
