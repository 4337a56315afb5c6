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

// BenchmarkEncapThroughputIPv6 is BenchmarkEncapThroughput in a lab up with --ipv6: node to
// node over IPv6 (the baseline), workload to workload over IPv6 routed natively, through
// VXLAN over IPv6 (the IPv6 pool at Always) and, in the same run, over IPv4 through VXLAN
// over IPv4 (the IPv4 pool at Always), each as a ratio to the baseline. Printed, never
// asserted.
func BenchmarkEncapThroughputIPv6(b *testing.B) {
	testenv.RequireTools(b, testenv.Tool{Cmd: "iperf3", Package: "iperf3"})
	l := labtest.New(b)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--ipv6", "--agent-binary", labtest.AgentScript(b, labtest.FastBGP...))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	w2v4, w2v6 := l.WorkloadIPs("default", "w2")
	node2 := l.State().Nodes[1].Address6.Addr()
	for _, target := range []string{"node2", "default/w2"} {
		l.OK("exec", target, "--", "iperf3", "-s", "-D", "-p", "5201")
	}
	iperf := func(to netip.Addr) float64 {
		from := "default/w1"
		if to == node2 {
			from = "node1"
		}
		return iperf3Gbps(b, l, from, to.String())
	}
	route := func(family string, to netip.Addr, want string) func() string {
		return func() string {
			block := labtest.BlockOf(to)
			if to.Is6() {
				block = labtest.BlockOf6(to)
			}
			out, _, _ := l.Run("", "exec", "node1", "--", "ip", family, "route", "show", "proto", "116", block)
			if !strings.Contains(out, want) {
				return fmt.Sprintf("route to %s's block %q, want %q", to, strings.TrimSpace(out), want)
			}
			return ""
		}
	}
	for range b.N {
		l.Apply(vxlanPool6("Never"))
		l.Apply(labtest.VXLANPool("Never", "false"))
		base := iperf(node2)
		labtest.Poll(b, "native IPv6 route", 30*time.Second, route("-6", w2v6, "via "+node2.String()+" dev eth0"))
		native := iperf(w2v6)
		l.Apply(vxlanPool6("Always"))
		labtest.Poll(b, "VXLAN over IPv6 route", 30*time.Second, route("-6", w2v6, "dev vxlan-v6.tabby"))
		vxlan6 := iperf(w2v6)
		l.Apply(vxlanPool6("Never"))
		l.Apply(labtest.VXLANPool("Always", "false"))
		labtest.Poll(b, "VXLAN over IPv4 route", 30*time.Second, route("-4", w2v4, "dev vxlan.tabby"))
		vxlan4 := iperf(w2v4)
		b.Logf("iperf3 one stream, 3 s: node to node over IPv6 %.1f Gbit/s; workload to workload over IPv6 native %.1f (%.2fx), VXLAN over IPv6 %.1f (%.2fx); over IPv4, VXLAN over IPv4 %.1f (%.2fx)",
			base, native, native/base, vxlan6, vxlan6/base, vxlan4, vxlan4/base)
		b.ReportMetric(native/base, "native6/host6")
		b.ReportMetric(vxlan6/base, "vxlan6/host6")
		b.ReportMetric(vxlan4/base, "vxlan4/host6")
	}
}
