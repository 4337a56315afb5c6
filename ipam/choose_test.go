package ipam

import (
	"errors"
	"maps"
	"net/netip"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func testPool(name, cidr string, blockSize int) *poolInfo {
	p := &api.IPPool{Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	p.Name = name
	api.SetDefaults(p)
	return &poolInfo{IPPool: p, prefix: mustPrefix(cidr), key: poolsPrefix + name, rev: 1}
}

func views(bs ...blockView) map[netip.Prefix]blockView {
	m := map[netip.Prefix]blockView{}
	for _, b := range bs {
		m[b.cidr] = b
	}
	return m
}

func bv(cidr, node string, free int) blockView {
	return blockView{cidr: mustPrefix(cidr), node: node, free: free}
}

func TestNextStep(t *testing.T) {
	small := testPool("small", "10.0.0.0/26", 28) // 4 blocks of 16
	other := testPool("other", "10.1.0.0/28", 28) // 1 block
	full := func(cidr, node string) blockView { return bv(cidr, node, 0) }
	allFull := views(full("10.0.0.0/28", "n1"), full("10.0.0.16/28", "n2"), full("10.0.0.32/28", "n2"), full("10.0.0.48/28", "n3"))

	for _, tc := range []struct {
		name string
		st   allocState
		kind stepKind
		// block to allocate from or claim; error text for stepExhausted
		block string
		err   string
	}{
		{
			name:  "own block with room first, even with unclaimed blocks",
			st:    allocState{cfg: DefaultConfig, own: []blockView{bv("10.0.0.0/28", "n1", 0), bv("10.0.0.32/28", "n1", 3)}, ownCount: 2},
			kind:  stepAllocate,
			block: "10.0.0.32/28",
		},
		{
			name: "own blocks full: load every block",
			st:   allocState{cfg: DefaultConfig, own: []blockView{bv("10.0.0.0/28", "n1", 0)}, ownCount: 1},
			kind: stepLoadAll,
		},
		{
			name:  "claim a new block",
			st:    allocState{cfg: DefaultConfig, own: []blockView{bv("10.0.0.0/28", "n1", 0)}, ownCount: 1, all: views(bv("10.0.0.0/28", "n1", 0), bv("10.0.0.16/28", "n2", 5))},
			kind:  stepClaim,
			block: "10.0.0.32/28", // n1 starts at block 0 (checked below); 0 and 1 are taken
		},
		{
			name:  "no unclaimed block: borrow",
			st:    allocState{cfg: DefaultConfig, all: views(full("10.0.0.0/28", "n1"), bv("10.0.0.16/28", "n2", 5), full("10.0.0.32/28", "n2"), full("10.0.0.48/28", "n3"))},
			kind:  stepAllocate,
			block: "10.0.0.16/28",
		},
		{
			name: "strict affinity: no borrowing",
			st: allocState{cfg: Config{StrictAffinity: true, AutoAllocateBlocks: true}, own: []blockView{full("10.0.0.0/28", "n1")}, ownCount: 1,
				all: views(full("10.0.0.0/28", "n1"), bv("10.0.0.16/28", "n2", 5), full("10.0.0.32/28", "n2"), full("10.0.0.48/28", "n3"))},
			kind: stepExhausted,
			err:  `no free addresses in IPPool "small" (10.0.0.0/26) for node "n1": its 1 blocks there are full; strictAffinity forbids borrowing the 5 free addresses in other nodes' blocks`,
		},
		{
			name:  "maxBlocksPerHost reached: borrow",
			st:    allocState{cfg: Config{MaxBlocksPerHost: 1, AutoAllocateBlocks: true}, own: []blockView{full("10.0.0.0/28", "n1")}, ownCount: 1, all: views(full("10.0.0.0/28", "n1"), bv("10.0.0.16/28", "n2", 1))},
			kind:  stepAllocate,
			block: "10.0.0.16/28",
		},
		{
			name: "maxBlocksPerHost reached, strict",
			st: allocState{cfg: Config{MaxBlocksPerHost: 1, StrictAffinity: true, AutoAllocateBlocks: true}, own: []blockView{full("10.0.0.0/28", "n1")}, ownCount: 1,
				all: views(full("10.0.0.0/28", "n1"))},
			kind: stepExhausted,
			err:  `no free addresses in IPPool "small" (10.0.0.0/26) for node "n1": its 1 blocks there are full; node "n1" has its maximum of 1 blocks (maxBlocksPerHost)`,
		},
		{
			name: "autoAllocateBlocks off, nothing to borrow",
			st:   allocState{cfg: Config{}, all: views(full("10.0.0.16/28", "n2"))},
			kind: stepExhausted,
			err:  `no free addresses in IPPool "small" (10.0.0.0/26) for node "n1": its 0 blocks there are full; 3 blocks unclaimed, but autoAllocateBlocks is off`,
		},
		{
			name: "everything claimed and full",
			st:   allocState{cfg: DefaultConfig, own: []blockView{full("10.0.0.0/28", "n1")}, ownCount: 1, all: allFull},
			kind: stepExhausted,
			err:  `no free addresses in IPPool "small" (10.0.0.0/26): 4 blocks, all claimed and full`,
		},
		{
			name:  "second pool when the first is full",
			st:    allocState{cfg: DefaultConfig, pools: []*poolInfo{small, other}, all: allFull},
			kind:  stepClaim,
			block: "10.1.0.0/28",
		},
		{
			name: "both pools named in the error",
			st: allocState{cfg: DefaultConfig, pools: []*poolInfo{small, other},
				all: func() map[netip.Prefix]blockView {
					m := views(full("10.1.0.0/28", "n9"))
					maps.Copy(m, allFull)
					return m
				}()},
			kind: stepExhausted,
			err:  `no free addresses in IPPool "small" (10.0.0.0/26): 4 blocks, all claimed and full; in IPPool "other" (10.1.0.0/28): 1 blocks, all claimed and full`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			st.node = "n1"
			if st.pools == nil {
				st.pools = []*poolInfo{small}
			}
			s := nextStep(&st)
			if s.kind != tc.kind {
				t.Fatalf("step %d, want %d (%+v)", s.kind, tc.kind, s)
			}
			if tc.block != "" && s.block != mustPrefix(tc.block) {
				t.Errorf("block %s, want %s", s.block, tc.block)
			}
			if tc.kind == stepAllocate || tc.kind == stepClaim {
				if s.pool == nil || !s.pool.holdsBlock(s.block) {
					t.Errorf("step's pool %v does not hold %s", s.pool, s.block)
				}
			}
			if tc.err != "" {
				if s.err == nil || s.err.Error() != tc.err || !errors.Is(s.err, ErrNoFreeAddresses) {
					t.Errorf("error\n got %v\nwant %s", s.err, tc.err)
				}
			}
		})
	}
	if got := nodeHash("n1") % 4; got != 0 {
		t.Errorf("n1 hashes to block %d of 4; the claim case above assumes 0", got)
	}
}
