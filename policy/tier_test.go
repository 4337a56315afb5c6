package policy

import (
	"slices"
	"testing"
)

// TestDecisionTier: a Decision names the tier that decided, and a tier that passed by its
// defaultAction is recorded on the way.
func TestDecisionTier(t *testing.T) {
	m := world(t, tierTests[0].yaml)
	v := m.Evaluate(Packet{Src: podAddr(t, "z/b"), Dst: podAddr(t, "x/a"), Protocol: ProtoTCP, SrcPort: 40000, DstPort: 80})
	d := v.Ingress
	if !v.Allowed || d.Tier != "a-late" || d.Policy == nil || d.Policy.Name != "allow-y-z" {
		t.Errorf("z/b -> x/a: allowed %v by tier %q policy %v, want tier a-late's allow-y-z", v.Allowed, d.Tier, d.Policy)
	}
	if want := "tier z-early: no rule decided; its defaultAction Pass passed"; !slices.Contains(d.Logged, want) {
		t.Errorf("on the way %q, want %q", d.Logged, want)
	}
	v = m.Evaluate(Packet{Src: podAddr(t, "x/b"), Dst: podAddr(t, "x/a"), Protocol: ProtoTCP, SrcPort: 40000, DstPort: 80})
	if d := v.Ingress; v.Allowed || d.Tier != "a-late" || d.Rule != -1 {
		t.Errorf("x/b -> x/a: allowed %v by tier %q rule %d, want denied at the end of tier a-late", v.Allowed, d.Tier, d.Rule)
	}
	if got := m.TierOf("default"); got.Order != 1_000_000 || got.Pass() || !got.Implicit {
		t.Errorf("implicit default tier %+v", got)
	}
}

// tierTests are TestEvaluate's cases of Tier resources: order, defaultAction, the default
// tier and a tier no resource defines.
var tierTests = []evalCase{
	{"tiers by order, not name; defaultAction Pass", `---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: a-late}
spec: {order: 200}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: z-early}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-early.deny-y}
spec:
  tier: z-early
  selector: pod == 'a'
  namespaceSelector: ns == 'x'
  ingress: [{action: Deny, source: {namespaceSelector: ns == 'y'}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-y-z}
spec:
  tier: a-late
  selector: pod == 'a'
  namespaceSelector: ns == 'x'
  ingress: [{action: Allow, source: {namespaceSelector: "ns in {'y', 'z'}"}}]
`, []probe{
		why(tcp("y/b", "x/a", 80, false), "tier z-early: GlobalNetworkPolicy z-early.deny-y ingress[0] (Deny)"),
		why(tcp("z/b", "x/a", 80, true), "tier a-late: GlobalNetworkPolicy allow-y-z ingress[0] (Allow)"),
		why(tcp("x/b", "x/a", 80, false), "tier a-late: no rule allowed it"),
		why(tcp("y/b", "x/b", 80, true), "no policy applies"),
	}},
	{"a tier no Tier resource defines comes last and denies", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ghost.deny-all}
spec:
  tier: ghost
  namespaceSelector: ns == 'x'
  ingress: [{action: Deny, source: {namespaceSelector: ns == 'z'}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: pass-y, namespace: x}
spec:
  ingress: [{action: Pass, source: {namespaceSelector: ns == 'y'}}, {action: Allow, source: {namespaceSelector: ns == 'z'}}]
`, []probe{
		why(tcp("z/a", "x/a", 80, true), "tier default: NetworkPolicy x/pass-y ingress[1] (Allow)"),
		why(tcp("y/a", "x/a", 80, false), "tier ghost: no rule allowed it"),
		why(tcp("x/b", "x/a", 80, false), "tier default: no rule allowed it"),
	}},
	{"the default tier's defaultAction Pass leaves the rest to the profiles", `---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
spec: {defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.x}
spec:
  ingress: [{action: Allow, source: {namespaceSelector: ns == 'z'}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-y, namespace: x}
spec:
  ingress: [{action: Allow, source: {namespaceSelector: ns == 'y'}}]
`, []probe{
		why(tcp("y/a", "x/a", 80, true), "NetworkPolicy x/only-y"),
		why(tcp("z/a", "x/a", 80, true), "Profile kns.x ingress[0] (Allow)"),
		why(tcp("x/b", "x/a", 80, false), "every tier passed; no profile rule matched"),
	}},
}
