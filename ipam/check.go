package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// CheckOptions tune Check.
type CheckOptions struct {
	// PendingAge is how old a pending affinity must be to count as a claim that never
	// finished; 0 means DefaultPendingAge.
	PendingAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultPendingAge: a claim takes milliseconds; a pending affinity this old was left
// by a process that died mid-claim.
const DefaultPendingAge = 5 * time.Minute

// Report is what Check found. Every list but OrphanedBlocks holds problems; orphaned
// blocks are problems only when they hold addresses.
type Report struct {
	Revision int64         `json:"revision"` // the etcd revision checked
	Summary  ReportSummary `json:"summary"`
	// CorruptRecords are IPAM keys whose values do not decode or are inconsistent.
	CorruptRecords []CorruptRecord `json:"corruptRecords,omitempty"`
	// HandleMismatches: a handle record's count for a block differs from the block's.
	HandleMismatches []HandleMismatch `json:"handleMismatches,omitempty"`
	// AffinityProblems: blocks and affinity records that disagree, and pending claims
	// older than PendingAge.
	AffinityProblems []AffinityProblem `json:"affinityProblems,omitempty"`
	// Overlaps are blocks that overlap each other, with the addresses both hold.
	Overlaps []Overlap `json:"overlaps,omitempty"`
	// WorkloadIPProblems: a workload endpoint's address (in a pool) is not allocated,
	// or is allocated to another workload.
	WorkloadIPProblems []WorkloadIPProblem `json:"workloadIPProblems,omitempty"`
	// Leaked are allocations whose owner is gone; the garbage collector releases
	// them after its grace period.
	Leaked []Leak `json:"leaked,omitempty"`
	// OrphanedBlocks are blocks in no pool.
	OrphanedBlocks []OrphanedBlock `json:"orphanedBlocks,omitempty"`
}

// ReportSummary counts what was checked.
type ReportSummary struct {
	Pools             int `json:"pools"`
	Blocks            int `json:"blocks"`
	Allocations       int `json:"allocations"`
	Handles           int `json:"handles"`
	Affinities        int `json:"affinities"`
	Nodes             int `json:"nodes"`
	WorkloadEndpoints int `json:"workloadEndpoints"`
}

// CorruptRecord is an IPAM key whose value does not decode or contradicts itself.
type CorruptRecord struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// HandleMismatch is a handle record and a block that disagree on the handle's count.
type HandleMismatch struct {
	Handle      string       `json:"handle"`
	Block       netip.Prefix `json:"block"`
	HandleCount int          `json:"handleCount"` // what the handle record says (0: no record)
	BlockCount  int          `json:"blockCount"`  // what the block holds
	BlockExists bool         `json:"blockExists"`
}

// AffinityProblem is a node's claim on a block that is inconsistent, or was removed.
type AffinityProblem struct {
	Node    string       `json:"node"`
	Block   netip.Prefix `json:"block"`
	Problem string       `json:"problem"`
}

// Overlap is two blocks that overlap.
type Overlap struct {
	Blocks [2]netip.Prefix `json:"blocks"`
	Addrs  []netip.Addr    `json:"addrs,omitempty"` // allocated in both: held twice
}

// WorkloadIPProblem is a workload endpoint's address that IPAM does not hold for it.
type WorkloadIPProblem struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Addr      netip.Addr `json:"addr"`
	Problem   string     `json:"problem"`
}

// Leak is an allocation whose owner is gone (or, in a GCReport, was released).
type Leak struct {
	Addr   netip.Addr   `json:"addr"`
	Block  netip.Prefix `json:"block"`
	Handle string       `json:"handle"`
	Reason string       `json:"reason"`
}

// OrphanedBlock is a block that lies in no pool.
type OrphanedBlock struct {
	Block netip.Prefix `json:"block"`
	InUse int          `json:"inUse"`
}

// Problems counts the problems found; 0 means IPAM is consistent.
func (r *Report) Problems() int {
	n := len(r.CorruptRecords) + len(r.HandleMismatches) + len(r.AffinityProblems) + len(r.Overlaps) + len(r.WorkloadIPProblems) + len(r.Leaked)
	for _, o := range r.OrphanedBlocks {
		if o.InUse > 0 {
			n++
		}
	}
	return n
}

