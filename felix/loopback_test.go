package felix

import (
	"net/netip"
	"strings"
	"testing"
)

// TestLoopbackNetns puts addresses on lo, keeps another program's, and removes only its
// own when they are no longer wanted.
func TestLoopbackNetns(t *testing.T) {
	ns := newTestNS(t)
	ns.ip(t, "link", "set", "lo", "up")
	ns.ip(t, "addr", "add", "10.99.0.1/32", "dev", "lo")
	r := NewLoopbackReconciler(ns.newHandle(t))
	dns := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("169.254.20.10")}
	if n, err := r.Apply(dns); err != nil || n != 2 {
		t.Fatalf("first Apply: %d writes, %v; want 2", n, err)
	}
	out := ns.ip(t, "-4", "addr", "show", "dev", "lo")
	for _, want := range []string{"10.96.0.10/32", "169.254.20.10/32", "lo:tby", "10.99.0.1/32"} {
		if !strings.Contains(out, want) {
			t.Errorf("lo lacks %s:\n%s", want, out)
		}
	}
	if n, err := r.Apply(dns); err != nil || n != 0 {
		t.Errorf("second Apply: %d writes, %v; want none", n, err)
	}
	if n, err := r.Apply(dns[:1]); err != nil || n != 1 {
		t.Errorf("Apply of one address: %d writes, %v; want 1 removal", n, err)
	}
	out = ns.ip(t, "-4", "addr", "show", "dev", "lo")
	if strings.Contains(out, "169.254.20.10") || !strings.Contains(out, "10.99.0.1/32") || !strings.Contains(out, "10.96.0.10/32") {
		t.Errorf("lo after removing one of ours:\n%s", out)
	}
	if _, err := r.Apply([]netip.Addr{netip.MustParseAddr("fd00::10")}); err == nil {
		t.Error("an IPv6 address was accepted")
	}
}
