package felix

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// newLoopback is a reconciler in ns, as a restarted agent would open one.
func newLoopback(t *testing.T, ns *testNS) *LoopbackReconciler {
	t.Helper()
	h, err := netns.GetFromPath(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, err := NewLoopbackReconciler(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestLoopbackNetns puts addresses of both families on lo, keeps another program's, and
// removes only its own when they are no longer wanted, also after a restart (a new
// reconciler): IPv4 ones known by their label, IPv6 ones by their address protocol.
func TestLoopbackNetns(t *testing.T) {
	ns := newTestNS(t)
	ns.ip(t, "link", "set", "lo", "up")
	ns.ip(t, "addr", "add", "10.99.0.1/32", "dev", "lo")
	ns.ip(t, "-6", "addr", "add", "fd00:99::1/128", "dev", "lo", "nodad")
	r := newLoopback(t, ns)
	dns := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("169.254.20.10"),
		netip.MustParseAddr("fd00:96::a"), netip.MustParseAddr("fd00:53::10")}
	if n, err := r.Apply(dns); err != nil || n != 4 {
		t.Fatalf("first Apply: %d writes, %v; want 4", n, err)
	}
	out := ns.ip(t, "addr", "show", "dev", "lo")
	for _, want := range []string{"10.96.0.10/32", "169.254.20.10/32", "lo:tby", "10.99.0.1/32", "fd00:96::a/128", "fd00:53::10/128", "fd00:99::1/128"} {
		if !strings.Contains(out, want) {
			t.Errorf("lo lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tentative") {
		t.Errorf("an address is tentative (no nodad):\n%s", out)
	}
	if n, err := r.Apply(dns); err != nil || n != 0 {
		t.Errorf("second Apply: %d writes, %v; want none", n, err)
	}
	if n, err := r.Apply(dns[:3]); err != nil || n != 1 {
		t.Errorf("Apply without fd00:53::10: %d writes, %v; want 1 removal", n, err)
	}
	// A restarted agent that no longer serves fd00:96::a nor 169.254.20.10.
	r = newLoopback(t, ns)
	if n, err := r.Apply(dns[:1]); err != nil || n != 2 {
		t.Errorf("Apply of one address after a restart: %d writes, %v; want 2 removals", n, err)
	}
	out = ns.ip(t, "addr", "show", "dev", "lo")
	for _, gone := range []string{"169.254.20.10", "fd00:96::a", "fd00:53::10"} {
		if strings.Contains(out, gone) {
			t.Errorf("lo still holds %s:\n%s", gone, out)
		}
	}
	for _, kept := range []string{"10.96.0.10/32", "10.99.0.1/32", "fd00:99::1/128", "::1/128"} {
		if !strings.Contains(out, kept) {
			t.Errorf("lo lost %s:\n%s", kept, out)
		}
	}
	if n, err := r.Apply(nil); err != nil || n != 1 {
		t.Errorf("Apply(nil): %d writes, %v; want 1 removal", n, err)
	}
	out = ns.ip(t, "addr", "show", "dev", "lo")
	if strings.Contains(out, "10.96.0.10") || !strings.Contains(out, "10.99.0.1/32") || !strings.Contains(out, "fd00:99::1/128") {
		t.Errorf("lo after Apply(nil):\n%s", out)
	}
}

// TestLoopbackOurs tells tabby's addresses on lo from others': IPv4 by the label alone
// (older agents' addresses have no protocol), IPv6 by the address protocol.
func TestLoopbackOurs(t *testing.T) {
	for _, tc := range []struct {
		a    loAddr
		want bool
	}{
		{loAddr{prefix: netip.MustParsePrefix("10.96.0.10/32"), label: LoopbackLabel, proto: LoopbackProto}, true},
		{loAddr{prefix: netip.MustParsePrefix("10.96.0.10/32"), label: LoopbackLabel}, true},
		{loAddr{prefix: netip.MustParsePrefix("10.96.0.10/32"), label: "lo", proto: LoopbackProto}, false},
		{loAddr{prefix: netip.MustParsePrefix("fd00:96::a/128"), proto: LoopbackProto}, true},
		{loAddr{prefix: netip.MustParsePrefix("fd00:96::a/128")}, false},
		{loAddr{prefix: netip.MustParsePrefix("::1/128"), proto: 1}, false}, // IFAPROT_KERNEL_LO
	} {
		if got := tc.a.ours(); got != tc.want {
			t.Errorf("%+v: ours = %v, want %v", tc.a, got, tc.want)
		}
	}
}
