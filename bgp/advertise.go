package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// ServiceCIDRs are BGPConfiguration's ranges of Service addresses, by kind of address:
// serviceClusterIPs, serviceExternalIPs and serviceLoadBalancerIPs.
type ServiceCIDRs struct {
	ClusterIPs, ExternalIPs, LoadBalancerIPs []netip.Prefix
}

// AdvertInput is everything DesiredAdvertisements reads.
type AdvertInput struct {
	Pools []*api.IPPool
	// Blocks are the IPAM blocks whose affinity to this node is confirmed.
	Blocks []netip.Prefix
	// Addrs are the addresses of this node's workloads; those outside Blocks were borrowed
	// from other nodes' blocks and are advertised as /32 (/128).
	Addrs []netip.Addr
	// Services are the Service CIDRs, advertised whole from every node.
	Services ServiceCIDRs
	// LocalServices are the Services with a ready endpoint on this node (others may be
	// left out: they are never advertised as host routes).
	LocalServices []*api.Service
}

// DesiredAdvertisements returns the prefixes this node originates, sorted: each affine
// block and each borrowed address inside a pool that allows BGP export (a block or address
// in no pool, or in a pool with disableBGPExport, is never advertised), the Service CIDRs,
// and a host route (/32, /128) for each address of a local Service with
// externalTrafficPolicy Local (serviceHostRoutes).
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
	for _, cidrs := range [][]netip.Prefix{in.Services.ClusterIPs, in.Services.ExternalIPs, in.Services.LoadBalancerIPs} {
		for _, s := range cidrs {
			if s.IsValid() {
				set[s.Masked()] = true
			}
		}
	}
	for _, p := range serviceHostRoutes(in.Services, in.LocalServices) {
		set[p] = true
	}
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// serviceHostRoutes returns, as Calico does, a host route for each address of the
// Services of local (those with a ready endpoint on this node) whose
// externalTrafficPolicy is Local: their cluster IPs, external IPs and load-balancer
// ingress IPs that fall inside cidrs' ranges of the same kind. Routers then send a Local
// Service's traffic only to nodes that have an endpoint of it, which keep the client's
// address. Addresses outside the ranges are not advertised at all; a Service with policy
// Cluster, or without a cluster IP (headless, ExternalName), gets no host route (the
// CIDRs cover it from every node).
func serviceHostRoutes(cidrs ServiceCIDRs, local []*api.Service) []netip.Prefix {
	var out []netip.Prefix
	for _, svc := range local {
		if svc.Spec.ExternalTrafficPolicy != api.TrafficPolicyLocal || svc.Spec.Type == api.ServiceTypeExternalName {
			continue
		}
		cluster, err := svc.ClusterAddrs()
		if err != nil || len(cluster) == 0 {
			continue
		}
		for _, k := range []struct {
			addrs []netip.Addr
			in    []netip.Prefix
		}{
			{cluster, cidrs.ClusterIPs},
			{svc.ExternalAddrs(), cidrs.ExternalIPs},
			{svc.LoadBalancerAddrs(), cidrs.LoadBalancerIPs},
		} {
			for _, a := range k.addrs {
				a = a.Unmap()
				if slices.ContainsFunc(k.in, func(p netip.Prefix) bool { return p.Contains(a) }) {
					out = append(out, netip.PrefixFrom(a, a.BitLen()))
				}
			}
		}
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// LargeCommunity is a large BGP community (RFC 8092), "ASN:Local1:Local2".
type LargeCommunity struct{ ASN, Local1, Local2 uint32 }

// Communities are the communities a path carries: standard ones (RFC 1997; "aa:nn" is
// aa<<16 | nn) and large ones, each sorted and without duplicates.
type Communities struct {
	Standard []uint32
	Large    []LargeCommunity
}

// Equal says whether c and o hold the same communities.
func (c Communities) Equal(o Communities) bool {
	return slices.Equal(c.Standard, o.Standard) && slices.Equal(c.Large, o.Large)
}

// IsZero says whether c holds no community.
func (c Communities) IsZero() bool { return len(c.Standard) == 0 && len(c.Large) == 0 }

// add merges o into c, keeping both lists sorted and without duplicates. It never
// writes to the slices c or o hold, which other values may share; a zero c takes o's.
func (c *Communities) add(o Communities) {
	if c.IsZero() {
		*c = o
		return
	}
	c.Standard = slices.Compact(slices.Sorted(slices.Values(append(slices.Clip(c.Standard), o.Standard...))))
	c.Large = slices.CompactFunc(slices.SortedFunc(slices.Values(append(slices.Clip(c.Large), o.Large...)), compareLarge),
		func(a, b LargeCommunity) bool { return a == b })
}

// normalized returns c's communities sorted and without duplicates, in new slices.
func (c Communities) normalized() Communities {
	n := Communities{Standard: slices.Clone(c.Standard), Large: slices.Clone(c.Large)}
	slices.Sort(n.Standard)
	slices.SortFunc(n.Large, compareLarge)
	n.Standard = slices.Compact(n.Standard)
	n.Large = slices.Compact(n.Large)
	return n
}

func compareLarge(a, b LargeCommunity) int {
	return cmp.Or(cmp.Compare(a.ASN, b.ASN), cmp.Compare(a.Local1, b.Local1), cmp.Compare(a.Local2, b.Local2))
}

// PrefixCommunities attaches communities to the advertised routes inside CIDR: one entry
// of BGPConfiguration prefixAdvertisements, names resolved.
type PrefixCommunities struct {
	CIDR        netip.Prefix
	Communities Communities
}

// Advertisement is one prefix this node originates and the communities it carries.
type Advertisement struct {
	Prefix      netip.Prefix
	Communities Communities
}

// WithCommunities returns the advertisements of prefixes, in their order: each carries
// the communities of every rule whose CIDR contains it (the CIDR itself or any prefix
// inside it, as Calico's BIRD filter `net ~ <cidr>` matches), merged. A prefix no rule
// covers carries none; one that a single rule covers shares that rule's slices.
func WithCommunities(prefixes []netip.Prefix, rules []PrefixCommunities) []Advertisement {
	rules = slices.Clone(rules)
	for i := range rules {
		rules[i].Communities = rules[i].Communities.normalized()
	}
	covers := func(r PrefixCommunities, p netip.Prefix) bool {
		return r.CIDR.Bits() <= p.Bits() && r.CIDR.Contains(p.Addr())
	}
	// Prefixes covered by the same rules share one merge (up to 64 rules, by bit mask).
	merged := map[uint64]Communities{}
	out := make([]Advertisement, 0, len(prefixes))
	for _, p := range prefixes {
		a := Advertisement{Prefix: p}
		var mask uint64
		if len(rules) <= 64 {
			for i, r := range rules {
				if covers(r, p) {
					mask |= 1 << i
				}
			}
			if c, ok := merged[mask]; ok {
				a.Communities = c
				out = append(out, a)
				continue
			}
		}
		for _, r := range rules {
			if covers(r, p) {
				a.Communities.add(r.Communities)
			}
		}
		if len(rules) <= 64 {
			merged[mask] = a.Communities
		}
		out = append(out, a)
	}
	return out
}

// String writes c as BIRD and Calico do: "(aa,nn)" and "(aa,nn,mm)", space separated.
func (c Communities) String() string {
	var b strings.Builder
	for _, v := range c.Standard {
		fmt.Fprintf(&b, " (%d,%d)", v>>16, v&0xffff)
	}
	for _, l := range c.Large {
		fmt.Fprintf(&b, " (%d,%d,%d)", l.ASN, l.Local1, l.Local2)
	}
	return strings.TrimPrefix(b.String(), " ")
}
