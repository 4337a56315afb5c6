package ipam

import (
	"encoding/json"
	"strings"
	"testing"
)

// Check finds each kind of inconsistency; the state is broken by writing keys directly,
// as a bug or a hand edit would.
func TestCheckFindsProblems(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	ctx := testCtx(t)
	put := func(key string, v any) {
		t.Helper()
		if _, err := e.c.etcd.Put(ctx, key, string(must(json.Marshal(v)))); err != nil {
			t.Fatal(err)
		}
	}

	e.assign("n1", "counted", 3, 0)
	put(handleKey("counted"), handleRecord{Handle: "counted", Blocks: map[string]int{e.assign1("n1", "x").Block.String(): 2, "10.0.0.224/28": 1}})
	if _, err := e.c.etcd.Delete(ctx, handleKey("x")); err != nil {
		t.Fatal(err)
	}
	// A confirmed affinity without a block, a block without its affinity record.
	put(affinityKey("n1", mustPrefix("10.0.0.128/28")), affinity{State: affinityConfirmed})
	lonely := newBlock(mustPrefix("10.0.0.160/28"), "n2", 1)
	put(blockKey(lonely.CIDR), lonely)
	// Blocks without affinity, with handle records: two overlapping ones both holding
	// 10.0.0.65 (the /27 is no block of the pool, whose block size is 28), and one in
	// no pool.
	for _, ob := range []struct{ cidr, handle string }{{"10.0.0.64/27", "o"}, {"10.0.0.64/28", "i"}, {"10.9.0.0/28", "orphan"}} {
		b := newBlock(mustPrefix(ob.cidr), "", 1)
		b.Affinity = ""
		b.assign(1, ob.handle, map[string]string{AttrNode: "n1"})
		put(blockKey(b.CIDR), b)
		put(handleKey(ob.handle), handleRecord{Handle: ob.handle, Blocks: map[string]int{ob.cidr: 1}})
	}
	// A workload endpoint whose address is not allocated, and one holding another's.
	theirs := e.workload("n1", "shop", "c1", true)
	e.wep("shop", "pod-x", "n1", "c9", mustAddr("10.0.0.250"), theirs.Addr)
	// A value that does not decode.
	if _, err := e.c.etcd.Put(ctx, blockKey(mustPrefix("10.0.0.240/28")), "{"); err != nil {
		t.Fatal(err)
	}

	r, err := e.c.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	text := r.String()
	for _, want := range []string{
		`corrupt record /tabby/ipam/v1/blocks/10.0.0.240-28: `,
		`handle "counted" counts 1 addresses in block 10.0.0.224/28, which does not exist`,
		`handle "counted" counts 2 addresses in block 10.0.0.`, // ...which holds 3
		`which holds 3 of them`,
		`holds 1 addresses of handle "x", which has no record of them`,
		`affinity of node "n1" for block 10.0.0.128/28: confirmed, but the block does not exist`,
		`affinity of node "n2" for block 10.0.0.160/28: the block is affine to the node, which has no confirmed affinity record for it`,
		`blocks 10.0.0.64/27 and 10.0.0.64/28 overlap; addresses held twice: 1 [10.0.0.65]`,
		`workload endpoint shop/pod-x: 10.0.0.250 is not allocated`,
		`workload endpoint shop/pod-x: ` + theirs.Addr.String() + ` is allocated to handle "tabby-net.c1" of another workload`,
		`block 10.9.0.0/28 is in no IPPool and holds 1 addresses`,
		`block 10.0.0.64/27 is in no IPPool and holds 1 addresses`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", text)
	}
	// Every allocation's node exists: no leaks.
	if len(r.Leaked) != 0 {
		t.Errorf("leaked: %+v", r.Leaked)
	}
	if r.Problems() != 11 {
		t.Errorf("%d problems, want 11:\n%s", r.Problems(), text)
	}
	data, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(data), `"overlaps":[{"blocks":["10.0.0.64/27","10.0.0.64/28"],"addrs":["10.0.0.65"]}]`) {
		t.Errorf("JSON report: %s %v", data, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
