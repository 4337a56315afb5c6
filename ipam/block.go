package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// block is one block as stored at blocks/<cidr>, in the shape of Calico's
// AllocationBlock: ordinal i is the address CIDR.Addr()+i; Allocations[i] is the index
// of its Attributes entry, nil when free; Unallocated lists the free ordinals in the
// order they are handed out (freed ordinals go to the end, so a released address is
// reused last).
type block struct {
	CIDR netip.Prefix `json:"cidr"`
	// Affinity is "host:<node>" for the node that claimed the block; empty once no node
	// has it (its node was deleted).
	Affinity    string      `json:"affinity,omitempty"`
	Allocations []*int      `json:"allocations"`
	Unallocated []int       `json:"unallocated"`
	Attributes  []attribute `json:"attributes"`
	// SequenceNumber is the number the next allocation gets; it starts at the block's
	// creation time in nanoseconds, so a deleted and re-created block never repeats one.
	SequenceNumber uint64 `json:"sequenceNumber"`
	// SequenceNumberForAllocation maps each allocated ordinal (decimal) to the sequence
	// number it was allocated with. A release that names a different one is stale.
	SequenceNumberForAllocation map[string]uint64 `json:"sequenceNumberForAllocation"`
}

// attribute is who holds an allocation: the handle and its attributes. Allocations with
// equal handle and attributes share one entry.
type attribute struct {
	Handle    string            `json:"handle_id"`
	Secondary map[string]string `json:"secondary,omitempty"`
}

const affinityHostPrefix = "host:"

func hostAffinity(node string) string { return affinityHostPrefix + node }

func newBlock(cidr netip.Prefix, node string, seq uint64) *block {
	n := 1 << hostBits(cidr.Addr(), cidr.Bits())
	b := &block{
		CIDR:                        cidr,
		Affinity:                    hostAffinity(node),
		Allocations:                 make([]*int, n),
		Unallocated:                 make([]int, n),
		Attributes:                  []attribute{},
		SequenceNumber:              seq,
		SequenceNumberForAllocation: map[string]uint64{},
	}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	return b
}

// node is the node the block is affine to, "" for none.
func (b *block) node() string { return strings.TrimPrefix(b.Affinity, affinityHostPrefix) }

func (b *block) size() int { return len(b.Allocations) }

func (b *block) free() int { return len(b.Unallocated) }

func (b *block) inUse() int { return b.size() - b.free() }

func (b *block) addr(ord int) netip.Addr { return addrAt(b.CIDR.Addr(), uint64(ord)) }

// ordinal is a's position in the block, false if a is outside it.
func (b *block) ordinal(a netip.Addr) (int, bool) {
	if !b.CIDR.Contains(a) {
		return 0, false
	}
	u, base := toU128(a), toU128(b.CIDR.Addr())
	return int(u.lo - base.lo), true
}

// holder is the attribute of an allocated ordinal, nil if it is free.
func (b *block) holder(ord int) *attribute {
	if i := b.Allocations[ord]; i != nil {
		return &b.Attributes[*i]
	}
	return nil
}

func (b *block) seqOf(ord int) uint64 { return b.SequenceNumberForAllocation[strconv.Itoa(ord)] }

// attributeIndex finds or adds the entry for handle and attrs.
func (b *block) attributeIndex(handle string, attrs map[string]string) int {
	for i, a := range b.Attributes {
		if a.Handle == handle && maps.Equal(a.Secondary, attrs) {
			return i
		}
	}
	b.Attributes = append(b.Attributes, attribute{Handle: handle, Secondary: maps.Clone(attrs)})
	return len(b.Attributes) - 1
}

func (b *block) take(ord, attr int) {
	b.Allocations[ord] = &attr
	b.SequenceNumberForAllocation[strconv.Itoa(ord)] = b.SequenceNumber
	b.SequenceNumber++
}

// autoAssign allocates up to n free ordinals, first in Unallocated order, and returns them.
func (b *block) autoAssign(n int, handle string, attrs map[string]string) []int {
	n = min(n, b.free())
	if n == 0 {
		return nil
	}
	attr := b.attributeIndex(handle, attrs)
	ords := slices.Clone(b.Unallocated[:n])
	b.Unallocated = b.Unallocated[n:]
	for _, ord := range ords {
		b.take(ord, attr)
	}
	return ords
}

