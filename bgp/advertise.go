package bgp

import (
	"net/netip"
	"slices"

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
