package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestReleaseByHandle(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 29)
	e.pool("p6", "fd00::/120", 125)
	e.node("n1", nil)
	res := e.assign("n1", "h", 10, 3) // two IPv4 blocks, one IPv6 block
	e.assign("n1", "other", 1, 0)
	got, err := e.c.ReleaseByHandle(testCtx(t), "h")
	if err != nil {
		t.Fatal(err)
	}
	var want []netip.Addr
	for _, a := range append(res.IPv4, res.IPv6...) {
		want = append(want, a.Addr)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
	if again, err := e.c.ReleaseByHandle(testCtx(t), "h"); err != nil || len(again) != 0 {
		t.Errorf("second release: %v %v", again, err)
	}
	if u := e.usage(); u.Pools[0].InUse != 1 || u.Pools[1].InUse != 0 {
		t.Errorf("in use after release: %d, %d", u.Pools[0].InUse, u.Pools[1].InUse)
	}
	e.checkClean()
}

// A release that carries an allocation's sequence number fails once the address was
// released and allocated again, instead of freeing the new holder's address.
func TestStaleReleaseFails(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	first := e.assign1("n1", "old")
	alloc, err := e.c.GetAllocation(testCtx(t), first.Addr)
	if err != nil || alloc.SequenceNumber != first.SequenceNumber || alloc.Handle != "old" {
		t.Fatalf("GetAllocation: %+v %v", alloc, err)
	}
	if _, err := e.c.ReleaseIPs(testCtx(t), ReleaseOptions{Addr: first.Addr, SequenceNumber: &first.SequenceNumber}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.GetAllocation(testCtx(t), first.Addr); !errors.Is(err, ErrNotAllocated) {
		t.Errorf("released address: %v", err)
	}
	second, err := e.c.AssignIP(testCtx(t), AssignIPArgs{Addr: first.Addr, Handle: "new", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if second.SequenceNumber == first.SequenceNumber {
		t.Fatalf("re-allocation kept sequence number %d", first.SequenceNumber)
	}
	_, err = e.c.ReleaseIPs(testCtx(t), ReleaseOptions{Addr: first.Addr, SequenceNumber: &first.SequenceNumber})
	if !errors.Is(err, ErrStaleRelease) || !strings.Contains(err.Error(), "released and allocated again") {
		t.Errorf("stale release by sequence number: %v", err)
	}
	_, err = e.c.ReleaseIPs(testCtx(t), ReleaseOptions{Addr: first.Addr, Handle: "old"})
	if !errors.Is(err, ErrStaleRelease) || !strings.Contains(err.Error(), `held by handle "new", not "old"`) {
		t.Errorf("stale release by handle: %v", err)
	}
	if a, err := e.c.GetAllocation(testCtx(t), first.Addr); err != nil || a.Handle != "new" {
		t.Errorf("the new holder lost its address: %+v %v", a, err)
	}
	// Addresses nobody holds come back as not allocated, inside a block or not.
	free := netip.MustParseAddr("10.0.0.200")
	missing, err := e.c.ReleaseIPs(testCtx(t), ReleaseOptions{Addr: free}, ReleaseOptions{Addr: first.Addr, Handle: "new", SequenceNumber: &second.SequenceNumber})
	if err != nil || !slices.Equal(missing, []netip.Addr{free}) {
		t.Errorf("release: not allocated %v, %v", missing, err)
	}
	e.checkClean()
}

func TestAssignIP(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	a := netip.MustParseAddr("10.0.0.77")
	got, err := e.c.AssignIP(testCtx(t), AssignIPArgs{Addr: a, Handle: "h", Node: "n1", Attrs: map[string]string{"k": "v"}})
	if err != nil || got.Block != netip.MustParsePrefix("10.0.0.64/28") {
		t.Fatalf("AssignIP: %+v %v", got, err)
	}
	if _, err := e.c.AssignIP(testCtx(t), AssignIPArgs{Addr: a, Handle: "h2", Node: "n2"}); err == nil || !strings.Contains(err.Error(), `already allocated (handle "h")`) {
		t.Errorf("assigning a taken address: %v", err)
	}
	if _, err := e.c.AssignIP(testCtx(t), AssignIPArgs{Addr: netip.MustParseAddr("10.9.9.9"), Handle: "h", Node: "n1"}); err == nil || !strings.Contains(err.Error(), "not in any IPPool") {
		t.Errorf("assigning outside the pools: %v", err)
	}
	alloc, err := e.c.GetAllocation(testCtx(t), a)
	if err != nil || alloc.Attrs["k"] != "v" || alloc.Attrs[AttrNode] != "n1" || alloc.BlockNode != "n1" {
		t.Errorf("allocation %+v %v", alloc, err)
	}
	// AutoAssign then uses the rest of that block first.
	if next := e.assign1("n1", "h3"); next.Block != got.Block {
		t.Errorf("next auto-assign from %s, want %s", next.Block, got.Block)
	}
	e.checkClean()
}

// Dual stack is all or nothing: when IPv6 cannot be had, the IPv4 address is released.
func TestDualStackRollsBack(t *testing.T) {
	e := newEnv(t)
	e.pool("v4", "10.0.0.0/24", 26)
	e.pool("v6", "fd00::/122", 122)
	e.node("n1", nil)
	e.assign("n1", "fill", 0, 64)
	_, err := e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Num6: 1, Handle: "dual", Node: "n1"})
	if !errors.Is(err, ErrNoFreeAddresses) || !strings.Contains(err.Error(), `IPPool "v6" (fd00::/122)`) {
		t.Fatalf("dual stack on a full v6 pool: %v", err)
	}
	u := e.usage()
	if u.Pools[0].InUse != 0 {
		t.Errorf("the IPv4 address of a failed dual-stack request is still allocated (%d in use)", u.Pools[0].InUse)
	}
	if _, err := e.c.ReleaseByHandle(testCtx(t), "fill"); err != nil {
		t.Fatal(err)
	}
	res := e.assign("n1", "dual", 1, 1)
	if !res.IPv4[0].Addr.Is4() || !res.IPv6[0].Addr.Is6() {
		t.Errorf("dual stack: %+v", res)
	}
	e.checkClean()
}

func TestArgumentErrors(t *testing.T) {
	e := newEnv(t)
	for _, args := range []AutoAssignArgs{
		{Num4: 1, Node: "n"},
		{Num4: 1, Handle: "a/b", Node: "n"},
		{Num4: 1, Handle: "h"},
		{Handle: "h", Node: "n"},
		{Num4: -1, Num6: 2, Handle: "h", Node: "n"},
	} {
		if _, err := e.c.AutoAssign(testCtx(t), args); err == nil {
			t.Errorf("AutoAssign(%+v) succeeded", args)
		}
	}
	if _, err := e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "h", Node: "n"}); err == nil || !strings.Contains(err.Error(), "no IPv4 IPPool exists") {
		t.Errorf("without pools: %v", err)
	}
}
