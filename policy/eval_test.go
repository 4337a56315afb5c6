package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
)

// world is the matrix of the upstream Kubernetes network policy e2e suite: namespaces
// x, y, z with pods a, b, c; pod a of namespace n has address 10.0.<n>.<a>, with named
// ports serve-80-tcp, serve-81-tcp, serve-80-udp, serve-81-udp and service account
// sa-a, sa-b or sa-c by its name.
func world(t testing.TB, extra string) *Model {
	t.Helper()
	var b strings.Builder
	for ni, ns := range []string{"x", "y", "z"} {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %q, labels: {ns: %q}}\n", ns, ns)
		for pi, pod := range []string{"a", "b", "c"} {
			fmt.Fprintf(&b, `---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: %[2]q, namespace: %[1]q, labels: {pod: %[2]q}}
spec:
  node: node%[4]d
  orchestrator: k8s
  interfaceName: tabby%[1]s%[2]s
  serviceAccountName: sa-%[2]s
  ipNetworks: ["10.0.%[3]d.%[4]d/32"]
  profiles: [kns.%[1]s]
  ports:
  - {name: serve-80-tcp, protocol: TCP, port: 80}
  - {name: serve-81-tcp, protocol: TCP, port: 81}
  - {name: serve-80-udp, protocol: UDP, port: 80}
  - {name: serve-81-udp, protocol: UDP, port: 81}
`, ns, pod, ni+1, pi+1)
		}
	}
	b.WriteString(extra)
	rs, err := api.Decode([]byte(b.String()), "world")
	if err != nil {
		t.Fatal(err)
	}
	var in Input
	for _, r := range rs {
		if err := api.Validate(r); err != nil {
			t.Fatalf("%s: %v", r.GetObjectMeta().Name, err)
		}
		in.Add(r)
	}
	m, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addr of pod "x/a".
func podAddr(t testing.TB, pod string) netip.Addr {
	ns, name, _ := strings.Cut(pod, "/")
	return netip.AddrFrom4([4]byte{10, 0, ns[0] - 'x' + 1, name[0] - 'a' + 1})
}

// probe is one flow of an evalCase and the verdict it expects.
type probe struct {
	src, dst string // "x/a" or an address
	proto    uint8
	port     uint16
	want     bool
	reason   string // substring of the deciding side's reason
}

func tcp(src, dst string, port uint16, want bool) probe {
	return probe{src: src, dst: dst, proto: ProtoTCP, port: port, want: want}
}

func udp(src, dst string, port uint16, want bool) probe {
	return probe{src: src, dst: dst, proto: ProtoUDP, port: port, want: want}
}

func why(p probe, reason string) probe { p.reason = reason; return p }

// evalCase is resources added to the world and flows probed in it.
type evalCase struct {
	name   string
	yaml   string
	probes []probe
}

func TestEvaluate(t *testing.T) {
	tests := []evalCase{
		{"no policy allows", "", []probe{
			why(tcp("x/a", "y/b", 80, true), "no policy applies"),
			udp("z/c", "x/a", 81, true),
		}},
		{"k8s default deny ingress", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
`, []probe{
			why(tcp("y/a", "x/a", 80, false), "default deny"),
			tcp("x/b", "x/a", 80, false),
			tcp("x/a", "y/a", 80, true), // egress of x is not restricted
		}},
		{"k8s default deny egress", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress]}
`, []probe{
			tcp("x/a", "y/a", 80, false),
			tcp("y/a", "x/a", 80, true),
			tcp("x/a", "1.1.1.1", 53, false),
		}},
		{"k8s allow from namespace", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: 'y'}}}]}]
`, []probe{
			why(tcp("y/c", "x/a", 80, true), "ingress[0].from[0]"),
			tcp("z/c", "x/a", 80, false),
			tcp("x/b", "x/a", 80, false), // own namespace is not y
			tcp("z/c", "x/b", 80, true),  // x/b is not selected
		}},
		{"k8s pod selector is the policy's namespace", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
`, []probe{
			tcp("x/b", "x/a", 81, true),
			tcp("y/b", "x/a", 81, false),
			tcp("x/c", "x/a", 81, false),
		}},
		{"k8s pod and namespace selector in one peer: AND", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: ['y', z]}]}, podSelector: {matchLabels: {pod: b}}}]
