package ipam

import (
	"context"
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Allocation is who holds one address.
type Allocation struct {
	Addr  netip.Addr   `json:"addr"`
	Block netip.Prefix `json:"block"`
	// BlockNode is the node the block is affine to ("" for none); an address whose
	// AttrNode differs is borrowed.
	BlockNode      string            `json:"blockNode,omitempty"`
	Handle         string            `json:"handle"`
	Attrs          map[string]string `json:"attrs,omitempty"`
	SequenceNumber uint64            `json:"sequenceNumber"`
}

// GetAllocation says who holds addr; the error wraps ErrNotAllocated if nobody does.
func (c *Client) GetAllocation(ctx context.Context, addr netip.Addr) (*Allocation, error) {
	cidrs, err := c.blockCIDRs(ctx)
	if err != nil {
		return nil, fmt.Errorf("get allocation of %s: %w", addr, err)
	}
	cidr, ok := containingBlock(cidrs, addr)
	if !ok {
		return nil, fmt.Errorf("%s: %w (in no block)", addr, ErrNotAllocated)
	}
	blocks, err := c.getBlocks(ctx, []netip.Prefix{cidr})
	if err != nil {
		return nil, fmt.Errorf("get allocation of %s: %w", addr, err)
	}
	sb := blocks[cidr]
	if sb == nil {
		return nil, fmt.Errorf("%s: %w (block %s was just deleted)", addr, ErrNotAllocated, cidr)
	}
	return allocationAt(sb.b, addr)
}

func allocationAt(b *block, addr netip.Addr) (*Allocation, error) {
	ord, _ := b.ordinal(addr)
	h := b.holder(ord)
	if h == nil {
		return nil, fmt.Errorf("%s: %w (free in block %s)", addr, ErrNotAllocated, b.CIDR)
	}
	return &Allocation{Addr: addr, Block: b.CIDR, BlockNode: b.node(), Handle: h.Handle, Attrs: maps.Clone(h.Secondary), SequenceNumber: b.seqOf(ord)}, nil
}

// Usage is how full each pool and its blocks are.
type Usage struct {
	Pools []PoolUsage `json:"pools"`
	// Orphans are blocks in no pool (left by a deleted or shrunk pool; empty ones are
	// the garbage collector's to delete).
	Orphans []BlockUsage `json:"orphans,omitempty"`
}

// PoolUsage is one pool's usage. Size counts every address of the CIDR (an IPv6 pool
// may hold more than 2^64).
type PoolUsage struct {
	Name      string       `json:"name"`
	CIDR      netip.Prefix `json:"cidr"`
	BlockSize int          `json:"blockSize"`
	Disabled  bool         `json:"disabled,omitempty"`
	Size      *big.Int     `json:"size"`
	InUse     int          `json:"inUse"`
	Blocks    []BlockUsage `json:"blocks"`
}

// BlockUsage is one block's usage.
type BlockUsage struct {
	CIDR  netip.Prefix `json:"cidr"`
	Node  string       `json:"node,omitempty"` // affinity; "" for none
	Size  int          `json:"size"`
	InUse int          `json:"inUse"`
	// Borrowed are the block's addresses held for other nodes than its own.
	Borrowed []Allocation `json:"borrowed,omitempty"`
}

// Usage reads every pool and block.
func (c *Client) Usage(ctx context.Context) (*Usage, error) {
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(blocksPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("ipam usage: %w", err)
	}
	pools, err := poolsFromKVs(rangeKVs(resp, 0))
	if err != nil {
		return nil, fmt.Errorf("ipam usage: %w", err)
	}
	u := &Usage{Pools: make([]PoolUsage, len(pools))}
	for i, p := range pools {
		u.Pools[i] = PoolUsage{Name: p.Name, CIDR: p.prefix, BlockSize: p.Spec.BlockSize, Disabled: p.Spec.Disabled, Size: addressCount(p.prefix)}
	}
	for _, kv := range rangeKVs(resp, 1) {
		b, err := decodeJSON[block](kv)
		if err != nil {
			return nil, fmt.Errorf("ipam usage: %w", err)
		}
		bu := blockUsage(b)
		if i := slices.IndexFunc(pools, func(p *poolInfo) bool { return p.holdsBlock(b.CIDR) }); i >= 0 {
			u.Pools[i].InUse += bu.InUse
			u.Pools[i].Blocks = append(u.Pools[i].Blocks, bu)
		} else {
			u.Orphans = append(u.Orphans, bu)
		}
	}
	for i := range u.Pools {
		slices.SortFunc(u.Pools[i].Blocks, func(a, b BlockUsage) int { return comparePrefix(a.CIDR, b.CIDR) })
	}
	slices.SortFunc(u.Orphans, func(a, b BlockUsage) int { return comparePrefix(a.CIDR, b.CIDR) })
	return u, nil
}

func blockUsage(b *block) BlockUsage {
	bu := BlockUsage{CIDR: b.CIDR, Node: b.node(), Size: b.size(), InUse: b.inUse()}
	for ord := range b.Allocations {
		if h := b.holder(ord); h != nil && h.Secondary[AttrNode] != bu.Node {
			a, _ := allocationAt(b, b.addr(ord))
			bu.Borrowed = append(bu.Borrowed, *a)
		}
	}
	return bu
}
