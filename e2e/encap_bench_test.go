package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// BenchmarkEncapThroughput prints one-stream TCP throughput (iperf3, 3 s) between two lab
// nodes on one subnet: node to node (the baseline), workload to workload routed natively
// (vxlanMode Never, routes from BGP) and through VXLAN (Always), as ratios to the baseline.
// Printed, never asserted. IPIP needs a kernel with ipip: see felix's TestIPIPTunnelVM.
func BenchmarkEncapThroughput(b *testing.B) {
	testenv.RequireTools(b, testenv.Tool{Cmd: "iperf3", Package: "iperf3"})
	l := labtest.New(b)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(b, labtest.FastBGP...))
	l.Apply(labtest.VXLANPool("Never", "false"))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	w2 := l.WorkloadIP("default", "w2")
	node2 := netip.MustParseAddr("172.31.1.11")
	for _, target := range []string{"node2", "default/w2"} {
		l.OK("exec", target, "--", "iperf3", "-s", "-D", "-p", "5201")
	}
	iperf := func(from string, to netip.Addr) float64 { return iperf3Gbps(b, l, from, to.String()) }
	route := func(want string) func() string {
		return func() string {
			out, _, _ := l.Run("", "exec", "node1", "--", "ip", "route", "show", "proto", "116", labtest.BlockOf(w2))
			if !strings.Contains(out, want) {
				return fmt.Sprintf("route to w2's block %q, want %q", strings.TrimSpace(out), want)
			}
			return ""
		}
	}
	for range b.N {
		base := iperf("node1", node2)
		labtest.Poll(b, "native route", 30*time.Second, route("via 172.31.1.11 dev eth0"))
		native := iperf("default/w1", w2)
		l.Apply(labtest.VXLANPool("Always", "false"))
		labtest.Poll(b, "VXLAN route", 30*time.Second, route("dev vxlan.tabby onlink"))
		vxlan := iperf("default/w1", w2)
		l.Apply(labtest.VXLANPool("Never", "false"))
		b.Logf("iperf3 one stream, 3 s: node to node %.1f Gbit/s; workload to workload native %.1f (%.2fx), VXLAN %.1f (%.2fx)",
			base, native, native/base, vxlan, vxlan/base)
		b.ReportMetric(native/base, "native/host")
		b.ReportMetric(vxlan/base, "vxlan/host")
	}
}
