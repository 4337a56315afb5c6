package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

// TestTunnelAddrsVXLANV6 allocates vxlan-v6.tabby's address from an IPv6 pool, beside an
// IPv4 VXLAN address from an IPv4 pool, each under its own handle and Calico's type
// attribute; Ensure keeps what the Node records, Release frees only its own handle, and a
// deleted node's IPv6 tunnel address goes with ReleaseNode.
func TestTunnelAddrsVXLANV6(t *testing.T) {
	e := newEnv(t)
	e.pool("v4", "10.0.0.0/24", 28)
	e.pool("v6", "fd00:10::/120", 124)
	e.node("n1", nil)
	ctx := testCtx(t)
	ta := e.c.TunnelAddrs("n1", nil)

	a6, err := ta.Ensure(ctx, TunnelVXLANV6, netip.Addr{}, []string{"v6"})
	if err != nil {
		t.Fatal(err)
	}
	a4, err := ta.Ensure(ctx, TunnelVXLAN, netip.Addr{}, []string{"v4"})
	if err != nil {
		t.Fatal(err)
	}
	if !a6.Is6() || !a4.Is4() {
		t.Fatalf("addresses %s (v6) and %s (v4): wrong families", a6, a4)
	}
	al, err := e.c.GetAllocation(ctx, a6)
	if err != nil {
		t.Fatal(err)
	}
	if al.Handle != "vxlan-v6-tunnel-addr-n1" || al.Attrs["type"] != "vxlanV6TunnelAddress" || al.Attrs[AttrNode] != "n1" {
		t.Errorf("allocation %+v: want handle vxlan-v6-tunnel-addr-n1, type vxlanV6TunnelAddress, node n1", al)
	}
	if again, err := ta.Ensure(ctx, TunnelVXLANV6, a6, []string{"v6"}); err != nil || again != a6 {
		t.Errorf("Ensure with the recorded address = %s, %v; want %s", again, err, a6)
	}

	ta.Release(ctx, TunnelVXLANV6)
	if _, err := e.c.GetAllocation(ctx, a6); !errors.Is(err, ErrNotAllocated) {
		t.Errorf("IPv6 tunnel address after Release: %v, want not allocated", err)
	}
	if _, err := e.c.GetAllocation(ctx, a4); err != nil {
		t.Errorf("IPv4 tunnel address after releasing the IPv6 one: %v", err)
	}

	a6, err = ta.Ensure(ctx, TunnelVXLANV6, netip.Addr{}, []string{"v6"})
	if err != nil {
		t.Fatal(err)
	}
	e.deleteNode("n1")
	rep, err := e.c.ReleaseNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Released) != 2 {
		t.Errorf("ReleaseNode released %+v, want the IPv4 and IPv6 tunnel addresses", rep.Released)
	}
	if _, err := e.c.GetAllocation(ctx, a6); !errors.Is(err, ErrNotAllocated) {
		t.Errorf("IPv6 tunnel address after ReleaseNode: %v, want not allocated", err)
	}
	e.checkClean()
}
