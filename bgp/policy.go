package bgp

import (
	"slices"

	gobgpapi "github.com/osrg/gobgp/v3/api"
)

// Names of the export policy and the neighbor sets it reads.
const (
	exportPolicyName = "tabby-export"
	ibgpSetName      = "tabby-ibgp"
	keepNextHopSet   = "tabby-keep-next-hop"
	// placeholder keeps a neighbor set non-empty: GoBGP refuses empty sets. No peer has
	// the broadcast address.
	placeholder = "255.255.255.255/32"
)

// exportPolicy is the global export policy: this node's own routes go to every peer;
// routes learned over iBGP go to iBGP peers (GoBGP itself sends them only where BGP allows:
// a route reflector's clients, or from a client to the others) and, with their next hop
// unchanged, to peers with keepOriginalNextHop; everything else, routes learned from eBGP
// peers above all, is rejected, so tabby never passes one external peer's routes to another.
func exportPolicy() *gobgpapi.Policy {
	return &gobgpapi.Policy{
		Name: exportPolicyName,
		Statements: []*gobgpapi.Statement{
			{
				Name:       "tabby-export-local",
				Conditions: &gobgpapi.Conditions{RouteType: gobgpapi.Conditions_ROUTE_TYPE_LOCAL},
				Actions:    &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ACCEPT},
			},
			{
				Name: "tabby-export-keep-next-hop",
				Conditions: &gobgpapi.Conditions{
					RouteType:   gobgpapi.Conditions_ROUTE_TYPE_INTERNAL,
					NeighborSet: &gobgpapi.MatchSet{Type: gobgpapi.MatchSet_ANY, Name: keepNextHopSet},
				},
				Actions: &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ACCEPT, Nexthop: &gobgpapi.NexthopAction{Unchanged: true}},
			},
			{
				Name: "tabby-export-ibgp",
				Conditions: &gobgpapi.Conditions{
					RouteType:   gobgpapi.Conditions_ROUTE_TYPE_INTERNAL,
					NeighborSet: &gobgpapi.MatchSet{Type: gobgpapi.MatchSet_ANY, Name: ibgpSetName},
				},
				Actions: &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ACCEPT},
			},
		},
	}
}

// neighborSets returns the members of the policy's neighbor sets for peers, sorted, each
// with the placeholder.
func neighborSets(peers []Peer, localASN uint32) (ibgp, keepNextHop []string) {
	ibgp, keepNextHop = []string{placeholder}, []string{placeholder}
	for _, p := range peers {
		m := p.Addr.String() + "/" + map[bool]string{true: "32", false: "128"}[p.Addr.Is4()]
		if p.IBGP(localASN) {
			ibgp = append(ibgp, m)
		}
		if p.KeepOriginalNextHop {
			keepNextHop = append(keepNextHop, m)
		}
	}
	slices.Sort(ibgp)
	slices.Sort(keepNextHop)
	return ibgp, keepNextHop
}
