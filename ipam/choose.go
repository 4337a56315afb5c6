package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrNoFreeAddresses is wrapped by AutoAssign's error when the candidate pools have no
// address the node may take; the message names each pool and why.
var ErrNoFreeAddresses = errors.New("no free addresses")

// blockView is what the allocator's choice needs to know of one block.
type blockView struct {
	cidr netip.Prefix
	node string // affine node, "" for none
	free int
}

// allocState is one round's picture for allocating addresses of one IP version: the
// candidate pools, the node's own blocks and, once loaded, every block of the pools.
type allocState struct {
	node  string
	cfg   Config
	pools []*poolInfo // candidates, in preference order
	// own are the node's blocks in the candidate pools, in pool order then address.
	own []blockView
	// ownCount is how many blocks of this IP version the node has claimed (any pool,
	// pending claims included): what maxBlocksPerHost caps.
	ownCount int
	// all holds every existing block of the candidate pools; nil until loaded.
	all map[netip.Prefix]blockView
}

type stepKind int

const (
	stepAllocate  stepKind = iota + 1 // allocate from block (own, or borrowed)
	stepLoadAll                       // load every block of the pools, then choose again
	stepClaim                         // claim block, a free one of pool
	stepExhausted                     // give up with err
)

type step struct {
	kind  stepKind
	block netip.Prefix
	pool  *poolInfo
	err   error
}

// nextStep is the allocator's choice, a pure function of the state: the node's own
// blocks first, then a new block, then borrowing from other nodes' blocks (unless
// strict affinity), else an error naming each pool and why it has nothing to give.
func nextStep(st *allocState) step {
	for _, b := range st.own {
		if b.free > 0 {
			return step{kind: stepAllocate, block: b.cidr, pool: poolHolding(st.pools, b.cidr)}
		}
	}
	if st.all == nil {
		return step{kind: stepLoadAll}
	}
	if st.mayClaim() {
		taken := make(map[netip.Prefix]bool, len(st.all))
		for b := range st.all {
			taken[b] = true
		}
		start := nodeHash(st.node)
		for _, p := range st.pools {
			if b, ok := freeBlock(p.prefix, p.Spec.BlockSize, start, taken); ok {
				return step{kind: stepClaim, block: b, pool: p}
			}
		}
	}
	if !st.cfg.StrictAffinity {
		// Borrow from a block with room; each node starts looking at a different place
		// so that nodes borrowing at once do not all fight over one block.
		var others []blockView
		for _, b := range st.all {
			if b.node != st.node && b.free > 0 {
				others = append(others, b)
			}
		}
		if len(others) > 0 {
			slices.SortFunc(others, func(a, b blockView) int { return a.cidr.Addr().Compare(b.cidr.Addr()) })
			b := others[nodeHash(st.node)%uint64(len(others))]
			return step{kind: stepAllocate, block: b.cidr, pool: poolHolding(st.pools, b.cidr)}
		}
	}
	return step{kind: stepExhausted, err: st.exhausted()}
}

func (st *allocState) mayClaim() bool {
	return st.cfg.AutoAllocateBlocks && (st.cfg.MaxBlocksPerHost == 0 || st.ownCount < st.cfg.MaxBlocksPerHost)
}

func poolHolding(pools []*poolInfo, b netip.Prefix) *poolInfo {
	for _, p := range pools {
		if p.holdsBlock(b) {
			return p
		}
	}
	return nil
}

// exhausted explains, pool by pool, why nothing can be allocated.
func (st *allocState) exhausted() error {
	var parts []string
	for _, p := range st.pools {
		total := blockCount(p.prefix, p.Spec.BlockSize)
		var existing, own uint64
		otherFree := 0
		for _, b := range st.all {
			if !p.holdsBlock(b.cidr) {
				continue
			}
			existing++
			if b.node == st.node {
				own++
			} else {
				otherFree += b.free
			}
		}
		var why []string
		if existing < total && !st.cfg.AutoAllocateBlocks {
			why = append(why, fmt.Sprintf("%d blocks unclaimed, but autoAllocateBlocks is off", total-existing))
		} else if existing < total && !st.mayClaim() {
			why = append(why, fmt.Sprintf("node %q has its maximum of %d blocks (maxBlocksPerHost)", st.node, st.cfg.MaxBlocksPerHost))
		}
		if otherFree > 0 && st.cfg.StrictAffinity {
			why = append(why, fmt.Sprintf("strictAffinity forbids borrowing the %d free addresses in other nodes' blocks", otherFree))
		}
		msg := fmt.Sprintf("in %s", p)
		if len(why) == 0 {
			msg += fmt.Sprintf(": %d blocks, all claimed and full", total)
		} else {
			msg += fmt.Sprintf(" for node %q: its %d blocks there are full; %s", st.node, own, strings.Join(why, "; "))
		}
		parts = append(parts, msg)
	}
	return fmt.Errorf("%w %s", ErrNoFreeAddresses, strings.Join(parts, "; "))
}