var errAllocated = errors.New("already allocated")

// assign allocates one given ordinal.
func (b *block) assign(ord int, handle string, attrs map[string]string) error {
	i := slices.Index(b.Unallocated, ord)
	if i < 0 {
		return fmt.Errorf("%s: %w", b.addr(ord), errAllocated)
	}
	b.Unallocated = slices.Delete(b.Unallocated, i, i+1)
	b.take(ord, b.attributeIndex(handle, attrs))
	return nil
}

// release frees allocated ordinals (appending them to Unallocated in the order given)
// and drops attribute entries no allocation uses any more.
func (b *block) release(ords []int) {
	for _, ord := range ords {
		b.Allocations[ord] = nil
		b.Unallocated = append(b.Unallocated, ord)
		delete(b.SequenceNumberForAllocation, strconv.Itoa(ord))
	}
	used := make([]bool, len(b.Attributes))
	for _, i := range b.Allocations {
		if i != nil {
			used[*i] = true
		}
	}
	renumber := make([]int, len(b.Attributes))
	kept := b.Attributes[:0]
	for i, a := range b.Attributes {
		renumber[i] = len(kept)
		if used[i] {
			kept = append(kept, a)
		}
	}
	b.Attributes = kept
	for ord, i := range b.Allocations {
		if i != nil {
			n := renumber[*i]
			b.Allocations[ord] = &n
		}
	}
}

// handleCounts counts the block's allocations per handle.
func (b *block) handleCounts() map[string]int {
	counts := map[string]int{}
	for _, i := range b.Allocations {
		if i != nil {
			counts[b.Attributes[*i].Handle]++
		}
	}
	return counts
}

// validate checks the block's internal consistency: every ordinal either allocated
// (with a valid attribute and a sequence number below the block's) or listed once in
// Unallocated, and no stray attribute or sequence number.
func (b *block) validate() error {
	if !b.CIDR.IsValid() || b.CIDR.Masked() != b.CIDR {
		return fmt.Errorf("cidr %s is not a network address", b.CIDR)
	}
	if want := 1 << hostBits(b.CIDR.Addr(), b.CIDR.Bits()); b.size() != want {
		return fmt.Errorf("%d allocation slots, want %d", b.size(), want)
	}
	if b.Affinity != "" && (!strings.HasPrefix(b.Affinity, affinityHostPrefix) || b.node() == "") {
		return fmt.Errorf("affinity %q: want host:<node>", b.Affinity)
	}
	listed := make([]bool, b.size())
	for _, ord := range b.Unallocated {
		switch {
		case ord < 0 || ord >= b.size():
			return fmt.Errorf("unallocated ordinal %d out of range", ord)
		case listed[ord]:
			return fmt.Errorf("ordinal %d listed twice as unallocated", ord)
		case b.Allocations[ord] != nil:
			return fmt.Errorf("%s is both allocated and unallocated", b.addr(ord))
		}
		listed[ord] = true
	}
	used := make([]bool, len(b.Attributes))
	for ord, i := range b.Allocations {
		switch {
		case i == nil && !listed[ord]:
			return fmt.Errorf("%s is neither allocated nor unallocated", b.addr(ord))
		case i == nil:
			continue
		case *i < 0 || *i >= len(b.Attributes):
			return fmt.Errorf("%s: attribute index %d out of range", b.addr(ord), *i)
		}
		used[*i] = true
		seq, ok := b.SequenceNumberForAllocation[strconv.Itoa(ord)]
		if !ok || seq >= b.SequenceNumber {
			return fmt.Errorf("%s: sequence number %d missing or not below the block's %d", b.addr(ord), seq, b.SequenceNumber)
		}
	}
	if len(b.SequenceNumberForAllocation) != b.inUse() {
		return fmt.Errorf("%d sequence numbers for %d allocations", len(b.SequenceNumberForAllocation), b.inUse())
	}
	if i := slices.Index(used, false); i >= 0 {
		return fmt.Errorf("attribute %d (handle %q) is unused", i, b.Attributes[i].Handle)
	}
	return nil
}
