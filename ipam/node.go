package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// ErrNodeExists is wrapped by ReleaseNode when the node's Node resource still exists.
var ErrNodeExists = errors.New("the node exists")

// NodeRelease is what ReleaseNode freed.
type NodeRelease struct {
	// Released are the node's addresses released: its workloads' (whose endpoints are
	// gone) and its tunnel addresses.
	Released []Leak `json:"released,omitempty"`
	// Affinities are the node's claims removed; each empty block went with its claim.
	Affinities []netip.Prefix `json:"affinities,omitempty"`
	// Kept are the node's addresses left allocated because their owner exists: a
	// workload endpoint that still names the address.
	Kept []Leak `json:"kept,omitempty"`
}

// Empty says that nothing was released.
func (r *NodeRelease) Empty() bool { return len(r.Released) == 0 && len(r.Affinities) == 0 }

// ReleaseNode releases, at once, what the garbage collector would release after its
// grace period for a node whose Node resource was deleted: every address allocated for
// the node (attribute node) whose owner is gone (a workload's endpoint, or for a tunnel
// address the node itself), and the node's block affinities (an empty block goes with
// its affinity, a block holding others' addresses loses its affinity). Each transaction
// requires the owner still gone and the allocation unchanged, as the collector's do, so
// an address allocated meanwhile is never freed. It fails wrapping ErrNodeExists while
// the Node exists.
func (c *Client) ReleaseNode(ctx context.Context, node string) (*NodeRelease, error) {
	if err := checkName("node", node); err != nil {
		return nil, fmt.Errorf("release node: %w", err)
	}
	what := fmt.Sprintf("release node %q", node)
	s, err := c.readState(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if s.nodes[node] {
		return nil, fmt.Errorf("%s: %w: delete the Node first", what, ErrNodeExists)
	}
	rep := &NodeRelease{}
	var errs []error
	for _, lg := range nodeAllocations(s, node, rep) {
		rel, err := c.releaseGroup(ctx, what, lg, nil)
		rep.Released = append(rep.Released, rel...)
		errs = append(errs, err)
	}
	refs := slices.Collect(maps.Keys(s.affinities))
	slices.SortFunc(refs, func(a, b affinityRef) int { return comparePrefix(a.cidr, b.cidr) })
	for _, ref := range refs {
		if ref.node != node {
			continue
		}
		err := c.dropAffinity(ctx, what, ref, nil)
		if err == nil {
			rep.Affinities = append(rep.Affinities, ref.cidr)
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("%s: %w", what, err)
	}
	return rep, nil
}

// nodeAllocations groups, by block and owner, the allocations made for node whose owner
// is gone in s; those whose owner exists go to rep.Kept.
func nodeAllocations(s *state, node string, rep *NodeRelease) []*leakGroup {
	var out []*leakGroup
	for _, cidr := range slices.SortedFunc(maps.Keys(s.blocks), comparePrefix) {
		b := s.blocks[cidr].b
		groups := map[owner]*leakGroup{}
		for ord := range b.Allocations {
			h := b.holder(ord)
			if h == nil || h.Secondary[AttrNode] != node {
				continue
			}
			o := ownerOf(h)
			gone, why := s.gone(o)
			if !gone {
				rep.Kept = append(rep.Kept, Leak{Addr: b.addr(ord), Block: cidr, Handle: h.Handle, Reason: "its owner exists"})
				continue
			}
			if groups[o] == nil {
				groups[o] = &leakGroup{cidr: cidr, owner: o, why: why}
				out = append(out, groups[o])
			}
			seq := b.seqOf(ord)
			groups[o].opts = append(groups[o].opts, ReleaseOptions{Addr: b.addr(ord), Handle: h.Handle, SequenceNumber: &seq})
		}
	}
	return out
}
