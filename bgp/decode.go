package bgp

import (
	"fmt"
	"net/netip"

	gobgpapi "github.com/osrg/gobgp/v3/api"
)

// pathDst and pathNextHop read a watched path's prefix and next hop from GoBGP's API form
// by unpacking only those two messages: apiutil's GetNativeNlri and
// GetNativePathAttributes convert the NLRI and every attribute into GoBGP's native types,
// which cost most of the speaker's own time on a full table.
func pathDst(p *gobgpapi.Path) (netip.Prefix, error) {
	var n gobgpapi.IPAddressPrefix
	if err := p.GetNlri().UnmarshalTo(&n); err != nil {
		return netip.Prefix{}, fmt.Errorf("NLRI: %w", err)
	}
	a, err := netip.ParseAddr(n.Prefix)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("NLRI: %w", err)
	}
	dst := netip.PrefixFrom(a.Unmap(), int(n.PrefixLen))
	if !dst.IsValid() {
		return netip.Prefix{}, fmt.Errorf("NLRI %s/%d: invalid", n.Prefix, n.PrefixLen)
	}
	return dst, nil
}

// pathNextHop returns the path's next hop (NEXT_HOP, or MP_REACH_NLRI's first); the zero
// Addr if it has none.
func pathNextHop(p *gobgpapi.Path) netip.Addr {
	var nh netip.Addr
	for _, a := range p.GetPattrs() {
		switch {
		case a.MessageIs((*gobgpapi.NextHopAttribute)(nil)):
			var v gobgpapi.NextHopAttribute
			if a.UnmarshalTo(&v) == nil {
				nh, _ = netip.ParseAddr(v.NextHop)
			}
		case a.MessageIs((*gobgpapi.MpReachNLRIAttribute)(nil)):
			var v gobgpapi.MpReachNLRIAttribute
			if a.UnmarshalTo(&v) == nil && len(v.NextHops) > 0 {
				nh, _ = netip.ParseAddr(v.NextHops[0])
			}
		}
	}
	return nh.Unmap()
}