`, []probe{
			tcp("y/b", "x/a", 80, true),
			tcp("z/b", "x/a", 80, true),
			tcp("y/c", "x/a", 80, false),
			tcp("x/b", "x/a", 80, false),
		}},
		{"k8s pod and namespace selector in two peers: OR", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: 'y'}}}, {podSelector: {matchLabels: {pod: b}}}]
`, []probe{
			tcp("y/c", "x/a", 80, true),
			tcp("x/b", "x/a", 80, true),
			tcp("z/b", "x/a", 80, false),
			tcp("x/c", "x/a", 80, false),
		}},
		{"k8s named port and protocol", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]
`, []probe{
			udp("y/a", "x/a", 81, true),
			udp("y/a", "x/a", 80, false),
			tcp("y/a", "x/a", 81, false),
		}},
		{"k8s port range", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 79, endPort: 80}]}]
`, []probe{
			tcp("y/a", "x/a", 80, true),
			tcp("y/a", "x/a", 81, false),
			udp("y/a", "x/a", 80, false), // protocol defaults to TCP
		}},
		{"k8s ipBlock with except", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.2/32]}}]}]
`, []probe{
			tcp("y/a", "x/a", 80, true),
			tcp("y/b", "x/a", 80, false),
			tcp("z/a", "x/a", 80, false),
		}},
		{"k8s egress to a CIDR", `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.3.0/24}}], ports: [{port: 80}]}]
`, []probe{
			tcp("x/a", "z/b", 80, true),
			tcp("x/a", "z/b", 81, false),
			tcp("x/a", "y/b", 80, false),
			tcp("x/b", "y/b", 80, true),
		}},
		{"calico order: lower first, Deny before Allow", `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  order: 200
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-y, namespace: x}
spec:
  order: 100
  ingress: [{action: Deny, source: {namespaceSelector: ns == 'y'}}]
`, []probe{
			why(tcp("y/a", "x/a", 80, false), "x/deny-y ingress[0] (Deny)"),
			why(tcp("z/a", "x/a", 80, true), "x/allow-all ingress[0] (Allow)"),
		}},
		{"calico unset order is last; ties by name", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-deny}
spec:
  ingress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b-allow}
spec:
  order: 5
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: c-allow}
spec:
  order: 5
  ingress: [{action: Allow, protocol: UDP}]
`, []probe{
			why(tcp("y/a", "x/a", 80, true), "b-allow"),
			why(udp("y/a", "x/a", 81, true), "c-allow"),
			why(tcp("y/a", "x/a", 81, false), "a-deny"),
		}},
		{"calico pass goes to the next tier, then profiles", `---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-y}
spec:
  tier: security
  ingress: [{action: Pass, source: {namespaceSelector: ns == 'y'}}, {action: Allow, source: {namespaceSelector: ns == 'z'}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-b, namespace: x}
spec:
  selector: pod == 'a'
  ingress: [{action: Allow, source: {selector: pod == 'b', namespaceSelector: all()}}]
`, []probe{
			tcp("y/b", "x/a", 80, true),  // passed, then only-b allows
			tcp("y/c", "x/a", 80, false), // passed, then only-b's tier denies
			tcp("z/c", "x/a", 80, true),  // security tier allows
			why(tcp("x/c", "x/a", 80, false), `tier security: no rule allowed it`),
			why(tcp("y/c", "x/b", 80, true), "every tier passed"),
		}},
		{"global policy with namespaceSelector; network set", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: ext, labels: {role: ext}}
