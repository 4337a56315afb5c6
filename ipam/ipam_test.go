package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func TestAutoAssignOwnBlocksFirst(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 28)
	e.node("n1", nil)
	seen := map[netip.Addr]bool{}
	var blocks []netip.Prefix
	for i := range 17 {
		a := e.assign1("n1", wepHandle(i))
		if seen[a.Addr] || !a.Block.Contains(a.Addr) || a.Pool != "p" {
			t.Fatalf("assignment %d: %+v (seen before: %t)", i, a, seen[a.Addr])
		}
		seen[a.Addr] = true
		if len(blocks) == 0 || blocks[len(blocks)-1] != a.Block {
			blocks = append(blocks, a.Block)
		}
	}
	// 16 from the first block, in order, then a second block.
	if len(blocks) != 2 {
		t.Errorf("blocks used: %v, want two", blocks)
	}
	if a := e.assign(("n1"), "multi", 20, 0); len(a.IPv4) != 20 {
		t.Errorf("got %d addresses, want 20", len(a.IPv4))
	}
	u := e.usage()
	if u.Pools[0].InUse != 37 || len(u.Pools[0].Blocks) != 3 {
		t.Errorf("usage: %d in use in %d blocks, want 37 in 3", u.Pools[0].InUse, len(u.Pools[0].Blocks))
	}
	for _, b := range u.Pools[0].Blocks {
		if b.Node != "n1" || len(b.Borrowed) != 0 {
			t.Errorf("block %+v", b)
		}
	}
	e.checkClean()
}

func TestBorrowStrictAndExhaustion(t *testing.T) {
	e := newEnv(t)
	e.pool("tiny", "10.9.0.0/28", 29) // two blocks of 8
	e.node("n1", nil)
	e.node("n2", nil)
	e.assign("n1", "a", 3, 0)
	e.assign("n2", "b", 8, 0)
	// n2's block is full and no block is unclaimed: it borrows from n1's.
	got := e.assign1("n2", "c")
	alloc, err := e.c.GetAllocation(testCtx(t), got.Addr)
	if err != nil || alloc.BlockNode != "n1" || alloc.Attrs[AttrNode] != "n2" || alloc.Handle != "c" {
		t.Fatalf("borrowed allocation: %+v, %v", alloc, err)
	}
	var borrowed []Allocation
	for _, b := range e.usage().Pools[0].Blocks {
		borrowed = append(borrowed, b.Borrowed...)
	}
	if len(borrowed) != 1 || borrowed[0].Addr != got.Addr {
		t.Errorf("usage shows borrowed %+v, want %s", borrowed, got.Addr)
	}

	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.StrictAffinity = true }); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "d", Node: "n2"})
	if !errors.Is(err, ErrNoFreeAddresses) || !strings.Contains(err.Error(),
		`no free addresses in IPPool "tiny" (10.9.0.0/28) for node "n2": its 1 blocks there are full; strictAffinity forbids borrowing the 4 free addresses in other nodes' blocks`) {
		t.Errorf("strict affinity: %v", err)
	}
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.StrictAffinity = false }); err != nil {
		t.Fatal(err)
	}
	e.assign("n2", "e", 4, 0)
	_, err = e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "f", Node: "n3"})
	if !errors.Is(err, ErrNoFreeAddresses) || !strings.HasSuffix(err.Error(), `: no free addresses in IPPool "tiny" (10.9.0.0/28): 2 blocks, all claimed and full`) {
		t.Errorf("exhausted pool: %v", err)
	}
	// All or nothing: asking for more than is left allocates nothing.
	if _, err := e.c.ReleaseByHandle(testCtx(t), "e"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 5, Handle: "g", Node: "n1"}); !errors.Is(err, ErrNoFreeAddresses) {
		t.Errorf("5 of 4 free: %v", err)
	}
	if u := e.usage(); u.Pools[0].InUse != 12 {
		t.Errorf("after a failed request, %d in use, want 12", u.Pools[0].InUse)
	}
	e.checkClean()
}

