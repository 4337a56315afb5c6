package felix

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/tabby-net/tabby/internal/testenv"
	"github.com/tabby-net/tabby/internal/teststats"
	"github.com/tabby-net/tabby/proxy"
)

// recordingNFT is a real knftables.Interface that keeps the text of the last
// transaction it ran, so the benchmark can replay it through plain `nft -f`.
type recordingNFT struct {
	knftables.Interface
	last string
}

func (r *recordingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	r.last = tx.String()
	return r.Interface.Run(ctx, tx)
}

// benchLBState is n ClusterIP Services of one TCP port with 5 endpoints each; variant
// moves Service changed's last endpoint to another address.
func benchLBState(n, changed, variant int) *proxy.LBState {
	st := &proxy.LBState{Ports: make([]proxy.PortLB, n)}
	for i := range n {
		p := proxy.PortLB{Key: proxy.PortKey{Namespace: "bench", Name: fmt.Sprintf("svc%05d", i), Port: "http", Protocol: "TCP"},
			Protocol: "TCP", Port: 80, Frontends: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}}
		for j := range 5 {
			host := 8*i + j
			if i == changed && j == 4 {
				host += variant
			}
			p.Backends = append(p.Backends, proxy.Backend{Addr: netip.AddrFrom4([4]byte{10, 128 + byte(host>>16), byte(host >> 8), byte(host)}), Port: 8080})
		}
		st.Ports[i] = p
	}
	return st
}

// nftFile runs `nft -f -` with text in ns and returns how long it took.
func nftFile(b *testing.B, ns *testNS, text string) time.Duration {
	b.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = bytes.NewReader([]byte(text))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft -f: %v: %s", err, out)
	}
	return time.Since(start)
}

// BenchmarkProxyNFT prints, for 1k, 5k and 10k Services of 5 endpoints: the full sync of
// the whole table through ServiceProxy.Apply (render, list, plan, nft) from empty, and
// one-Service changes to applied through ApplyCached (p50, p99), each beside plain
// `nft -f` of the same transaction text in a twin namespace, and their ratios.
func BenchmarkProxyNFT(b *testing.B) {
	testenv.RequireTools(b, testenv.Tool{Cmd: "nft", Package: "nftables"})
	ctx := context.Background()
	const changes = 30
	for _, n := range []int{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ours, raw := newTestNS(b), newTestNS(b)
			sp, err := NewServiceProxy(ServiceProxyConfig{NetNS: ours.name})
			if err != nil {
				b.Fatal(err)
			}
			rec := &recordingNFT{Interface: sp.fams[0].nft}
			sp.fams[0].nft = rec
			var full, fullRaw, change, changeRaw []time.Duration
			for b.Loop() {
				if err := sp.Remove(ctx); err != nil {
					b.Fatal(err)
				}
				nftFile(b, raw, "add table ip tabby\ndelete table ip tabby\n")
				st := benchLBState(n, -1, 0)
				start := time.Now()
				if err := sp.Apply(ctx, st); err != nil {
					b.Fatal(err)
				}
				full = append(full, time.Since(start))
				fullRaw = append(fullRaw, nftFile(b, raw, rec.last))
				for k := range changes {
					st := benchLBState(n, k*7919%n, 1+k%2)
					start := time.Now()
					if err := sp.ApplyCached(ctx, st); err != nil {
						b.Fatal(err)
					}
					change = append(change, time.Since(start))
					changeRaw = append(changeRaw, nftFile(b, raw, rec.last))
				}
			}
			reportSyncFigures(b, "nft-f", full, fullRaw, change, changeRaw)
		})
	}
}

// recordingRunner is a Runner that keeps the input of the last restore it ran, so the
// benchmark can replay it through plain iptables-restore.
type recordingRunner struct {
	Runner
	last []byte
}

func (r *recordingRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if strings.HasSuffix(name, "-restore") {
		r.last = stdin
	}
	return r.Runner.Run(ctx, stdin, name, args...)
}

