package felix

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestRenderTiers: tiers are rendered in their order, not their names'; a tier whose
// defaultAction is Pass ends without a drop, so the next tier (here the profiles) decides.
func TestRenderTiers(t *testing.T) {
	m := buildModel(t, renderWorld+`---
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
metadata: {name: early}
spec: {tier: z-early, ingress: [{action: Deny, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: late}
spec: {tier: a-late, ingress: [{action: Pass, protocol: TCP}]}
`)
	fs := RenderPolicy(m, "node1", PolicyConfig{})
	want := []string{
		"-j MARK --set-xmark 0x0/0x30000",
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-pi-early",
		"-m mark --mark 0x10000/0x10000 -j RETURN",
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-pi-late",
		"-m mark --mark 0x10000/0x10000 -j RETURN",
		"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-a-late -j DROP",
		"-j MARK --set-xmark 0x0/0x20000",
		"-m mark --mark 0x0/0x20000 -j tby-pi-x_allow-b",
		"-m mark --mark 0x10000/0x10000 -j RETURN",
		"-m mark --mark 0x0/0x20000 -m comment --comment end-of-tier-default -j DROP",
		"-j MARK --set-xmark 0x10000/0x10000",
	}
	if got := stripped(fs.Chains["tby-tw-tabbyxa"]); !slices.Equal(got, want) {
		t.Errorf("tby-tw-tabbyxa:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// TestRenderServiceAndAccountMatches: a services match becomes a set of the Service's
// endpoints with their ports (destination) or their addresses (source); a serviceAccounts
// match restricts a selector's set to endpoints of those accounts.
func TestRenderServiceAndAccountMatches(t *testing.T) {
	m := buildModel(t, renderWorld+`---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: c, namespace: x, labels: {pod: c, projectcalico.org/serviceaccount: robot}}
spec: {node: node2, interfaceName: tabbyxc, ipNetworks: [10.0.1.3/32], serviceAccountName: ignored}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: d, namespace: x, labels: {pod: d}}
spec: {node: node2, interfaceName: tabbyxd, ipNetworks: [10.0.1.4/32], serviceAccountName: robot}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {selector: {pod: b}, ports: [{name: h, port: 80, targetPort: 8080}, {name: q, port: 53, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: m}
spec:
  selector: pod == 'a'
  ingress: [{action: Deny, source: {services: {name: web, namespace: x}}}, {action: Allow, source: {serviceAccounts: {names: [robot]}}}]
  egress: [{action: Allow, destination: {services: {name: web, namespace: x}}}]
`)
	fs := RenderPolicy(m, "node1", PolicyConfig{})
	ports := setName('v', "service-ports\x00x/web")
	addrs := setName('w', "service-addrs\x00x/web")
	robots := setName('s', "selector\x00all() endpoints serviceaccounts {robot}")
	for chain, want := range map[string][]string{
		"tby-pi-m": {
			"-m set --match-set " + addrs + " src -j DROP",
			"-m set --match-set " + robots + " src -j MARK --set-xmark 0x10000/0x10000",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
		},
		"tby-po-m": {
			"-m set --match-set " + ports + " dst,dst -j MARK --set-xmark 0x10000/0x10000",
			"-m mark --mark 0x10000/0x10000 -j RETURN",
		},
	} {
		if got := stripped(fs.Chains[chain]); !slices.Equal(got, want) {
			t.Errorf("%s:\n got  %s\n want %s", chain, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
		}
	}
	for name, want := range map[string]IPSet{
		ports:  {Name: ports, Type: "hash:ip,port", Members: []string{"10.0.1.2,tcp:8080", "10.0.1.2,udp:53"}},
		addrs:  {Name: addrs, Type: "hash:net", Members: []string{"10.0.1.2/32"}},
		robots: {Name: robots, Type: "hash:net", Members: []string{"10.0.1.3/32", "10.0.1.4/32"}},
	} {
		if got := fs.IPSets[name]; got == nil || fmt.Sprint(*got) != fmt.Sprint(want) {
			t.Errorf("ipset %s = %v, want %v", name, got, want)
		}
	}
}
