package ipam

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// clock is a test clock the garbage collector and Check read.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{time.Now()} }

func (e *env) workload(node, ns, containerID string, withEndpoint bool) Assignment {
	e.t.Helper()
	res, err := e.c.AutoAssign(testCtx(e.t), AutoAssignArgs{Num4: 1, Handle: WorkloadHandle("tabby-net", containerID), Node: node,
		Attrs: map[string]string{AttrNamespace: ns, AttrContainerID: containerID, AttrWorkload: "pod-" + containerID}})
	if err != nil {
		e.t.Fatal(err)
	}
	if withEndpoint {
		e.wep(ns, "pod-"+containerID, node, containerID, res.IPv4[0].Addr)
	}
	return res.IPv4[0]
}

func (e *env) gcPass(g *GarbageCollector) GCReport {
	e.t.Helper()
	rep, err := g.GarbageCollect(testCtx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func releasedAddrs(rep GCReport) []netip.Addr {
	var out []netip.Addr
	for _, l := range rep.Released {
		out = append(out, l.Addr)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestGCReleasesLeakedWorkloads(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 26)
	e.node("n1", nil)
	live := e.workload("n1", "shop", "c1", true)
	leaked := e.workload("n1", "shop", "c2", false)
	reused := e.workload("n1", "shop", "c3", false)

	r, err := e.c.Check(testCtx(t), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Leaked) != 2 || r.Problems() != 2 || !strings.Contains(r.String(), `leaked `+leaked.Addr.String()+` (handle "tabby-net.c2"): no workload endpoint in namespace "shop" has container ID "c2"`) {
		t.Errorf("check before GC:\n%s", r)
	}

	clk := newClock()
	g := e.c.NewGarbageCollector(GCOptions{GracePeriod: time.Minute, Now: clk.now})
	if rep := e.gcPass(g); len(rep.Released) != 0 || rep.Waiting != 2 {
		t.Errorf("first pass: %+v", rep)
	}
	// c3's address is released and allocated again (same handle, new sequence number):
	// a new candidate, whose grace period starts over.
	if _, err := e.c.ReleaseByHandle(testCtx(t), WorkloadHandle("tabby-net", "c3")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.AssignIP(testCtx(t), AssignIPArgs{Addr: reused.Addr, Handle: WorkloadHandle("tabby-net", "c3"), Node: "n1",
		Attrs: map[string]string{AttrNamespace: "shop", AttrContainerID: "c3"}}); err != nil {
		t.Fatal(err)
	}
	clk.advance(59 * time.Second)
	if rep := e.gcPass(g); len(rep.Released) != 0 {
		t.Errorf("pass within the grace period released %v", rep.Released)
	}
	clk.advance(time.Second)
	rep := e.gcPass(g)
	if got := releasedAddrs(rep); !slices.Equal(got, []netip.Addr{leaked.Addr}) || rep.Waiting != 1 {
		t.Errorf("after the grace period released %v (waiting %d), want only %s", got, rep.Waiting, leaked.Addr)
	}
	if _, err := e.c.GetAllocation(testCtx(t), live.Addr); err != nil {
		t.Errorf("a live workload's address: %v", err)
	}
	clk.advance(time.Minute)
	if got := releasedAddrs(e.gcPass(g)); !slices.Equal(got, []netip.Addr{reused.Addr}) {
		t.Errorf("re-allocated leak released %v after its own grace period", got)
	}
	e.checkClean()

	// A new collector (a new leader) starts its clocks over.
	e.workload("n1", "shop", "c4", false)
	g2 := e.c.NewGarbageCollector(GCOptions{GracePeriod: time.Minute, Now: clk.now})
	if rep := e.gcPass(g2); len(rep.Released) != 0 || rep.Waiting != 1 {
		t.Errorf("a fresh collector's first pass: %+v", rep)
	}
}

func TestGCDeletedNode(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	e.node("n2", nil)
	e.assign("n2", "tunnel-n2", 1, 0)
	e.assign("n2", "fill-n2", 15, 0) // n2's first block is full
	e.assign("n2", "empty-n2", 1, 0) // claims a second block...
	if _, err := e.c.ReleaseByHandle(testCtx(t), "empty-n2"); err != nil {
		t.Fatal(err) // ...which is now empty
	}
	if _, err := e.c.ReleaseByHandle(testCtx(t), "fill-n2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.MaxBlocksPerHost = 1 }); err != nil {
		t.Fatal(err)
	}
	e.assign("n1", "n1-own", 16, 0)
	borrowed := e.assign1("n1", "n1-borrowed") // from one of n2's blocks
	e.deleteNode("n2")

	clk := newClock()
	g := e.c.NewGarbageCollector(GCOptions{GracePeriod: time.Minute, Now: clk.now})
	if rep := e.gcPass(g); len(rep.Released)+len(rep.AffinitiesReleased) != 0 {
		t.Errorf("first pass acted at once: %+v", rep)
	}
	clk.advance(time.Minute)
	rep := e.gcPass(g)
	if len(rep.Released) != 1 || rep.Released[0].Handle != "tunnel-n2" || len(rep.AffinitiesReleased) != 2 {
		t.Errorf("after the grace period: %+v", rep)
	}
	alloc, err := e.c.GetAllocation(testCtx(t), borrowed.Addr)
	if err != nil || alloc.Handle != "n1-borrowed" {
		t.Fatalf("n1's borrowed address: %+v %v", alloc, err)
	}
	if alloc.BlockNode != "" {
		t.Errorf("the block of a deleted node still has affinity %q", alloc.BlockNode)
	}
	// Blocks left without a node are deleted once they stay empty.
	if _, err := e.c.ReleaseByHandle(testCtx(t), "n1-borrowed"); err != nil {
		t.Fatal(err)
	}
	e.gcPass(g)
	e.gcPass(g)
	u := e.usage()
	if len(u.Pools[0].Blocks) != 1 || u.Pools[0].Blocks[0].Node != "n1" {
		t.Errorf("blocks left: %+v", u.Pools[0].Blocks)
	}
	e.checkClean()
}

func TestGCEmptyBlocks(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	a := e.assign1("n1", "a")
	b := e.assign1("n1", "b")
	if _, err := e.c.ReleaseByHandle(testCtx(t), "a"); err != nil {
		t.Fatal(err)
	}
	g := e.c.NewGarbageCollector(GCOptions{})
	e.gcPass(g)
	if _, err := e.c.ReleaseByHandle(testCtx(t), "b"); err != nil {
		t.Fatal(err)
	}
	if rep := e.gcPass(g); len(rep.BlocksDeleted) != 0 {
		t.Errorf("a block empty for one pass was deleted: %+v", rep)
	}
	// Used and emptied again between passes: it was not empty all along.
	e.assign1("n1", "c")
	if _, err := e.c.ReleaseByHandle(testCtx(t), "c"); err != nil {
		t.Fatal(err)
	}
	if rep := e.gcPass(g); len(rep.BlocksDeleted) != 0 {
		t.Errorf("a block used between passes was deleted: %+v", rep)
	}
	if rep := e.gcPass(g); !slices.Equal(rep.BlocksDeleted, []netip.Prefix{a.Block}) || a.Block != b.Block {
		t.Errorf("deleted %v, want %s", rep.BlocksDeleted, a.Block)
	}
	r := e.checkClean()
	if r.Summary.Blocks != 0 || r.Summary.Affinities != 0 {
		t.Errorf("left: %+v", r.Summary)
	}
}

// A claimer that died between writing its pending affinity and creating the block
// leaves the affinity; Check reports it once old, GC removes it.
func TestGCPendingAffinity(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	clk := newClock()
	cidr := netip.MustParsePrefix("10.0.0.16/28")
	if _, err := e.c.etcd.Txn(testCtx(t)).Then(putJSON(affinityKey("n1", cidr), affinity{State: affinityPending, Time: clk.now()})).Commit(); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.c.Check(testCtx(t), CheckOptions{Now: clk.now}); r.Problems() != 0 {
		t.Errorf("a fresh pending claim is a problem:\n%s", r)
	}
	clk.advance(DefaultPendingAge)
	r, err := e.c.Check(testCtx(t), CheckOptions{Now: clk.now})
	if err != nil || r.Problems() != 1 || !strings.Contains(r.String(), `affinity of node "n1" for block 10.0.0.16/28: pending for 5m0s: a claim that never finished`) {
		t.Errorf("old pending claim: %v\n%s", err, r)
	}
	g := e.c.NewGarbageCollector(GCOptions{GracePeriod: time.Minute, Now: clk.now})
	if rep := e.gcPass(g); len(rep.AffinitiesReleased) != 1 {
		t.Errorf("gc: %+v", rep)
	}
	e.checkClean()
}

func TestGCLeaderElection(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	leader := func() string {
		resp, err := e.c.etcd.Get(testCtx(t), gcLeaderPrefix, append(clientv3.WithFirstCreate(), clientv3.WithPrefix())...)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	run := func(node string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		c := envOn(t, e.e).c
		go func() {
			done <- c.RunGarbageCollector(ctx, node, 20*time.Millisecond, GCOptions{})
			close(done) // so both the test and its cleanup can wait for it
		}()
		t.Cleanup(func() { cancel(); <-done })
		return cancel, done
	}
	stopA, doneA := run("agent-a")
	waitFor("leader agent-a", func() bool { return leader() == "agent-a" })
	run("agent-b")
	waitFor("agent-b campaigning", func() bool {
		resp, _ := e.c.etcd.Get(testCtx(t), gcLeaderPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return resp.Count == 2
	})
	if l := leader(); l != "agent-a" {
		t.Fatalf("leader %q while agent-a runs", l)
	}
	stopA()
	if err := <-doneA; err != nil {
		t.Errorf("RunGarbageCollector: %v", err)
	}
	waitFor("leader agent-b", func() bool { return leader() == "agent-b" })

	// The new leader collects: an emptied block goes after two of its passes.
	e.assign1("n1", "x")
	if _, err := e.c.ReleaseByHandle(testCtx(t), "x"); err != nil {
		t.Fatal(err)
	}
	waitFor("the empty block deleted", func() bool { return len(e.usage().Pools[0].Blocks) == 0 })
}
