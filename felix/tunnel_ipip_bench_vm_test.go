package felix

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/vmtest"
)

// TestIPIPThroughputVM is a benchmark (figures printed, not asserted), run only with
// TABBY_VM_BENCH=1 (make bench sets it): inside one VM with Debian's kernel, two
// namespaces joined by a veth; iperf3, one TCP stream for 3 s, first natively between the
// veth addresses, then between the IPIP tunnel addresses through tunl0 (as
// IPIPReconciler sets it up, MTU 1480), and the ratio. Both run in the same VM under the
// same software emulation, so only the ratio means anything.
func TestIPIPThroughputVM(t *testing.T) {
	if !vmtest.InVM() {
		if os.Getenv("TABBY_VM_BENCH") != "1" {
			t.Skip("a benchmark: set TABBY_VM_BENCH=1 (make bench does)")
		}
		vmtest.Run(t, vmtest.Options{Modules: []string{"ipip", "veth"}, Binaries: []string{"iperf3"}, Timeout: 180 * time.Second})
		return
	}
	a, b := vmNS(t), vmNS(t)
	run(t, "ip", "link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name)
	a.ip(t, "addr", "add", "192.168.50.1/24", "dev", "va")
	b.ip(t, "addr", "add", "192.168.50.2/24", "dev", "vb")
	a.ip(t, "link", "set", "va", "up")
	b.ip(t, "link", "set", "vb", "up")
	for i, ns := range []*testNS{a, b} {
		self := netip.MustParseAddr(fmt.Sprintf("10.245.%d.1", i+1))
		if _, err := NewIPIPReconciler(ns.h, nil).Apply(self, 1500-IPIPOverhead); err != nil {
			t.Fatal(err)
		}
		ns.ip(t, "route", "add", fmt.Sprintf("10.245.%d.0/26", 2-i), "via", fmt.Sprintf("192.168.50.%d", 2-i), "dev", IPIPDevice, "onlink")
	}
	server := exec.Command("ip", "netns", "exec", b.name, "iperf3", "-s")
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })

	// iperf3 runs a client from a to dst (bound to src) and returns its Gbit/s; it retries
	// while the server is not listening yet.
	iperf3 := func(src, dst string) float64 {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := exec.Command("ip", "netns", "exec", a.name, "iperf3", "-c", dst, "-B", src, "-t", "3", "-J").Output()
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
				Error string `json:"error"`
			}
			_ = json.Unmarshal(out, &r)
			if err == nil && r.Error == "" && r.End.SumReceived.BitsPerSecond > 0 {
				return r.End.SumReceived.BitsPerSecond / 1e9
			}
			if !strings.Contains(r.Error, "refused") || time.Now().After(deadline) {
				t.Fatalf("iperf3 %s -> %s: %v: %s", src, dst, err, out)
			}
			time.Sleep(50 * time.Millisecond) // the server is starting: poll again
		}
	}
	native := iperf3("192.168.50.1", "192.168.50.2")
	ipip := iperf3("10.245.1.1", "10.245.2.1")
	t.Logf("iperf3 in the VM (software emulation, one stream, 3 s): native veth %.2f Gbit/s, IPIP through tunl0 %.2f Gbit/s (%.2fx native)", native, ipip, ipip/native)
}
