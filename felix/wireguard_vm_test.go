package felix

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tabby-net/tabby/internal/vmtest"
)

// wgClientIn opens a wgctrl client in namespace name: its generic netlink socket belongs
// to the namespace of the thread that opens it.
func wgClientIn(name string) func() (*wgctrl.Client, error) {
	return func() (*wgctrl.Client, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return nil, err
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			return nil, err
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			return nil, err
		}
		defer netns.Set(orig)
		return wgctrl.New()
	}
}

// plainMarker is the payload pattern of the test's pings: the capture on the underlay must
// not hold it anywhere.
const plainMarker = "7461626279706c61696e" // "tabbyplain"

// TestWireGuardVM runs in a VM with Debian's kernel (this host has no wireguard): two
// namespaces joined by a veth stand in for two nodes, each with a workload namespace
// behind a veth. In each node WireGuardReconciler creates wireguard.tabby (MTU underlay
// - 60) with the other node as its peer, allowed the other's block, the block's route in
// table 51820 and the rule that looks it up; a second pass writes nothing. Workloads then
// ping each other (a payload with a known pattern), while tcpdump on node a's underlay
// captures every IP packet (node a also pings workload b, from the device's address): all are UDP to or from port 51820 and the pattern appears
// nowhere in the capture. A DF ping that fits the device's MTU crosses, one byte more is
// refused. Removed (nil config), the device, the rule and the table's routes go.
func TestWireGuardVM(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.Run(t, vmtest.Options{Modules: []string{"wireguard", "veth"}, Binaries: []string{"tcpdump", "sh"}})
		return
	}
	a, b := vmNS(t), vmNS(t)
	run(t, "ip", "link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name)
	a.ip(t, "addr", "add", "192.168.50.1/24", "dev", "va")
	b.ip(t, "addr", "add", "192.168.50.2/24", "dev", "vb")
	a.ip(t, "link", "set", "va", "up")
	b.ip(t, "link", "set", "vb", "up")

	nodes := []*testNS{a, b}
	workloads := []*testNS{vmNS(t), vmNS(t)}
	blocks := []netip.Prefix{netip.MustParsePrefix("10.245.1.0/26"), netip.MustParsePrefix("10.245.2.0/26")}
	addrs := []string{"10.245.1.2", "10.245.2.2"}
	keys := make([]wgtypes.Key, 2)
	for i := range nodes {
		var err error
		if keys[i], err = wgtypes.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
		// A workload as tabby-cni makes one: a /32, its default route through the host's
		// end of its veth.
		host := fmt.Sprintf("tabbywl%d", i)
		run(t, "ip", "link", "add", host, "netns", nodes[i].name, "type", "veth", "peer", "name", "eth0", "netns", workloads[i].name)
		nodes[i].ip(t, "link", "set", host, "up")
		nodes[i].ip(t, "addr", "add", "169.254.1.1/32", "dev", host)
		nodes[i].ip(t, "route", "add", addrs[i]+"/32", "dev", host)
		workloads[i].ip(t, "addr", "add", addrs[i]+"/32", "dev", "eth0")
		workloads[i].ip(t, "link", "set", "eth0", "up")
		workloads[i].ip(t, "route", "add", "169.254.1.1", "dev", "eth0")
		workloads[i].ip(t, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		nodes[i].setSysctl(t, "net/ipv4/ip_forward", "1")
	}
	underlay := []netip.Addr{netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("192.168.50.2")}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	reconcilers := make([]*WireGuardReconciler, 2)
	for i, ns := range nodes {
		o := 1 - i
		peers, problems := DesiredWireGuardPeers(fmt.Sprint(i), []WireGuardNode{
			{Name: fmt.Sprint(i), Addr: underlay[i], PublicKey: keys[i].PublicKey().String()},
			{Name: fmt.Sprint(o), Addr: underlay[o], PublicKey: keys[o].PublicKey().String()},
		}, map[netip.Prefix]string{blocks[0]: "0", blocks[1]: "1"}, WireGuardPort)
		if len(problems) > 0 || len(peers) != 1 {
			t.Fatalf("node %d: peers %v, problems %v", i, peers, problems)
		}
		devAddr := netip.MustParseAddr(fmt.Sprintf("10.245.%d.1", i+1)) // from its own block, as IPAM gives it
		cfg := &WireGuardConfig{Addr: devAddr, PrivateKey: keys[i], ListenPort: WireGuardPort, MTU: 1500 - WireGuardOverhead, Peers: peers}
		r := NewWireGuardReconciler(ns.h, wgClientIn(ns.name), log)
		t.Cleanup(func() { r.Close() })
		reconcilers[i] = r
		if n, err := r.Apply(cfg); err != nil || n == 0 {
			t.Fatalf("node %d: Apply: %d writes, %v", i, n, err)
		}
		if n, err := r.Apply(cfg); err != nil || n != 0 {
			t.Errorf("node %d: second Apply: %d writes, %v; want none", i, n, err)
		}
		if out := ns.ip(t, "addr", "show", "dev", WireGuardDevice); !strings.Contains(out, "mtu 1440") || !strings.Contains(out, "UP") ||
			!strings.Contains(out, "inet "+devAddr.String()+"/32") {
			t.Errorf("node %d: %s:\n%s", i, WireGuardDevice, out)
		}
		if out := ns.ip(t, "rule", "show"); !strings.Contains(out, "99:\tnot from all fwmark 0x100000/0x100000 lookup 51820") {
			t.Errorf("node %d: no WireGuard rule:\n%s", i, out)
		}
		if out := ns.ip(t, "route", "show", "table", "51820"); !strings.Contains(out, blocks[o].String()+" dev "+WireGuardDevice+" proto 116") {
			t.Errorf("node %d: table 51820:\n%s", i, out)
		}
	}

	pcap := filepath.Join(t.TempDir(), "underlay.pcap")
	capLog := filepath.Join(t.TempDir(), "tcpdump.log")
	logFile, err := os.Create(capLog)
	if err != nil {
		t.Fatal(err)
	}
	tcpdump := exec.Command("ip", "netns", "exec", a.name, "tcpdump", "-Z", "root", "-i", "va", "-nn", "-U", "-w", pcap, "ip")
	tcpdump.Stdout, tcpdump.Stderr = logFile, logFile
	if err := tcpdump.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			tcpdump.Process.Signal(os.Interrupt)
			tcpdump.Wait()
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if b, _ := os.ReadFile(capLog); bytes.Contains(b, []byte("listening on")) {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(capLog)
			t.Fatalf("tcpdump did not start: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ping := func(from int, args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", workloads[from].name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-p", plainMarker}, args...)...).CombinedOutput()
		return string(out), err
	}
	for i := range workloads {
		if out, err := ping(i, addrs[1-i]); err != nil {
			t.Fatalf("workload %d pings workload %d through WireGuard: %v\n%s", i, 1-i, err, out)
		}
	}
	// The node itself reaches the other's workload: its packets leave from the device's
	// address, which the peer allows.
	if out, err := exec.Command("ip", "netns", "exec", a.name, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-p", plainMarker, addrs[1]).CombinedOutput(); err != nil {
		t.Errorf("node a pings workload b through WireGuard: %v\n%s", err, out)
	}
	// 1440 through the device: 1412 bytes of ICMP payload.
	if out, err := ping(0, "-M", "do", "-s", "1412", addrs[1]); err != nil {
		t.Errorf("a 1440-byte DF ping through wireguard.tabby: %v\n%s", err, out)
	}
	if out, err := ping(0, "-M", "do", "-s", "1413", addrs[1]); err == nil {
		t.Errorf("a 1441-byte DF ping through wireguard.tabby (mtu 1440) crossed:\n%s", out)
	}
	stop()
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("tabbyplain")) {
		t.Error("the underlay capture holds the workloads' plaintext payload")
	}
	out, err := exec.Command("tcpdump", "-Z", "root", "-r", pcap, "-nn").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	var packets int
	for line := range strings.Lines(string(out)) {
		if !strings.Contains(line, " IP ") {
			continue
		}
		packets++
		if !strings.Contains(line, "UDP") || !strings.Contains(line, ".51820") {
			t.Errorf("a packet on the underlay that is not WireGuard: %s", line)
		}
	}
	if packets < 12 {
		t.Errorf("the underlay capture holds %d IP packets, want at least the 12 pings' and replies':\n%s", packets, out)
	}

	// Removed: the device, the rule and the table's routes go.
	if n, err := reconcilers[0].Apply(nil); err != nil || n == 0 {
		t.Fatalf("Apply(nil): %d writes, %v", n, err)
	}
	if out := a.ip(t, "link", "show"); strings.Contains(out, WireGuardDevice) {
		t.Errorf("%s left after removal:\n%s", WireGuardDevice, out)
	}
	if out := a.ip(t, "rule", "show"); strings.Contains(out, "51820") {
		t.Errorf("the rule left after removal:\n%s", out)
	}
	if out := a.ip(t, "route", "show", "table", "51820"); strings.TrimSpace(out) != "" {
		t.Errorf("table 51820 after removal:\n%s", out)
	}
	if n, err := reconcilers[0].Apply(nil); err != nil || n != 0 {
		t.Errorf("a second Apply(nil): %d writes, %v; want none", n, err)
	}
}
