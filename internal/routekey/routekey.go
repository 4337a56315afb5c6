// Package routekey holds destinations and next hops as values without pointers, for the
// maps that hold a full BGP table (bgp's learned paths, felix's learned routes). A
// netip.Prefix key is 32 bytes and a netip.Addr 24, each with a pointer that the garbage
// collector follows in every entry; a Prefix here is 18 bytes and an Addr 17, and a map of
// them is never scanned. IPv6 zones are not kept: routes have none.
package routekey

import "net/netip"

// Prefix is a netip.Prefix as a comparable value without pointers; the zero Prefix is the
// invalid one.
type Prefix struct {
	addr Addr
	bits uint8
}

// Addr is a netip.Addr as a comparable value without pointers; the zero Addr is the
// invalid one.
type Addr struct {
	a   [16]byte
	fam uint8 // 0 invalid, 4 or 6
}

// AddrOf returns a's key (an IPv4-mapped IPv6 address stays IPv6).
func AddrOf(a netip.Addr) Addr {
	switch {
	case a.Is4():
		return Addr{a: a.As16(), fam: 4}
	case a.Is6():
		return Addr{a: a.As16(), fam: 6}
	}
	return Addr{}
}

// Addr returns the address k holds.
func (k Addr) Addr() netip.Addr {
	switch k.fam {
	case 4:
		return netip.AddrFrom16(k.a).Unmap()
	case 6:
		return netip.AddrFrom16(k.a)
	}
	return netip.Addr{}
}

// PrefixOf returns p's key; an invalid p gives the zero Prefix.
func PrefixOf(p netip.Prefix) Prefix {
	if !p.IsValid() {
		return Prefix{}
	}
	return Prefix{addr: AddrOf(p.Addr()), bits: uint8(p.Bits())}
}

// Prefix returns the prefix k holds.
func (k Prefix) Prefix() netip.Prefix {
	if k.addr.fam == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(k.addr.Addr(), int(k.bits))
}
