package felix

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/teststats"
	"github.com/tabby-net/tabby/policy"
)

// BenchmarkPolicySyncHostEndpoints measures what host endpoints add to felix's part of a
// policy change: two namespaces, one holding renderWorld's state and one hostWorld's
// (the same workloads and policies, with node1's host endpoints and a host policy of
// every stage, so that the filter, raw and mangle tables of both families hold host
// endpoint chains), each given the same 40 changes (a NetworkPolicy denying x/a's
// ingress created or deleted), interleaved so that the machine's load falls on both
// alike; then 20 full passes with nothing to write (Apply, as every refresh interval
// runs one). Printed: the p50 and p90 of compile and render, and of the sync
// (ApplyCached, as the agent runs it on a change), the restores the changes ran, the
// full passes' p50, and the ratios with host endpoints to without.
func BenchmarkPolicySyncHostEndpoints(b *testing.B) {
	requireTools(b, "iptables-nft-restore", "ipset")
	ctx := context.Background()
	const deny = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-a, namespace: x}\nspec: {podSelector: {matchLabels: {pod: a}}}\n"
	type side struct {
		name, world     string
		inputs          [2]policy.Input // without and with the change
		s               *PolicySyncer
		renders, syncs  []time.Duration
		full            []time.Duration // full passes with nothing to write
		last            *FilterState
		restores, count int
	}
	sides := []*side{{name: "without", world: renderWorld}, {name: "with host endpoints", world: hostWorld}}
	for _, sd := range sides {
		r := Runner{NetNS: newTestNS(b).name}
		sd.s = &PolicySyncer{run: r, backend: BackendNFT, log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1)}
		sd.inputs = [2]policy.Input{decodeInput(b, sd.world), decodeInput(b, sd.world+deny)}
		if err := sd.s.Apply(ctx, RenderPolicy(buildModel(b, sd.world), "node1", PolicyConfig{})); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		for i := range 40 {
			for j := range sides {
				sd := sides[(i+j)%2] // each goes first every other change
				start := time.Now()
				m, err := policy.Build(sd.inputs[1-i%2])
				if err != nil {
					b.Fatal(err)
				}
				fs := RenderPolicy(m, "node1", PolicyConfig{})
				sd.renders = append(sd.renders, time.Since(start))
				before := sd.s.Stats().RestoreRuns
				start = time.Now()
				if err := sd.s.ApplyCached(ctx, fs); err != nil {
					b.Fatal(err)
				}
				sd.syncs = append(sd.syncs, time.Since(start))
				sd.restores += sd.s.Stats().RestoreRuns - before
				sd.count++
				sd.last = fs
			}
		}
		for i := range 20 {
			for j := range sides {
				sd := sides[(i+j)%2]
				start := time.Now()
				if err := sd.s.Apply(ctx, sd.last); err != nil {
					b.Fatal(err)
				}
				sd.full = append(sd.full, time.Since(start))
			}
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, sd := range sides {
		b.Logf("%s: compile+render p50 %v p90 %v; sync p50 %v p90 %v; %d restores for %d changes; full pass p50 %v", sd.name,
			teststats.Quantile(sd.renders, 0.5), teststats.Quantile(sd.renders, 0.9),
			teststats.Quantile(sd.syncs, 0.5), teststats.Quantile(sd.syncs, 0.9), sd.restores, sd.count,
			teststats.Quantile(sd.full, 0.5))
	}
	base, hep := sides[0], sides[1]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(teststats.Quantile(base.syncs, 0.5)), "sync-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(hep.syncs, 0.5)), "hep-sync-p50-ms")
	b.ReportMetric(float64(teststats.Quantile(hep.syncs, 0.5))/float64(teststats.Quantile(base.syncs, 0.5)), "sync-p50-ratio")
	b.ReportMetric(float64(teststats.Quantile(hep.renders, 0.5))/float64(teststats.Quantile(base.renders, 0.5)), "render-p50-ratio")
	b.ReportMetric(ms(teststats.Quantile(base.full, 0.5)), "full-pass-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(hep.full, 0.5)), "hep-full-pass-p50-ms")
	b.ReportMetric(float64(teststats.Quantile(hep.full, 0.5))/float64(teststats.Quantile(base.full, 0.5)), "full-pass-p50-ratio")
}
