package ipam

import (
	"encoding/binary"
	"hash/fnv"
	"math/big"
	"math/bits"
	"net/netip"
)

// u128 is an address as a 128-bit number (IPv4 in the low 32 bits), for arithmetic
// that works the same in both families.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// addr converts back, to IPv4 when is4 (the value must then fit in ::ffff:0:0/96).
func (u u128) addr(is4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	a := netip.AddrFrom16(b)
	if is4 {
		return a.Unmap()
	}
	return a
}

func (u u128) add(v u128) u128 {
	lo, carry := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, carry)
	return u128{hi, lo}
}

// shl shifts left by n < 128.
func (u u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return u
	case n >= 64:
		return u128{u.lo << (n - 64), 0}
	default:
		return u128{u.hi<<n | u.lo>>(64-n), u.lo << n}
	}
}

// addrAt is base + off.
func addrAt(base netip.Addr, off uint64) netip.Addr {
	return toU128(base).add(u128{0, off}).addr(base.Is4())
}

// hostBits is the number of addresses' bits a prefix of length bits leaves free in a's family.
func hostBits(a netip.Addr, bits int) uint { return uint(a.BitLen() - bits) }

// blockOf is the block of size blockSize that holds a.
func blockOf(a netip.Addr, blockSize int) netip.Prefix {
	return netip.PrefixFrom(a, blockSize).Masked()
}

// blockCount is how many blocks of blockSize a pool holds, saturated at 2^63 (an IPv6
// pool can hold more than any count we need to tell apart).
func blockCount(pool netip.Prefix, blockSize int) uint64 {
	n := blockSize - pool.Bits()
	if n >= 63 {
		return 1 << 63
	}
	return 1 << n
}

// nthBlock is the pool's block number i (i < blockCount).
func nthBlock(pool netip.Prefix, blockSize int, i uint64) netip.Prefix {
	base := toU128(pool.Addr()).add(u128{0, i}.shl(hostBits(pool.Addr(), blockSize)))
	return netip.PrefixFrom(base.addr(pool.Addr().Is4()), blockSize)
}

// addressCount is how many addresses a prefix holds.
func addressCount(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), hostBits(p.Addr(), p.Bits()))
}

// nodeHash spreads nodes over a pool's blocks so that nodes claiming at once mostly try
// different blocks, and one node's blocks tend to be neighbours.
func nodeHash(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}

// freeBlock returns a block of the pool that taken does not hold, searching from block
// number start%count upwards (wrapping), or false when every block is taken. taken holds
// the existing blocks; those outside the pool do not count.
func freeBlock(pool netip.Prefix, blockSize int, start uint64, taken map[netip.Prefix]bool) (netip.Prefix, bool) {
	count := blockCount(pool, blockSize)
	inPool := uint64(0)
	for b := range taken {
		if b.Bits() == blockSize && pool.Contains(b.Addr()) {
			inPool++
		}
	}
	// Of inPool+1 consecutive blocks at least one is free, if any is.
	for i := range min(count, inPool+1) {
		b := nthBlock(pool, blockSize, (start+i)%count)
		if !taken[b] {
			return b, true
		}
	}
	return netip.Prefix{}, false
}
