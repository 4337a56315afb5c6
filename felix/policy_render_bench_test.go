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
// alone (as before tiers), and spread over ten Tier resources.
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
	for _, w := range []struct{ name, yaml string }{{"default-tier", benchPolicyWorld(b, -1, -1)}, {"ten-tiers", tb.String()}} {
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
