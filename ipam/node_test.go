package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestReleaseNode deletes a node with two workloads (one endpoint already gone, one
// still there), a tunnel address and a block borrowed from by another node: ReleaseNode
// is refused while the Node exists, then frees the tunnel address and the workload whose
// endpoint is gone at once, keeps the address of the endpoint that still exists, drops
// the node's affinities and leaves the other node's addresses alone; a second call after
// the last endpoint went frees it, and Check stays clean throughout.
func TestReleaseNode(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	e.node("n3", nil)
	tunnel := e.assign1("n3", TunnelIPIP.Handle("n3"))
	gone := e.workload("n3", "shop", "c1", true)
	kept := e.workload("n3", "shop", "c2", true)
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.MaxBlocksPerHost = 1 }); err != nil {
		t.Fatal(err)
	}
	e.assign("n1", "n1-own", 16, 0)
	borrowed := e.assign1("n1", "n1-borrowed") // from n3's block

	if _, err := e.c.ReleaseNode(testCtx(t), "n3"); !errors.Is(err, ErrNodeExists) {
		t.Fatalf("ReleaseNode of an existing node: %v, want ErrNodeExists", err)
	}
	e.deleteNode("n3")
	if _, err := e.ds.Delete(testCtx(t), wepKind, "shop", "pod-c1", ""); err != nil {
		t.Fatal(err)
	}
	rep, err := e.c.ReleaseNode(testCtx(t), "n3")
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for _, l := range rep.Released {
		got = append(got, l.Addr)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	want := []netip.Addr{tunnel.Addr, gone.Addr}
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
	if len(rep.Kept) != 1 || rep.Kept[0].Addr != kept.Addr {
		t.Errorf("kept %+v, want %s", rep.Kept, kept.Addr)
	}
	if len(rep.Affinities) != 1 || rep.Affinities[0] != tunnel.Block {
		t.Errorf("affinities released %v, want %s", rep.Affinities, tunnel.Block)
	}
	for _, a := range []Assignment{kept, borrowed} {
		if _, err := e.c.GetAllocation(testCtx(t), a.Addr); err != nil {
			t.Errorf("%s: %v", a.Addr, err)
		}
	}
	e.checkClean()

	if _, err := e.ds.Delete(testCtx(t), wepKind, "shop", "pod-c2", ""); err != nil {
		t.Fatal(err)
	}
	rep, err = e.c.ReleaseNode(testCtx(t), "n3")
	if err != nil || len(rep.Released) != 1 || rep.Released[0].Addr != kept.Addr || len(rep.Affinities) != 0 {
		t.Errorf("second release: %+v, %v; want %s released", rep, err, kept.Addr)
	}
	if rep, err := e.c.ReleaseNode(testCtx(t), "n3"); err != nil || !rep.Empty() {
		t.Errorf("third release: %+v, %v; want nothing", rep, err)
	}
	if _, err := e.c.ReleaseNode(testCtx(t), "a/b"); err == nil {
		t.Error("ReleaseNode of a name with '/' succeeded")
	}
	e.checkClean()
}