// String lists the problems, one a line, as `tabbyctl ipam check` prints them.
func (r *Report) String() string {
	var b strings.Builder
	for _, c := range r.CorruptRecords {
		fmt.Fprintf(&b, "corrupt record %s: %s\n", c.Key, c.Error)
	}
	for _, m := range r.HandleMismatches {
		switch {
		case !m.BlockExists:
			fmt.Fprintf(&b, "handle %q counts %d addresses in block %s, which does not exist\n", m.Handle, m.HandleCount, m.Block)
		case m.HandleCount == 0:
			fmt.Fprintf(&b, "block %s holds %d addresses of handle %q, which has no record of them\n", m.Block, m.BlockCount, m.Handle)
		default:
			fmt.Fprintf(&b, "handle %q counts %d addresses in block %s, which holds %d of them\n", m.Handle, m.HandleCount, m.Block, m.BlockCount)
		}
	}
	for _, a := range r.AffinityProblems {
		fmt.Fprintf(&b, "affinity of node %q for block %s: %s\n", a.Node, a.Block, a.Problem)
	}
	for _, o := range r.Overlaps {
		fmt.Fprintf(&b, "blocks %s and %s overlap; addresses held twice: %d %v\n", o.Blocks[0], o.Blocks[1], len(o.Addrs), o.Addrs)
	}
	for _, w := range r.WorkloadIPProblems {
		fmt.Fprintf(&b, "workload endpoint %s/%s: %s %s\n", w.Namespace, w.Name, w.Addr, w.Problem)
	}
	for _, l := range r.Leaked {
		fmt.Fprintf(&b, "leaked %s (handle %q): %s; GC releases it after its grace period\n", l.Addr, l.Handle, l.Reason)
	}
	for _, o := range r.OrphanedBlocks {
		if o.InUse > 0 {
			fmt.Fprintf(&b, "block %s is in no IPPool and holds %d addresses\n", o.Block, o.InUse)
		} else {
			fmt.Fprintf(&b, "note: empty block %s is in no IPPool; GC deletes it\n", o.Block)
		}
	}
	return b.String()
}

// Check reads all IPAM state and the pools, nodes and workload endpoints it refers to,
// at one revision, and reports every inconsistency.
func (c *Client) Check(ctx context.Context, opts CheckOptions) (*Report, error) {
	s, err := c.readState(ctx)
	if err != nil {
		return nil, fmt.Errorf("ipam check: %w", err)
	}
	return checkState(s, opts), nil
}

