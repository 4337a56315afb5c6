package ipam

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func TestBlockArithmetic(t *testing.T) {
	for _, tc := range []struct {
		pool      string
		blockSize int
		i         uint64
		want      string
		count     uint64
	}{
		{"10.244.0.0/16", 26, 0, "10.244.0.0/26", 1024},
		{"10.244.0.0/16", 26, 5, "10.244.1.64/26", 1024},
		{"10.244.0.0/16", 26, 1023, "10.244.255.192/26", 1024},
		{"10.0.0.0/24", 32, 255, "10.0.0.255/32", 256},
		{"fd00:10:244::/48", 122, 1, "fd00:10:244::40/122", 1 << 63},
		// Crossing from the low into the high 64 bits of the address.
		{"fd00::/56", 64, 3, "fd00:0:0:3::/64", 256},
		{"fd00::/56", 122, 1 << 58, "fd00:0:0:1::/122", 1 << 63},
	} {
		if got := nthBlock(mustPrefix(tc.pool), tc.blockSize, tc.i); got.String() != tc.want {
			t.Errorf("nthBlock(%s, /%d, %d) = %s, want %s", tc.pool, tc.blockSize, tc.i, got, tc.want)
		}
		if got := blockCount(mustPrefix(tc.pool), tc.blockSize); got != tc.count {
			t.Errorf("blockCount(%s, /%d) = %d, want %d", tc.pool, tc.blockSize, got, tc.count)
		}
	}
	if got := blockOf(mustAddr("10.244.1.77"), 26); got != mustPrefix("10.244.1.64/26") {
		t.Errorf("blockOf = %s", got)
	}
	if got := addressCount(mustPrefix("fd00::/48")).String(); got != "1208925819614629174706176" {
		t.Errorf("addressCount(/48) = %s", got)
	}
	for _, s := range []string{"10.244.1.64/26", "fd00:10:244::40/122", "0.0.0.0/0"} {
		p := mustPrefix(s)
		if got, err := parseCIDRKey(cidrKey(p)); err != nil || got != p {
			t.Errorf("parseCIDRKey(cidrKey(%s)) = %s, %v", p, got, err)
		}
	}
	for _, bad := range []string{"10.244.1.65-26", "10.244.1.64", "x-26", "10.0.0.0-33"} {
		if _, err := parseCIDRKey(bad); err == nil {
			t.Errorf("parseCIDRKey(%q) accepted", bad)
		}
	}
	node, cidr, err := parseAffinityKey(affinityKey("node-1", mustPrefix("fd00::40/122")))
	if err != nil || node != "node-1" || cidr != mustPrefix("fd00::40/122") {
		t.Errorf("parseAffinityKey round trip: %s %s %v", node, cidr, err)
	}
}

func TestFreeBlock(t *testing.T) {
	pool := mustPrefix("10.0.0.0/24") // 4 blocks of /26
	taken := map[netip.Prefix]bool{}
	var got []string
	for {
		b, ok := freeBlock(pool, 26, 2, taken)
		if !ok {
			break
		}
		taken[b] = true
		got = append(got, b.String())
	}
	// From block 2 upwards, wrapping; blocks of other pools or sizes do not count.
	want := "10.0.0.128/26 10.0.0.192/26 10.0.0.0/26 10.0.0.64/26"
	if strings.Join(got, " ") != want {
		t.Errorf("claim order %s, want %s", got, want)
	}
	taken = map[netip.Prefix]bool{mustPrefix("10.0.1.0/26"): true, mustPrefix("10.0.0.0/28"): true}
	if b, ok := freeBlock(pool, 26, 0, taken); !ok || b != mustPrefix("10.0.0.0/26") {
		t.Errorf("freeBlock with unrelated blocks taken = %s %t", b, ok)
	}
}