spec: {nets: [192.168.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: zset, namespace: z, labels: {role: zset}}
spec: {nets: [10.0.3.3/32, 172.16.0.0/12]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gnp}
spec:
  namespaceSelector: ns in {'x', 'y'}
  ingress:
  - {action: Allow, source: {selector: role == 'ext', namespaceSelector: global()}}
  - {action: Allow, source: {selector: role == 'zset', namespaceSelector: ns == 'z'}}
`, []probe{
			tcp("192.168.3.4", "x/a", 80, true),
			tcp("192.168.3.4", "z/a", 80, true), // z is not selected: no policy
			tcp("10.0.3.3", "y/a", 80, true),    // z/c, in zset
			tcp("10.0.3.2", "y/a", 80, false),
			tcp("172.16.1.1", "y/a", 80, true),
			tcp("10.9.9.9", "y/a", 80, false),
		}},
		{"calico log goes on; notPorts, notSelector, notNets", `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: mixed, namespace: x}
spec:
  ingress:
  - {action: Log}
  - {action: Allow, protocol: TCP, source: {notSelector: pod == 'c', namespaceSelector: all()}, destination: {notPorts: [81]}}
  - {action: Allow, protocol: UDP, source: {notNets: [10.0.2.0/24]}}
`, []probe{
			tcp("y/a", "x/b", 80, true),
			tcp("y/c", "x/b", 80, false),
			tcp("y/a", "x/b", 81, false),
			udp("y/a", "x/b", 81, false),
			udp("z/a", "x/b", 81, true),
		}},
		{"profiles decide when no policy applies", `---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.y}
spec:
  ingress: [{action: Allow, source: {selector: pod == 'a'}}]
  labelsToApply: {team: blue}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: blue-egress}
spec:
  selector: team == 'blue'
  types: [Egress]
  egress: [{action: Allow, protocol: UDP}]
`, []probe{
			why(tcp("x/a", "y/b", 80, true), "Profile kns.y"),
			why(tcp("x/b", "y/b", 80, false), "no profile rule matched"),
			tcp("y/a", "x/a", 80, false), // y/a has team=blue from its profile: egress TCP denied
			udp("y/a", "x/a", 80, true),
		}},
	}
	tests = append(tests, tierTests...)
	tests = append(tests, matchTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := world(t, tc.yaml)
			for _, p := range tc.probes {
				addr := func(s string) netip.Addr {
					if strings.Contains(s, "/") {
						return podAddr(t, s)
					}
					return netip.MustParseAddr(s)
				}
				v := m.Evaluate(Packet{Src: addr(p.src), Dst: addr(p.dst), Protocol: p.proto, SrcPort: 40000, DstPort: p.port})
				var reasons []string
				for _, d := range []*Decision{v.Egress, v.Ingress} {
					if d != nil {
						reasons = append(reasons, d.String())
					}
				}
				got := strings.Join(reasons, "; ")
				if v.Allowed != p.want {
					t.Errorf("%s -> %s proto %d port %d: allowed %v, want %v (%s)", p.src, p.dst, p.proto, p.port, v.Allowed, p.want, got)
				}
				if p.reason != "" && !strings.Contains(got, p.reason) {
					t.Errorf("%s -> %s: reason %q does not mention %q", p.src, p.dst, got, p.reason)
				}
			}
		})
	}
}

func TestLabelSelectorString(t *testing.T) {
	for _, tc := range []struct {
		sel  api.LabelSelector
		want string
	}{
		{api.LabelSelector{}, "all()"},
		{api.LabelSelector{MatchLabels: map[string]string{"b": "2", "a": "1"}}, "a == '1' && b == '2'"},
		{api.LabelSelector{MatchExpressions: []api.LabelSelectorRequirement{
			{Key: "k", Operator: api.LabelSelectorOpNotIn, Values: []string{"x", "y"}},
			{Key: "e", Operator: api.LabelSelectorOpExists},
			{Key: "d", Operator: api.LabelSelectorOpDoesNotExist},
		}}, "k not in {'x', 'y'} && has(e) && !has(d)"},
	} {
		if got := LabelSelectorString(&tc.sel); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
