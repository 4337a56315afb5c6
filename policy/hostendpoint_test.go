package policy

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// hosts are the world's two nodes as host endpoints: node1's eth0 (192.168.0.1) named,
// node2's every interface (192.168.0.2).
const hosts = `---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1, role: etcd}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.168.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node2-auto-hep, labels: {host: node2}}
spec: {node: node2, interfaceName: "*", expectedIPs: [192.168.0.2]}
`

func TestHostEndpoints(t *testing.T) {
	node1, node2, node3 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("192.168.0.3")
	outside := netip.MustParseAddr("203.0.113.9")
	type probe struct {
		src, dst netip.Addr
		port     uint16
		want     bool
		reason   string // substring of the host side's reason
	}
	xa := podAddr(t, "x/a") // on node1
	xb := podAddr(t, "x/b") // on node2
	tests := []struct {
		name   string
		yaml   string
		probes []probe
	}{
		{"no policy: host endpoints deny, workloads unaffected", "", []probe{
			{outside, node1, 80, false, "no policy applies; no profile rules: denied (a host endpoint's default)"},
			{node1, outside, 80, false, "denied (a host endpoint's default)"},
			{xb, node1, 80, false, "host endpoint's default"},
			{xa, node1, 80, true, ""}, // a workload to its own host: not host endpoint policy
			{outside, xa, 80, true, ""},
			{xa, xb, 80, true, ""},
		}},
		{"the built-in default-allow profile; a policy's end of tier still denies", `---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node3-auto-hep, labels: {host: node3}}
spec: {node: node3, interfaceName: "*", expectedIPs: [192.168.0.3], profiles: [projectcalico-default-allow]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ssh-only}
spec:
  selector: host == 'node1'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]
`, []probe{
			{outside, node3, 80, true, "Profile projectcalico-default-allow ingress[0] (Allow)"},
			{node3, outside, 80, true, "Profile projectcalico-default-allow egress[0] (Allow)"},
			{outside, node1, 80, false, "tier default: no rule allowed it"},
		}},
		{"allow etcd clients, deny the rest", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: etcd}
spec:
  selector: role == 'etcd'
  ingress: [{action: Allow, protocol: TCP, source: {selector: host == 'node2'}, destination: {ports: [2379]}}]
  egress: [{action: Allow}]
`, []probe{
			{node2, node1, 2379, false, "host endpoint's default"}, // node2's egress: no policy selects it
			{outside, node1, 2379, false, "tier default: no rule allowed it"},
			{node1, outside, 443, true, "GlobalNetworkPolicy etcd egress[0] (Allow)"},
		}},
		{"untracked allow skips normal policy; preDNAT deny", `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec:
  selector: has(host)
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
  egress: [{action: Allow, protocol: TCP, source: {ports: [8080]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat}
spec:
  selector: has(host)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {nets: [203.0.113.0/24]}, destination: {ports: [30080, 8080]}}, {action: Allow, protocol: TCP, destination: {ports: [30081]}}]
`, []probe{
			{outside, node1, 8080, true, "untracked tier default: GlobalNetworkPolicy untracked ingress[0] (Allow)"},
			{outside, node2, 30080, false, "preDNAT tier default: GlobalNetworkPolicy prednat ingress[0] (Deny)"},
			{outside, node2, 30081, true, "preDNAT tier default: GlobalNetworkPolicy prednat ingress[1] (Allow)"},
			{outside, node2, 30082, false, "host endpoint's default"},
			{outside, xa, 30080, true, ""}, // preDNAT and untracked policies never select workloads
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := world(t, hosts+tt.yaml)
			for _, p := range tt.probes {
				v := m.Evaluate(Packet{Src: p.src, Dst: p.dst, Protocol: ProtoTCP, SrcPort: 40000, DstPort: p.port})
				// The host side that decided: the one that denied, or either.
				d := v.HostIngress
				if d == nil || v.HostEgress != nil && !v.HostEgress.Allowed {
					d = v.HostEgress
				}
				if v.Allowed != p.want {
					t.Errorf("%s -> %s:%d: allowed %v, want %v (%+v)", p.src, p.dst, p.port, v.Allowed, p.want, d)
					continue
				}
				if p.reason == "" {
					if v.HostIngress != nil || v.HostEgress != nil {
						t.Errorf("%s -> %s:%d: host decision %v, want none", p.src, p.dst, p.port, d)
					}
					continue
				}
				if d == nil || !strings.Contains(d.Reason, p.reason) {
					t.Errorf("%s -> %s:%d: host decision %v, want a reason with %q", p.src, p.dst, p.port, d, p.reason)
				}
			}
		})
	}
}

// TestHostEndpointsByAddress resolves host endpoints without interfaceName as Calico
// does: each interface of the node holding one of their expectedIPs, the first by name
// when several (named or found by address) want one interface, and another node's
// endpoints taking nothing.
func TestHostEndpointsByAddress(t *testing.T) {
	m := world(t, `---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: a-node2-eth0}
spec: {node: node2, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: b-by-addr}
spec: {node: node1, expectedIPs: [192.168.0.1, "fd00::1", 10.1.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: c-eth1}
spec: {node: node1, interfaceName: eth1}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: d-by-addr}
spec: {node: node1, expectedIPs: [192.168.0.1, 172.16.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: e-eth0}
spec: {node: node1, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: f-all}
spec: {node: node1, interfaceName: "*"}
`)
	a := netip.MustParseAddr
	resolved := func(ifaces map[string][]netip.Addr) string {
		var out []string
		for _, h := range m.HostEndpointsOf("node1", ifaces) {
			out = append(out, h.Interface+"="+h.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tt := range []struct {
		name   string
		ifaces map[string][]netip.Addr
		want   string
	}{
		{"no interface holds the addresses: the named ones only", nil, "eth1=c-eth1,eth0=e-eth0,*=f-all"},
		{"one address on eth0: b before the named e (the first by name)",
			map[string][]netip.Addr{"eth0": {a("192.168.0.1")}, "eth1": {a("10.9.9.9")}},
			"eth0=b-by-addr,eth1=c-eth1,*=f-all"},
		{"b's addresses on eth1 (named by c, after b), eth2 (IPv6) and eth3: all three b's",
			map[string][]netip.Addr{"eth1": {a("10.1.0.1")}, "eth2": {a("fd00::1")}, "eth3": {a("10.1.0.1")}},
			"eth1=b-by-addr,eth2=b-by-addr,eth3=b-by-addr,eth0=e-eth0,*=f-all"},
		{"d takes the interface b does not hold",
			map[string][]netip.Addr{"ens5": {a("172.16.0.1")}},
			"eth1=c-eth1,ens5=d-by-addr,eth0=e-eth0,*=f-all"},
	} {
		if got := resolved(tt.ifaces); got != tt.want {
			t.Errorf("%s: HostEndpointsOf = %s, want %s", tt.name, got, tt.want)
		}
	}
	if !m.FindsInterfaceByAddr("node1") || m.FindsInterfaceByAddr("node2") {
		t.Errorf("FindsInterfaceByAddr node1 %v, node2 %v; want true, false", m.FindsInterfaceByAddr("node1"), m.FindsInterfaceByAddr("node2"))
	}
	// The model's own endpoints keep no interface: policy check finds them by address.
	if h := m.HostEndpointByAddr(a("fd00::1")); h == nil || h.Name != "b-by-addr" || h.Interface != "" {
		t.Errorf("HostEndpointByAddr(fd00::1) = %+v", h)
	}
}

func TestHostEndpointsOfAndSelectors(t *testing.T) {
	m := world(t, hosts+`---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all}
spec: {node: node1, interfaceName: "*", expectedIPs: [192.168.0.1, 10.9.0.1]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0-again}
spec: {node: node1, interfaceName: eth0}
`)
	var names []string
	for _, h := range m.HostEndpointsOf("node1", nil) {
		names = append(names, h.Name)
	}
	// One per interface (the first by name), the "*" one last.
	if got := strings.Join(names, ","); got != "node1-eth0,node1-all" {
		t.Errorf("HostEndpointsOf(node1) = %s", got)
	}
	if h := m.HostEndpointByAddr(netip.MustParseAddr("192.168.0.1")); h == nil || h.Name != "node1-eth0" {
		t.Errorf("HostEndpointByAddr(192.168.0.1) = %v, want the named one", h)
	}
	// A global rule selector matches host endpoints' expectedIPs; a namespaced one, or a
	// Kubernetes peer, does not.
	gnp := world(t, hosts+`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec: {selector: all(), ingress: [{action: Allow, source: {selector: role == 'etcd'}}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec: {selector: all(), ingress: [{action: Allow, source: {selector: role == 'etcd'}}]}
`)
	var members [][]netip.Prefix
	for _, p := range gnp.Policies {
		members = append(members, p.IngressRules[0].Src.Selector.Members(gnp))
	}
	if len(members) != 2 || len(members[0]) != 1 || members[0][0].String() != "192.168.0.1/32" || len(members[1]) != 0 {
		t.Errorf("members of role == 'etcd' in the global and the namespaced policy: %v", members)
	}
}

// TestEtcdProtectionExample evaluates the README's manifests that keep workloads off the
// etcd host: the nodes reach etcd, workloads (in any namespace, on any node) do not, and
// the rest of the etcd host and the workloads' other traffic are as before.
func TestEtcdProtectionExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "Keeping workloads off the datastore hosts")
	_, block, ok2 := strings.Cut(after, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no yaml block after \"Keeping workloads off the datastore hosts\"")
	}
	m := world(t, "---\n"+block)
	etcd, node, outside := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("203.0.113.9")
	for _, p := range []struct {
		src  netip.Addr
		port uint16
		want bool
	}{
		{node, 2379, true},
		{node, 2380, true},
		{outside, 2379, false},
		{podAddr(t, "x/a"), 2379, false},
		{podAddr(t, "y/b"), 2380, false},
		{podAddr(t, "z/c"), 443, true},
		{outside, 22, true},
	} {
		v := m.Evaluate(Packet{Src: p.src, Dst: etcd, Protocol: ProtoTCP, SrcPort: 40000, DstPort: p.port})
		if v.Allowed != p.want {
			t.Errorf("%s -> etcd:%d: allowed %v, want %v (egress %v, host ingress %v)", p.src, p.port, v.Allowed, p.want, v.Egress, v.HostIngress)
		}
	}
	// The workloads' other traffic is as before: the security tier passes it.
	if v := m.Evaluate(Packet{Src: podAddr(t, "x/a"), Dst: podAddr(t, "y/b"), Protocol: ProtoTCP, SrcPort: 40000, DstPort: 80}); !v.Allowed {
		t.Errorf("x/a -> y/b: %v", v.Egress)
	}
}
