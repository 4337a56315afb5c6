package ipam

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// WatchAllAffinities reports each node's blocks as it claims them.
func TestWatchAllAffinities(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.9.0.0/24", 28)
	e.node("n1", nil)
	e.node("n2", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	affinities := e.c.WatchAllAffinities(ctx)

	// next waits for n blocks of n1 and returns them, sorted.
	next := func(n int) []netip.Prefix {
		t.Helper()
		deadline := time.After(30 * time.Second)
		var got []netip.Prefix
		for {
			select {
			case all := <-affinities:
				got = got[:0]
				for b, node := range all {
					if node == "n1" {
						got = append(got, b)
					}
				}
				slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
				if len(got) == n {
					return got
				}
			case <-deadline:
				t.Fatalf("blocks = %v, want %d of them", got, n)
			}
		}
	}
	next(0)

	assign := func(node string, n int) []Assignment {
		t.Helper()
		r, err := e.c.AutoAssign(ctx, AutoAssignArgs{Num4: n, Handle: "h-" + node, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		return r.IPv4
	}
	first := assign("n1", 1)[0].Block
	if got := next(1); got[0] != first {
		t.Errorf("blocks = %v, want [%s]", got, first)
	}
	other := assign("n2", 1)[0].Block
	last := assign("n1", 16) // fills n1's block and claims another
	second := last[len(last)-1].Block
	got := next(2)
	want := []netip.Prefix{first, second}
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(got, want) || slices.Contains(got, other) {
		t.Errorf("blocks = %v, want %v (n2 has %s)", got, want, other)
	}
}
