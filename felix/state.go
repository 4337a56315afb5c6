package felix

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// LocalState is what this node's dataplane must serve: the workloads attached to it and the
// IPAM blocks affine to it.
type LocalState struct {
	Workloads []Workload
	// Blocks are the IPAM blocks whose affinity to this node is confirmed.
	Blocks []netip.Prefix
	// Learned are routes to other nodes' destinations that BGP learned, each of type
	// RouteGateway. A learned route whose destination a local route holds is dropped.
	Learned []Route
	// HoldLearned keeps the kernel's gateway routes of RouteProtocol that Learned does not
	// list, instead of deleting them: a restarting agent sets it until BGP has heard
	// End-of-RIB from its peers, so routes a previous run installed keep carrying traffic.
	HoldLearned bool
	// Encap, when set, adds its routes to remote blocks of VXLAN pools (they win over
	// learned routes) and sends learned routes to IPIP pools' blocks through IPIPDevice
	// where the pool's mode says so (see DesiredEncap).
	Encap *Encap
}

// Workload is one local workload endpoint: its host-side interface and its addresses.
type Workload struct {
	Name      string // "namespace/name", for logs
	Interface string // host side of the workload's veth
	Addrs     []netip.Addr
}

// RouteType says what a route does with the packets it matches.
type RouteType uint8

const (
	// RouteUnicast sends packets out of Route.Interface (a workload's veth).
	RouteUnicast RouteType = iota
	// RouteBlackhole drops packets: a block's free addresses die here instead of looping
	// between this node and its default route.
	RouteBlackhole
	// RouteGateway sends packets to Route.Gateway, through Route.Interface if it is set (the
	// kernel picks the interface otherwise), treating the gateway as directly attached when
	// Route.OnLink is set. BGP's learned routes are of this type.
	RouteGateway
)

func (t RouteType) String() string {
	switch t {
	case RouteUnicast:
		return "unicast"
	case RouteBlackhole:
		return "blackhole"
	case RouteGateway:
		return "gateway"
	}
	return fmt.Sprintf("RouteType(%d)", uint8(t))
}

// Route is one route felix owns. It is a comparable value: two routes are the same route
// exactly when they are ==. Later kinds (tunnels) add fields here.
type Route struct {
	Dst       netip.Prefix
	Type      RouteType
	Interface string     // RouteUnicast: the device; RouteGateway: the device or empty
	Gateway   netip.Addr // RouteGateway: the next hop
	OnLink    bool       // RouteGateway: the next hop is on Interface even if no subnet says so
}

// String formats the route as `ip route` would.
func (r Route) String() string {
	switch r.Type {
	case RouteUnicast:
		return fmt.Sprintf("%s dev %s", r.Dst, r.Interface)
	case RouteBlackhole:
		return "blackhole " + r.Dst.String()
	case RouteGateway:
		s := fmt.Sprintf("%s via %s", r.Dst, r.Gateway)
		if r.Interface != "" {
			s += " dev " + r.Interface
		}
		if r.OnLink {
			s += " onlink"
		}
		return s
	}
	return fmt.Sprintf("%s %s", r.Type, r.Dst)
}

// Rejection is a workload address DesiredRoutes left without a route, and why.
type Rejection struct {
	Workload string
	Addr     netip.Addr
	Reason   string
}

func (r Rejection) String() string {
	return fmt.Sprintf("%s %s: %s", r.Workload, r.Addr, r.Reason)
}

// DesiredRoutes returns the routes the node needs for s, sorted (IPv4 first, then by
// destination): a /32 or /128 to each workload address through its interface, and a
// blackhole for each block, and the learned routes. A workload route inside a block is more
// specific, so both coexist; a workload route equal to its block (a /32 block) replaces the
// blackhole. Local routes win over learned routes for the same destination; a learned route
// that is not a valid gateway route is dropped.
//
// An address claimed by two workloads is routed to the one whose name sorts first, so
// every agent and every pass agrees; the other is returned as a Rejection, as are
// workloads without an interface and invalid addresses.
func DesiredRoutes(s LocalState) ([]Route, []Rejection) {
	byDst, rejected := desiredLocal(s, len(s.Learned))
	for _, r := range s.Learned {
		if r, ok := s.learnedRoute(r); ok {
			if _, ok := byDst[r.Dst]; !ok {
				byDst[r.Dst] = r
			}
		}
	}
	return sortedRoutes(byDst), rejected
}

func sortedRoutes(byDst map[netip.Prefix]Route) []Route {
	routes := make([]Route, 0, len(byDst))
	for _, r := range byDst {
		routes = append(routes, r)
	}
	slices.SortFunc(routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	return routes
}

// learnedRoute is the route felix installs for learned route r (see DesiredRoutes), and
// false if r is not a valid gateway route.
func (s LocalState) learnedRoute(r Route) (Route, bool) {
	if r.Type != RouteGateway || !r.Dst.IsValid() || !r.Gateway.IsValid() {
		return Route{}, false
	}
	r.Dst, r.Gateway = r.Dst.Masked(), r.Gateway.Unmap()
	return s.Encap.encapLearned(r), true
}

// desiredLocal is DesiredRoutes without the learned routes: the routes of the node's
// workloads, blocks and encapsulation, by destination, in a map with room for extra more
// (the learned routes the caller adds: a full table's map grown step by step leaves
// each smaller one behind as garbage).
func desiredLocal(s LocalState, extra int) (map[netip.Prefix]Route, []Rejection) {
	workloads := slices.Clone(s.Workloads)
	slices.SortStableFunc(workloads, func(a, b Workload) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Interface, b.Interface))
	})

	owner := make(map[netip.Prefix]string) // destination -> workload routed to
	byDst := make(map[netip.Prefix]Route, len(s.Blocks)+len(workloads)+extra)
	var rejected []Rejection
	for _, w := range workloads {
		for _, a := range w.Addrs {
			switch {
			case !a.IsValid():
				rejected = append(rejected, Rejection{w.Name, a, "invalid address"})
				continue
			case w.Interface == "":
				rejected = append(rejected, Rejection{w.Name, a, "workload has no interface"})
				continue
			}
			a = a.Unmap()
			dst := netip.PrefixFrom(a, a.BitLen())
			if first, ok := owner[dst]; ok {
				if first != w.Name || byDst[dst].Interface != w.Interface {
					rejected = append(rejected, Rejection{w.Name, a, "address also claimed by " + first + ", which is routed to"})
				}
				continue
			}
			owner[dst] = w.Name
			byDst[dst] = Route{Dst: dst, Type: RouteUnicast, Interface: w.Interface}
		}
	}
	for _, b := range s.Blocks {
		if !b.IsValid() {
			continue
		}
		b = b.Masked()
		if _, ok := byDst[b]; !ok {
			byDst[b] = Route{Dst: b, Type: RouteBlackhole}
		}
	}
	if s.Encap != nil {
		for _, r := range s.Encap.Routes {
			if _, ok := byDst[r.Dst]; !ok && r.Dst.IsValid() {
				byDst[r.Dst] = r
			}
		}
	}
	return byDst, rejected
}

// comparePrefix orders IPv4 before IPv6, then by address, then shorter prefixes first.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(
		cmp.Compare(a.Addr().BitLen(), b.Addr().BitLen()),
		a.Addr().Compare(b.Addr()),
		cmp.Compare(a.Bits(), b.Bits()),
	)
}