func TestBlockAllocateRelease(t *testing.T) {
	b := newBlock(mustPrefix("10.0.0.0/29"), "node1", 1000)
	attrs := map[string]string{AttrNode: "node1"}
	ords := b.autoAssign(3, "h1", attrs)
	if !slices.Equal(ords, []int{0, 1, 2}) || b.free() != 5 {
		t.Fatalf("autoAssign(3) = %v, free %d", ords, b.free())
	}
	if b.seqOf(0) != 1000 || b.seqOf(2) != 1002 || b.SequenceNumber != 1003 {
		t.Errorf("sequence numbers %d %d, next %d", b.seqOf(0), b.seqOf(2), b.SequenceNumber)
	}
	if err := b.assign(5, "h2", map[string]string{AttrNode: "node2"}); err != nil {
		t.Fatal(err)
	}
	if err := b.assign(5, "h3", nil); err == nil {
		t.Error("assigning an allocated ordinal succeeded")
	}
	if len(b.Attributes) != 2 || b.holder(5).Handle != "h2" || b.holder(1).Handle != "h1" {
		t.Errorf("attributes %+v", b.Attributes)
	}
	// Freed ordinals go to the end, so they are handed out last.
	b.release([]int{1, 0})
	if want := []int{3, 4, 6, 7, 1, 0}; !slices.Equal(b.Unallocated, want) {
		t.Errorf("unallocated %v, want %v", b.Unallocated, want)
	}
	b.release([]int{2})
	// h1's entry is gone; h2's was renumbered.
	if len(b.Attributes) != 1 || b.holder(5).Handle != "h2" || *b.Allocations[5] != 0 {
		t.Errorf("after releasing h1: attributes %+v, allocation of 5 = %v", b.Attributes, *b.Allocations[5])
	}
	if err := b.validate(); err != nil {
		t.Error(err)
	}
	if got := b.autoAssign(10, "h4", nil); !slices.Equal(got, []int{3, 4, 6, 7, 1, 0, 2}) {
		t.Errorf("autoAssign(10) on 7 free = %v", got)
	}
	if b.free() != 0 || b.inUse() != 8 || b.handleCounts()["h4"] != 7 {
		t.Errorf("full block: free %d, in use %d, counts %v", b.free(), b.inUse(), b.handleCounts())
	}

	// The stored form is Calico's shape and reads back equal.
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"cidr":"10.0.0.0/29"`, `"affinity":"host:node1"`, `"allocations":[`, `"unallocated":[]`, `"handle_id":"h2"`, `"sequenceNumberForAllocation":{`} {
		if !strings.Contains(string(data), field) {
			t.Errorf("stored block lacks %s: %s", field, data)
		}
	}
	var back block
	if err := json.Unmarshal(data, &back); err != nil || back.validate() != nil || back.holder(5).Handle != "h2" {
		t.Errorf("read back: %v %v", err, back.validate())
	}
}

func TestBlockAddressesIPv6(t *testing.T) {
	b := newBlock(mustPrefix("fd00::ffc0/122"), "n", 1)
	if b.size() != 64 || b.addr(63) != mustAddr("fd00::ffff") {
		t.Errorf("size %d, last %s", b.size(), b.addr(63))
	}
	if ord, ok := b.ordinal(mustAddr("fd00::ffd0")); !ok || ord != 16 {
		t.Errorf("ordinal = %d %t", ord, ok)
	}
	if _, ok := b.ordinal(mustAddr("fd00::1:0")); ok {
		t.Error("address outside the block has an ordinal")
	}
}

func TestBlockValidate(t *testing.T) {
	for name, corrupt := range map[string]func(b *block){
		"listed twice":       func(b *block) { b.Unallocated = append(b.Unallocated, b.Unallocated[0]) },
		"neither":            func(b *block) { b.Unallocated = b.Unallocated[1:] },
		"both":               func(b *block) { b.Unallocated = append(b.Unallocated, 0) },
		"bad attribute":      func(b *block) { i := 7; b.Allocations[0] = &i },
		"missing seq":        func(b *block) { clear(b.SequenceNumberForAllocation) },
		"seq from future":    func(b *block) { b.SequenceNumber = 0 },
		"unused attribute":   func(b *block) { b.Attributes = append(b.Attributes, attribute{Handle: "x"}) },
		"short":              func(b *block) { b.Allocations = b.Allocations[:4] },
		"affinity":           func(b *block) { b.Affinity = "virtual:x" },
		"host bits in cidr":  func(b *block) { b.CIDR = mustPrefix("10.0.0.1/29") },
		"out of range ord":   func(b *block) { b.Unallocated[0] = 99 },
		"stray seq for free": func(b *block) { b.SequenceNumberForAllocation["7"] = 1 },
	} {
		b := newBlock(mustPrefix("10.0.0.0/29"), "n", 10)
		b.autoAssign(2, "h", nil)
		corrupt(b)
		if err := b.validate(); err == nil {
			t.Errorf("%s: validate passed", name)
		}
	}
}
