package bgp

import (
	"net/netip"
	"slices"

	"github.com/tabby-net/tabby/api"
)

// AdvertInput is everything DesiredAdvertisements reads.
type AdvertInput struct {
	Pools []*api.IPPool
	// Blocks are the IPAM blocks whose affinity to this node is confirmed.
	Blocks []netip.Prefix
	// Addrs are the addresses of this node's workloads; those outside Blocks were borrowed
	// from other nodes' blocks and are advertised as /32 (/128).
	Addrs []netip.Addr
	// ServiceCIDRs are BGPConfiguration's serviceClusterIPs and serviceExternalIPs.
	ServiceCIDRs []netip.Prefix
}

// DesiredAdvertisements returns the prefixes this node originates, sorted: each affine
// block and each borrowed address inside a pool that allows BGP export (a block or address
// in no pool, or in a pool with disableBGPExport, is never advertised), and the Service
// CIDRs.
func DesiredAdvertisements(in AdvertInput) []netip.Prefix {
	type pool struct {
		p      netip.Prefix
		export bool
	}
	var pools []pool
	for _, p := range in.Pools {
		if pfx, err := p.Prefix(); err == nil {
			pools = append(pools, pool{pfx, !p.Spec.DisableBGPExport})
		}
	}
	// exportable: inside a pool, and the most specific pool containing it allows export.
	exportable := func(x netip.Prefix) bool {
		best := -1
		ok := false
		for _, p := range pools {
			if p.p.Bits() <= x.Bits() && p.p.Contains(x.Addr()) && p.p.Bits() > best {
				best, ok = p.p.Bits(), p.export
			}
		}
		return ok
	}
	set := map[netip.Prefix]bool{}
	for _, b := range in.Blocks {
		if b = b.Masked(); b.IsValid() && exportable(b) {
			set[b] = true
		}
	}
	for _, a := range in.Addrs {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap()
		if slices.ContainsFunc(in.Blocks, func(b netip.Prefix) bool { return b.Contains(a) }) {
			continue
		}
		if p := netip.PrefixFrom(a, a.BitLen()); exportable(p) {
			set[p] = true
		}
	}
	for _, s := range in.ServiceCIDRs {
		if s.IsValid() {
			set[s.Masked()] = true
		}
	}
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