// restoreFile runs `iptables-restore --noflush` of backend with in, in ns, and returns
// how long it took.
func restoreFile(b *testing.B, ns *testNS, backend Backend, in []byte) time.Duration {
	b.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.name, backend.Restore, "--noflush", "-w", "5")
	cmd.Stdin = bytes.NewReader(in)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v: %s", backend.Restore, err, out)
	}
	return time.Since(start)
}

// BenchmarkProxyIPTables is BenchmarkProxyNFT for the iptables mode: for Services of 5
// endpoints, the full sync from empty tables (ServiceProxyIPTables.Apply: render, save,
// plan, restore) and 30 one-Service changes (ApplyCached: one endpoint moved), each
// beside plain iptables-restore --noflush of the same input in a twin namespace. The
// legacy backend runs 1k, 5k and 10k Services; nft only 1k, since iptables-nft takes
// minutes to load this shape at 5k and more (DESIGN.md).
func BenchmarkProxyIPTables(b *testing.B) {
	requireTools(b, "iptables-legacy-restore", "iptables-nft-restore")
	ctx := context.Background()
	const changes = 30
	for _, c := range []struct {
		backend Backend
		n       int
	}{{BackendNFT, 1000}, {BackendLegacy, 1000}, {BackendLegacy, 5000}, {BackendLegacy, 10000}} {
		b.Run(fmt.Sprintf("backend=%s/services=%d", c.backend.Name, c.n), func(b *testing.B) {
			ours, raw := newTestNS(b), newTestNS(b)
			rec := &recordingRunner{Runner: Runner{NetNS: ours.name}}
			sp := NewServiceProxyIPTables(ServiceProxyConfig{NetNS: ours.name}, c.backend, rec)
			rawSP := NewServiceProxyIPTables(ServiceProxyConfig{NetNS: raw.name}, c.backend, Runner{NetNS: raw.name})
			var full, fullRaw, change, changeRaw []time.Duration
			for b.Loop() {
				if err := sp.Remove(ctx); err != nil {
					b.Fatal(err)
				}
				if err := rawSP.Remove(ctx); err != nil {
					b.Fatal(err)
				}
				st := benchLBState(c.n, -1, 0)
				start := time.Now()
				if err := sp.Apply(ctx, st); err != nil {
					b.Fatal(err)
				}
				full = append(full, time.Since(start))
				fullRaw = append(fullRaw, restoreFile(b, raw, c.backend, rec.last))
				for k := range changes {
					st := benchLBState(c.n, k*7919%c.n, 1+k%2)
					start := time.Now()
					if err := sp.ApplyCached(ctx, st); err != nil {
						b.Fatal(err)
					}
					change = append(change, time.Since(start))
					changeRaw = append(changeRaw, restoreFile(b, raw, c.backend, rec.last))
				}
			}
			reportSyncFigures(b, "restore", full, fullRaw, change, changeRaw)
		})
	}
}

// reportSyncFigures reports a proxy benchmark's full syncs and one-Service changes (p50,
// p99 of the changes) beside the same writes made raw (raw names how: nft-f, restore), and their ratios.
func reportSyncFigures(b *testing.B, raw string, full, fullRaw, change, changeRaw []time.Duration) {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(teststats.Quantile(full, 0.5)), "full-ms")
	b.ReportMetric(ms(teststats.Quantile(fullRaw, 0.5)), "full-"+raw+"-ms")
	b.ReportMetric(float64(teststats.Quantile(full, 0.5))/float64(teststats.Quantile(fullRaw, 0.5)), "full-ratio")
	b.ReportMetric(ms(teststats.Quantile(change, 0.5)), "change-p50-ms")
	b.ReportMetric(ms(teststats.Quantile(change, 0.99)), "change-p99-ms")
	b.ReportMetric(ms(teststats.Quantile(changeRaw, 0.5)), "change-"+raw+"-p50-ms")
	b.ReportMetric(float64(teststats.Quantile(change, 0.5))/float64(teststats.Quantile(changeRaw, 0.5)), "change-ratio")
	b.ReportMetric(0, "ns/op")
}
