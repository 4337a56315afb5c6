package felix

import (
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/vmtest"
)

// vmNS is newTestNS for the VM, whose kernel lacks the xfrm and netfilter netlink families
// a default handle opens: its handle speaks rtnetlink only.
func vmNS(t *testing.T) *testNS {
	t.Helper()
	n := &testNS{name: "tby-test-" + randomHex(8)}
	n.path = "/run/netns/" + n.name
	run(t, "ip", "netns", "add", n.name)
	ns, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if n.h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.h.Close)
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// TestIPIPTunnelVM runs in a VM with Debian's kernel (this host has no ipip): two
// namespaces joined by a veth stand in for two nodes. In each, IPIPReconciler brings tunl0
// up with the node's IPIP tunnel address and MTU underlay - 20, and a Dataplane installs
// the BGP-learned route to the other node's block of an ipipMode Always pool, which
// DesiredEncap sends through tunl0 onlink. Then the tunnel addresses ping each other, a
// 1480-byte DF ping crosses and a 1481-byte one is refused, and a second reconciler pass
// writes nothing.
func TestIPIPTunnelVM(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.Run(t, vmtest.Options{Modules: []string{"ipip", "veth"}})
		return
	}
	a, b := vmNS(t), vmNS(t)
	run(t, "ip", "link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name)
	a.ip(t, "addr", "add", "192.168.50.1/24", "dev", "va")
	b.ip(t, "addr", "add", "192.168.50.2/24", "dev", "vb")
	a.ip(t, "link", "set", "va", "up")
	b.ip(t, "link", "set", "vb", "up")

	nodes := []EncapNode{
		{Name: "a", Addr: netip.MustParsePrefix("192.168.50.1/24"), IPIPAddr: netip.MustParseAddr("10.245.1.1")},
		{Name: "b", Addr: netip.MustParsePrefix("192.168.50.2/24"), IPIPAddr: netip.MustParseAddr("10.245.2.1")},
	}
	blocks := map[netip.Prefix]string{netip.MustParsePrefix("10.245.1.0/26"): "a", netip.MustParsePrefix("10.245.2.0/26"): "b"}
	pools := []EncapPool{{Name: "ipip", CIDR: netip.MustParsePrefix("10.245.0.0/16"), IPIPMode: api.EncapAlways}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	for i, ns := range []*testNS{a, b} {
		self, other := nodes[i], nodes[1-i]
		r := NewIPIPReconciler(ns.h, log)
		if n, err := r.Apply(self.IPIPAddr, 1500-IPIPOverhead); err != nil || n == 0 {
			t.Fatalf("%s: Apply: %d writes, %v", self.Name, n, err)
		}
		if n, err := r.Apply(self.IPIPAddr, 1500-IPIPOverhead); err != nil || n != 0 {
			t.Errorf("%s: second Apply: %d writes, %v; want none", self.Name, n, err)
		}
		if out := ns.ip(t, "addr", "show", "dev", IPIPDevice); !strings.Contains(out, "inet "+self.IPIPAddr.String()+"/32") || !strings.Contains(out, "mtu 1480") || !strings.Contains(out, "UP") {
			t.Errorf("%s: tunl0:\n%s", self.Name, out)
		}
		e := DesiredEncap(EncapInput{Node: self.Name, Nodes: nodes, Pools: pools, Blocks: blocks})
		otherBlock := netip.MustParsePrefix(strings.Replace("10.245.X.0/26", "X", map[string]string{"a": "1", "b": "2"}[other.Name], 1))
		d := startDataplane(t, ns, time.Minute)
		d.Update(LocalState{Learned: []Route{{Dst: otherBlock, Type: RouteGateway, Gateway: other.Addr.Addr()}}, Encap: &e})
		waitRoutes(t, ns, "route through tunl0", otherBlock.String()+" via "+other.Addr.Addr().String()+" dev tunl0 onlink")
	}
	ping := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", a.name, "ping", "-c", "1", "-W", "2", "-I", "10.245.1.1"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := ping("10.245.2.1"); err != nil {
		t.Fatalf("ping through tunl0: %v\n%s", err, out)
	}
	if out, err := ping("-M", "do", "-s", "1452", "10.245.2.1"); err != nil {
		t.Errorf("1480-byte DF ping through tunl0: %v\n%s", err, out)
	}
	if out, err := ping("-M", "do", "-s", "1453", "10.245.2.1"); err == nil {
		t.Errorf("1481-byte DF ping through tunl0 (mtu 1480) succeeded:\n%s", out)
	}
	// No IPIP pool any more: the address goes, the fallback device stays.
	if _, err := NewIPIPReconciler(a.h, log).Apply(netip.Addr{}, 0); err != nil {
		t.Fatal(err)
	}
	if out := a.ip(t, "addr", "show", "dev", IPIPDevice); strings.Contains(out, "inet ") {
		t.Errorf("tunl0 kept an address:\n%s", out)
	}
}
