package felix

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestDesiredWireGuardPeers(t *testing.T) {
	key := func() wgtypes.Key {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey()
	}
	kb, kc := key(), key()
	nodes := []WireGuardNode{
		{Name: "a", Addr: netip.MustParseAddr("192.168.0.1"), PublicKey: key().String()},
		{Name: "c", Addr: netip.MustParseAddr("192.168.0.3"), PublicKey: kc.String()},
		{Name: "b", Addr: netip.MustParseAddr("192.168.0.2"), PublicKey: kb.String()},
		{Name: "plain", Addr: netip.MustParseAddr("192.168.0.4")},                       // no WireGuard
		{Name: "nokey", Addr: netip.MustParseAddr("192.168.0.5"), PublicKey: "garbage"}, // named in problems
		{Name: "noaddr", PublicKey: key().String()},                                     // nowhere to send to
	}
	blocks := map[netip.Prefix]string{
		netip.MustParsePrefix("10.0.1.64/26"): "b", netip.MustParsePrefix("10.0.1.0/26"): "b",
		netip.MustParsePrefix("10.0.2.0/26"): "c", netip.MustParsePrefix("10.0.0.0/26"): "a",
		netip.MustParsePrefix("fd00::/122"): "b", netip.MustParsePrefix("10.0.4.0/26"): "plain",
	}
	peers, problems := DesiredWireGuardPeers("a", nodes, blocks, 51820)
	want := []WireGuardPeer{
		{Node: "b", PublicKey: kb, Endpoint: netip.MustParseAddrPort("192.168.0.2:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/26"), netip.MustParsePrefix("10.0.1.64/26")}},
		{Node: "c", PublicKey: kc, Endpoint: netip.MustParseAddrPort("192.168.0.3:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.2.0/26")}},
	}
	if !slices.EqualFunc(peers, want, func(x, y WireGuardPeer) bool {
		return x.Node == y.Node && x.PublicKey == y.PublicKey && x.Endpoint == y.Endpoint && slices.Equal(x.AllowedIPs, y.AllowedIPs)
	}) {
		t.Errorf("peers:\n got %+v\nwant %+v", peers, want)
	}
	if len(problems) != 1 || problems[0][:len("node nokey: wireguard public key")] != "node nokey: wireguard public key" {
		t.Errorf("problems %q, want one naming node nokey's key", problems)
	}
	routes := WireGuardRoutes(&WireGuardConfig{Peers: peers})
	if len(routes) != 3 || routes[0].String() != "10.0.1.0/26 dev wireguard.tabby" {
		t.Errorf("routes %v", routes)
	}
}

// TestWireGuardUnsupported: on a kernel without wireguard (this host's), Apply says so
// with ErrNoWireGuard and leaves nothing behind: no rule, no device.
func TestWireGuardUnsupported(t *testing.T) {
	ns := newTestNS(t)
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := NewWireGuardReconciler(ns.h, wgClientIn(ns.name), nil)
	defer r.Close()
	_, err = r.Apply(&WireGuardConfig{PrivateKey: k, ListenPort: WireGuardPort, MTU: 1440})
	if err == nil {
		if out := ns.ip(t, "link", "show", "type", "wireguard"); out != "" {
			t.Skip("this kernel has wireguard: TestWireGuardVM covers it")
		}
	}
	if !errors.Is(err, ErrNoWireGuard) {
		t.Fatalf("Apply on a kernel without wireguard: %v, want ErrNoWireGuard", err)
	}
	if out := ns.ip(t, "rule", "show"); strings.Contains(out, "51820") {
		t.Errorf("a rule was left:\n%s", out)
	}
}
