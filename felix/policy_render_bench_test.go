package felix

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy"
)

// BenchmarkBuildRender: policy.Build and RenderPolicy of benchPolicyWorld (1,000
// endpoints, 1,000 policies), decoded once, without the kernel: in the default tier
// alone (as before tiers), spread over ten Tier resources, and in the default tier with
// node1's host endpoints and a host policy of each stage (benchHostEndpoints).
func BenchmarkBuildRender(b *testing.B) {
	tiered := benchPolicyWorld(b, -1, -1)
	for i := range 10 {
		tiered += fmt.Sprintf("---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t%d}\nspec: {order: %d}\n", i, 100-i)
	}
	// Policy p<i> goes to tier t<i%10>.
	var tb strings.Builder
	for doc := range strings.SplitSeq(tiered, "---\n") {
		if name, ok := strings.CutPrefix(doc, "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p"); ok {
			var n int
			fmt.Sscanf(name, "%d", &n)
			doc = strings.Replace(doc, "spec:\n", fmt.Sprintf("spec:\n  tier: t%d\n", n%10), 1)
		}
		if doc != "" {
			tb.WriteString("---\n" + doc)
		}
	}
	for _, w := range []struct{ name, yaml string }{{"default-tier", benchPolicyWorld(b, -1, -1)}, {"ten-tiers", tb.String()},
		{"host-endpoints", benchPolicyWorld(b, -1, -1) + benchHostEndpoints}} {
		rs, err := api.Decode([]byte(w.yaml), w.name)
		if err != nil {
			b.Fatal(err)
		}
		var in policy.Input
		for _, r := range rs {
			in.Add(r)
		}
		b.Run(w.name, func(b *testing.B) {
			for b.Loop() {
				m, err := policy.Build(in)
				if err != nil {
					b.Fatal(err)
				}
				RenderPolicy(m, "node1", PolicyConfig{})
			}
		})
	}
}

// benchHostEndpoints are node1's host endpoints (two named interfaces, one found by
// address, and "*") and ten global host policies of each stage: normal, applyOnForward,
// doNotTrack and preDNAT.
var benchHostEndpoints = func() string {
	var b strings.Builder
	for _, spec := range []string{"interfaceName: eth0", "interfaceName: eth1", "expectedIPs: [192.168.9.1]", `interfaceName: "*"`} {
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: hep%d, labels: {host: node1}}\nspec: {node: node1, %s}\n", b.Len(), spec)
	}
	for i := range 10 {
		for _, stage := range []string{"", "applyOnForward: true", "doNotTrack: true\n  applyOnForward: true", "preDNAT: true\n  applyOnForward: true"} {
			fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: host%d-%d}\nspec:\n  selector: has(host)\n  %s\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [%d]}}]\n",
				i, b.Len(), stage, 8000+i)
		}
	}
	return b.String()
}()
