package felix

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// benchPolicyWorld: 1,000 endpoints on node1 (as veths would be) and 1,000 policies,
// each selecting ten endpoints and allowing from another ten, on two ports.
func benchPolicyWorld(t testing.TB, changedPolicy, relabel int) string {
	var b strings.Builder
	for i := range 1000 {
		app := i % 100
		if i == relabel {
			app = (app + 1) % 100
		}
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w%d, namespace: ns, labels: {app: a%d}}\nspec: {node: node1, interfaceName: tabby%d, ipNetworks: [10.%d.%d.%d/32]}\n",
			i, app, i, 10+i/65536, i/256%256, i%256)
	}
	for i := range 1000 {
		port := 80
		if i == changedPolicy {
			port = 8080
		}
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p%d, namespace: ns}\nspec:\n  order: %d\n  selector: app == 'a%d'\n  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'a%d'}, destination: {ports: [%d, 443]}}]\n",
			i, i, i%100, (i+1)%100, port)
	}
	return b.String()
}

// BenchmarkPolicySync prints time to first programming of 1,000 policies on 1,000
// endpoints (a full pass, Apply), and the time and iptables-restore lines of one policy
// change and of one endpoint label change (updates, as Run makes them: ApplyCached).
func BenchmarkPolicySync(b *testing.B) {
	requireTools(b, "iptables-nft-restore", "ipset")
	ns := newTestNS(b)
	ctx := context.Background()
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		b.Run(backend.Name, func(b *testing.B) {
			r := Runner{NetNS: ns.name}
			s := &PolicySyncer{run: r, backend: backend, log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1)}
			defer RemoveAll(ctx, r)
			step := func(what string, apply func(context.Context, *FilterState) error, changed, relabel int) {
				start := time.Now()
				fs := RenderPolicy(buildModel(b, benchPolicyWorld(b, changed, relabel)), "node1", PolicyConfig{})
				render := time.Since(start)
				start = time.Now()
				if err := apply(ctx, fs); err != nil {
					b.Fatal(err)
				}
				st := s.Stats()
				b.Logf("%s %s: build+render %v, sync %v, %d chains written, %d restore lines, %d sets updated (of %d chains, %d sets)",
					backend.Name, what, render.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
					len(st.LastWritten), st.RestoreLines, len(st.LastSetsUpdated), len(fs.Chains), len(fs.IPSets))
			}
			for range b.N {
				step("first programming", s.Apply, -1, -1)
				step("one policy changed", s.ApplyCached, 7, -1)
				step("one endpoint relabelled", s.ApplyCached, 7, 5)
				RemoveAll(ctx, r)
			}
		})
	}
}