// checkState is Check's pure part.
func checkState(s *state, opts CheckOptions) *Report {
	if opts.PendingAge <= 0 {
		opts.PendingAge = DefaultPendingAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Report{Revision: s.rev, Summary: ReportSummary{
		Pools: len(s.pools), Blocks: len(s.blocks), Handles: len(s.handles), Affinities: len(s.affinities),
		Nodes: len(s.nodes), WorkloadEndpoints: len(s.weps),
	}}
	for _, key := range slices.Sorted(maps.Keys(s.corrupt)) {
		r.CorruptRecords = append(r.CorruptRecords, CorruptRecord{key, s.corrupt[key].Error()})
	}
	cidrs := slices.SortedFunc(maps.Keys(s.blocks), comparePrefix)

	// Blocks: their allocations per handle, leaks, orphans, affinities, overlaps.
	counts := map[string]map[netip.Prefix]int{} // handle → block → addresses
	for _, cidr := range cidrs {
		b := s.blocks[cidr].b
		r.Summary.Allocations += b.inUse()
		for ord := range b.Allocations {
			h := b.holder(ord)
			if h == nil {
				continue
			}
			if counts[h.Handle] == nil {
				counts[h.Handle] = map[netip.Prefix]int{}
			}
			counts[h.Handle][cidr]++
			if gone, why := s.gone(ownerOf(h)); gone {
				r.Leaked = append(r.Leaked, Leak{Addr: b.addr(ord), Block: cidr, Handle: h.Handle, Reason: why})
			}
		}
		if poolHolding(s.pools, cidr) == nil {
			r.OrphanedBlocks = append(r.OrphanedBlocks, OrphanedBlock{cidr, b.inUse()})
		}
		if node := b.node(); node != "" {
			if sa := s.affinities[affinityRef{node, cidr}]; sa == nil || sa.a.State != affinityConfirmed {
				r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{node, cidr, "the block is affine to the node, which has no confirmed affinity record for it"})
			}
		}
		for bits := cidr.Bits() - 1; bits >= 0; bits-- {
			if outer := s.blocks[blockOf(cidr.Addr(), bits)]; outer != nil {
				r.Overlaps = append(r.Overlaps, overlap(outer.b, b))
			}
		}
	}

	// Handle records against the blocks' counts.
	for _, handle := range slices.Sorted(maps.Keys(s.handles)) {
		for _, cs := range slices.Sorted(maps.Keys(s.handles[handle].rec.Blocks)) {
			n := s.handles[handle].rec.Blocks[cs]
			cidr, err := netip.ParsePrefix(cs)
			if err != nil {
				r.CorruptRecords = append(r.CorruptRecords, CorruptRecord{handleKey(handle), fmt.Sprintf("block %q: %v", cs, err)})
				continue
			}
			have := counts[handle][cidr]
			if _, exists := s.blocks[cidr]; !exists || have != n {
				r.HandleMismatches = append(r.HandleMismatches, HandleMismatch{handle, cidr, n, have, exists})
			}
		}
	}
	for _, handle := range slices.Sorted(maps.Keys(counts)) {
		for _, cidr := range slices.SortedFunc(maps.Keys(counts[handle]), comparePrefix) {
			if h := s.handles[handle]; h == nil || h.rec.Blocks[cidr.String()] == 0 {
				r.HandleMismatches = append(r.HandleMismatches, HandleMismatch{handle, cidr, 0, counts[handle][cidr], true})
			}
		}
	}

	// Affinity records against the blocks.
	refs := slices.SortedFunc(maps.Keys(s.affinities), func(a, b affinityRef) int {
		if c := strings.Compare(a.node, b.node); c != 0 {
			return c
		}
		return comparePrefix(a.cidr, b.cidr)
	})
	for _, ref := range refs {
		a := s.affinities[ref].a
		sb := s.blocks[ref.cidr]
		switch {
		case a.State == affinityPending:
			if age := opts.Now().Sub(a.Time); age >= opts.PendingAge {
				r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{ref.node, ref.cidr,
					fmt.Sprintf("pending for %s: a claim that never finished (GC removes it)", age.Round(time.Second))})
			}
		case a.State != affinityConfirmed:
			r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{ref.node, ref.cidr, fmt.Sprintf("unknown state %q", a.State)})
		case sb == nil:
			r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{ref.node, ref.cidr, "confirmed, but the block does not exist"})
		case sb.b.node() != ref.node:
			r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{ref.node, ref.cidr, fmt.Sprintf("confirmed, but the block is affine to %q", sb.b.node())})
		}
	}

	// Workload endpoints' addresses.
	for _, w := range s.weps {
		addrs, err := w.Spec.Addrs()
		if err != nil {
			continue // validated on write
		}
		for _, a := range addrs {
			if poolContaining(s.pools, a) == nil {
				continue // not an address IPAM manages
			}
			_, _, h := s.allocated(a)
			switch {
			case h == nil:
				r.WorkloadIPProblems = append(r.WorkloadIPProblems, WorkloadIPProblem{w.Namespace, w.Name, a, "is not allocated"})
			case ownerOf(h).workload != (workloadRef{}) && ownerOf(h).workload != (workloadRef{w.Namespace, w.Spec.ContainerID}):
				r.WorkloadIPProblems = append(r.WorkloadIPProblems, WorkloadIPProblem{w.Namespace, w.Name, a,
					fmt.Sprintf("is allocated to handle %q of another workload", h.Handle)})
			}
		}
	}
	return r
}

// overlap lists the addresses allocated in both of two overlapping blocks.
func overlap(outer, inner *block) Overlap {
	o := Overlap{Blocks: [2]netip.Prefix{outer.CIDR, inner.CIDR}}
	for ord := range inner.Allocations {
		if inner.holder(ord) == nil {
			continue
		}
		a := inner.addr(ord)
		if oo, _ := outer.ordinal(a); outer.holder(oo) != nil {
			o.Addrs = append(o.Addrs, a)
		}
	}
	return o
}
