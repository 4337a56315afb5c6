package ipam

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestPoolGuard(t *testing.T) {
	e := newEnv(t)
	pool := e.pool("default-ipv4", "10.244.0.0/24", 26)
	e.node("n1", nil)
	e.assign("n1", "a", 37, 0) // 37 addresses in 1 block
	ctx := testCtx(t)
	if _, err := e.c.AssignIP(ctx, AssignIPArgs{Addr: mustAddr("10.244.0.200"), Handle: "b", Node: "n2"}); err != nil {
		t.Fatal(err)
	}

	_, err := e.ds.Delete(ctx, poolKind, "", "default-ipv4", "")
	want := `delete ippools/default-ipv4: IPPool "default-ipv4" (10.244.0.0/24) still has 38 allocated addresses in 2 blocks: release them first (tabbyctl ipam show --show-blocks)`
	if err == nil || err.Error() != want {
		t.Errorf("delete of a pool in use:\n got %v\nwant %s", err, want)
	}
	for _, change := range []struct {
		cidr      string
		blockSize int
		refused   bool
	}{
		{"10.244.0.0/25", 26, true},  // shrinks away the block of 10.244.0.200
		{"10.244.0.0/24", 27, true},  // different blocks
		{"10.244.0.0/23", 26, false}, // grows: every block stays
		{"10.244.0.0/24", 26, false},
	} {
		p := *pool
		p.ResourceVersion = ""
		p.Spec.CIDR, p.Spec.BlockSize = change.cidr, change.blockSize
		_, err := e.ds.Apply(ctx, &p)
		if refused := err != nil; refused != change.refused || (refused && !strings.Contains(err.Error(), "would leave") && !strings.Contains(err.Error(), "release them first")) {
			t.Errorf("change to %s/%d: %v (want refused %t)", change.cidr, change.blockSize, err, change.refused)
		}
	}
	// Labels and other fields may change while in use.
	p := *pool
	p.ResourceVersion = ""
	p.Spec.NATOutgoing = true
	if _, err := e.ds.Apply(ctx, &p); err != nil {
		t.Errorf("changing natOutgoing of a pool in use: %v", err)
	}

	for _, h := range []string{"a", "b"} {
		if _, err := e.c.ReleaseByHandle(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ds.Delete(ctx, poolKind, "", "default-ipv4", ""); err != nil {
		t.Fatalf("delete of an unused pool: %v", err)
	}
	// Its empty blocks are left for GC; Check notes them but finds no problem.
	r := e.checkClean()
	if len(r.OrphanedBlocks) != 2 {
		t.Errorf("orphaned blocks %+v, want the 2 empty blocks", r.OrphanedBlocks)
	}
}

// An allocation racing the deletion of its pool: either the allocation fails or the
// deletion is refused, never both succeed (which would leave an address in a deleted
// pool). Repeated, so that some rounds interleave their reads and writes.
func TestPoolGuardRace(t *testing.T) {
	e := newEnv(t)
	e.node("n1", nil)
	other := envOn(t, e.e)
	ctx := testCtx(t)
	outcomes := map[string]int{}
	for i := range 60 {
		e.pool("p", "10.0.0.0/24", 28)
		h := fmt.Sprintf("h%d", i)
		var assignErr, deleteErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, assignErr = other.c.AutoAssign(ctx, AutoAssignArgs{Num4: 1, Handle: h, Node: "n1"}) })
		wg.Go(func() { _, deleteErr = e.ds.Delete(ctx, poolKind, "", "p", "") })
		wg.Wait()
		switch {
		case assignErr == nil && deleteErr == nil:
			t.Fatalf("round %d: the allocation and the pool's deletion both succeeded", i)
		case assignErr == nil:
			if !strings.Contains(deleteErr.Error(), "still has 1 allocated addresses") {
				t.Fatalf("round %d: delete: %v", i, deleteErr)
			}
			outcomes["allocation won"]++
			if _, err := e.c.ReleaseByHandle(ctx, h); err != nil {
				t.Fatal(err)
			}
		case deleteErr == nil:
			if !strings.Contains(assignErr.Error(), "no IPv4 IPPool exists") {
				t.Fatalf("round %d: auto-assign: %v", i, assignErr)
			}
			outcomes["deletion won"]++
		default:
			t.Fatalf("round %d: both failed: %v; %v", i, assignErr, deleteErr)
		}
	}
	t.Logf("outcomes: %v", outcomes)
}