func TestConfigCaps(t *testing.T) {
	e := newEnv(t)
	e.pool("p", "10.0.0.0/24", 29)
	e.node("n1", nil)
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.MaxBlocksPerHost, c.StrictAffinity = 2, true }); err != nil {
		t.Fatal(err)
	}
	e.assign("n1", "a", 16, 0)
	_, err := e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "b", Node: "n1"})
	if err == nil || !strings.Contains(err.Error(), `node "n1" has its maximum of 2 blocks (maxBlocksPerHost)`) {
		t.Errorf("at maxBlocksPerHost: %v", err)
	}
	// The per-request override.
	if _, err := e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "b", Node: "n1", MaxBlocksPerHost: 3}); err != nil {
		t.Errorf("with MaxBlocksPerHost 3: %v", err)
	}
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { *c = Config{StrictAffinity: true} }); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.AutoAssign(testCtx(t), AutoAssignArgs{Num4: 1, Handle: "c", Node: "n2"})
	if err == nil || !strings.Contains(err.Error(), `for node "n2": its 0 blocks there are full; 29 blocks unclaimed, but autoAllocateBlocks is off; `+
		`strictAffinity forbids borrowing the 7 free addresses in other nodes' blocks`) {
		t.Errorf("without autoAllocateBlocks: %v", err)
	}
	if _, err := e.c.UpdateConfig(testCtx(t), func(c *Config) { c.MaxBlocksPerHost = -1 }); err == nil {
		t.Error("negative maxBlocksPerHost accepted")
	}
	if cfg, err := e.c.GetConfig(testCtx(t)); err != nil || cfg != (Config{StrictAffinity: true}) {
		t.Errorf("config %+v, %v", cfg, err)
	}
}

func TestPoolSelection(t *testing.T) {
	e := newEnv(t)
	e.pool("rack-a", "10.1.0.0/24", 26, func(p *api.IPPool) { p.Spec.NodeSelector = "rack == 'a'" })
	e.pool("any", "10.2.0.0/24", 26)
	e.pool("off", "10.3.0.0/24", 26, func(p *api.IPPool) { p.Spec.Disabled = true })
	e.pool("tunnels", "10.4.0.0/24", 26, func(p *api.IPPool) { p.Spec.AllowedUses = []api.IPPoolAllowedUse{api.IPPoolAllowedUseTunnel} })
	e.pool("v6", "fd00::/120", 122)
	e.node("a1", map[string]string{"rack": "a"})
	e.node("b1", map[string]string{"rack": "b"})

	inPool := func(node string, args AutoAssignArgs) string {
		t.Helper()
		args.Node, args.Handle = node, "h-"+node
		if args.Num4+args.Num6 == 0 {
			args.Num4 = 1
		}
		res, err := e.c.AutoAssign(testCtx(t), args)
		if err != nil {
			return "error: " + err.Error()
		}
		if _, err := e.c.ReleaseByHandle(testCtx(t), args.Handle); err != nil {
			t.Fatal(err)
		}
		var pools []string
		for _, a := range append(res.IPv4, res.IPv6...) {
			pools = append(pools, a.Pool)
		}
		return strings.Join(pools, ",")
	}
	for _, tc := range []struct {
		node string
		args AutoAssignArgs
		want string
	}{
		{"a1", AutoAssignArgs{}, "any"}, // candidates in name order
		{"b1", AutoAssignArgs{}, "any"},
		{"a1", AutoAssignArgs{IPv4Pools: []string{"10.2.0.0/24"}}, "any"},
		{"b1", AutoAssignArgs{IPv4Pools: []string{"rack-a"}}, "rack-a"}, // requested: the selector does not apply
		{"b1", AutoAssignArgs{IPv4Pools: []string{"off"}}, `error: auto-assign 1 IPv4 and 0 IPv6 for handle "h-b1" on node "b1": requested IPPool "off" (10.3.0.0/24) is disabled`},
		{"b1", AutoAssignArgs{IPv4Pools: []string{"nope"}}, `error: auto-assign 1 IPv4 and 0 IPv6 for handle "h-b1" on node "b1": requested IPPool "nope" does not exist`},
		{"b1", AutoAssignArgs{Use: api.IPPoolAllowedUseTunnel}, "any"},
		{"b1", AutoAssignArgs{Num4: 1, Num6: 1}, "any,v6"},
		// A node without a Node resource matches only all() pools.
		{"ghost", AutoAssignArgs{IPv4Pools: nil}, "any"},
	} {
		if got := inPool(tc.node, tc.args); got != tc.want {
			t.Errorf("node %s, %+v: %s, want %s", tc.node, tc.args, got, tc.want)
		}
	}
	// Only rack-a may serve a1 once "any" is disabled; a node without labels gets the reasons.
	e.pool("any", "10.2.0.0/24", 26, func(p *api.IPPool) { p.Spec.Disabled = true })
	if got := inPool("a1", AutoAssignArgs{}); got != "rack-a" {
		t.Errorf("a1 with any disabled: %s", got)
	}
	got := inPool("ghost", AutoAssignArgs{})
	want := `error: auto-assign 1 IPv4 and 0 IPv6 for handle "h-ghost" on node "ghost": no IPv4 IPPool for node "ghost": "any" is disabled; "off" is disabled; ` +
		`"rack-a" has nodeSelector "rack == 'a'" and node "ghost" has no Node resource; "tunnels" does not allow use Workload`
	if got != want {
		t.Errorf("ghost:\n got %s\nwant %s", got, want)
	}
}
