package felix

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol is the rtnetlink protocol number on every route felix installs, so that
// `ip route show proto 116` lists exactly tabby's routes and felix never touches a route
// of any other protocol. 116 is ASCII 't'. It is in no iproute2 rt_protos file and used by
// none of the kernel (2), boot (3), static (4), zebra (11), BIRD (12), DHCP (16), Calico's
// felix (80; its workload routes use boot), OpenR (99) or FRR's bgp/isis/ospf/rip/eigrp
// (186-192), so tabby can share a host with any of them.
const RouteProtocol = 116

const (
	// ip6DefaultMetric is the metric the kernel gives an IPv6 route added without one
	// (IP6_RT_PRIO_USER); IPv4 routes keep 0.
	ip6DefaultMetric = 1024
	// maxErrors bounds the errors one pass reports; the rest are counted.
	maxErrors = 10
)

// Stats counts what one reconciliation pass did.
type Stats struct {
	Added, Replaced, Deleted int
	// Skipped are desired routes not programmed this pass; the next pass retries them.
	Skipped []SkippedRoute
	// Programmed is how many routes of RouteProtocol the table holds after the pass.
	Programmed int
	listed     bool // the pass read the table's routes, so Programmed is known
}

// SkippedRoute is a desired route felix could not program, and why.
type SkippedRoute struct {
	Route  Route
	Reason string
}

func (s SkippedRoute) String() string { return s.Route.String() + ": " + s.Reason }

// Changed reports whether the pass wrote to the kernel.
func (s Stats) Changed() bool { return s.Added+s.Replaced+s.Deleted > 0 }

// heldByOther is why a route whose destination another protocol's route holds is skipped.
const heldByOther = "destination held by a route of another protocol"

// RouteReconciler makes one routing table's routes of RouteProtocol, both families, equal
// to a desired list. It is not safe for concurrent use.
type RouteReconciler struct {
	h     *netlink.Handle
	table int
	log   *slog.Logger
}

// NewRouteReconciler returns a reconciler for table (0 means main) through h; a nil h
// works in the current network namespace, opening a netlink socket per request. With
// strict checking on h (h.SetStrictCheck(true)) the kernel sends only felix's routes when
// asked for them, which matters when other protocols' routes share the table.
func NewRouteReconciler(h *netlink.Handle, table int, log *slog.Logger) *RouteReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RouteReconciler{h: h, table: table, log: log}
}

// Apply makes the kernel's routes of RouteProtocol in the reconciler's table equal to
// desired: it adds what is missing, replaces what differs and deletes the rest. It lists
// every interface first; Dataplane, which follows interfaces from events, does not. A route
// whose interface does not exist or is down is skipped (Stats.Skipped), as is one whose
// destination another protocol's route already holds. A failed write does not stop the
// others; the error returned joins them.
func (r *RouteReconciler) Apply(desired []Route) (Stats, error) {
	links, err := listLinks(r.h)
	if err != nil {
		return Stats{}, err
	}
	return r.apply(desired, links, false)
}

// apply is Apply over a known link table. With holdGateways, kernel gateway routes that
// desired does not list are left in place rather than deleted (see LocalState.HoldLearned).
func (r *RouteReconciler) apply(desired []Route, links linkTable, holdGateways bool) (Stats, error) {
	have, err := r.list(links)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Programmed: len(have), listed: true}
	// want is desired without the routes whose interface is missing or down: desired
	// itself until one is (no copy of a full table).
	want, copied := desired, false
	for i, d := range desired {
		reason := ""
		if d.Type == RouteUnicast || (d.Type == RouteGateway && d.Interface != "") {
			switch l, ok := links.byName[d.Interface]; {
			case !ok:
				reason = "interface does not exist"
			case !l.up:
				reason = "interface is down"
			}
		}
		switch {
		case reason == "":
			if copied {
				want = append(want, d)
			}
		case !copied:
			want, copied = append(make([]Route, 0, len(desired)), desired[:i]...), true
			fallthrough
		default:
			st.Skipped = append(st.Skipped, SkippedRoute{d, reason})
		}
	}

	var errs errorList
	for _, op := range planRoutes(have, want, holdGateways) {
		switch op.kind {
		case opAdd, opReplace:
			nr := r.toNetlink(op.route, links)
			write, verb := r.h.RouteAdd, "add"
			if op.kind == opReplace {
				write, verb = func(nr *netlink.Route) error { return replaceRoute(r.h, nr) }, "replace"
			}
			switch err := write(&nr); {
			case err == nil:
				if op.kind == opAdd {
					st.Added++
					st.Programmed++
				} else {
					st.Replaced++
				}
				r.log.Debug("route "+verb, "route", op.route)
			case errors.Is(err, unix.EEXIST):
				// Only adds are exclusive: the slot is another protocol's, and stays so.
				st.Skipped = append(st.Skipped, SkippedRoute{op.route, heldByOther})
			case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENETDOWN):
				st.Skipped = append(st.Skipped, SkippedRoute{op.route, "interface went away or down"})
			case op.route.Type == RouteGateway && errors.Is(err, unix.ENETUNREACH):
				st.Skipped = append(st.Skipped, SkippedRoute{op.route, "gateway is not directly reachable"})
			default:
				errs.add(fmt.Errorf("%s route %s: %w", verb, op.route, err))
			}
		case opDelete:
			k := have[op.have]
			nr := k.delRequest(r.table)
			switch err := r.h.RouteDel(&nr); {
			case err == nil:
				st.Deleted++
				st.Programmed--
				r.log.Debug("route deleted", "route", k.describe())
			case errors.Is(err, unix.ESRCH):
				// Gone already: the kernel removes routes with their interface.
				st.Programmed--
			default:
				errs.add(fmt.Errorf("delete route %s: %w", k.describe(), err))
			}
		}
	}
	return st, errs.err()
}

// replaceRoute replaces the kernel's route to nr's destination with nr. IPv6 refuses to
// replace a route with an onlink one whose gateway lies in the destination (a VXLAN VTEP
// in its own block): it checks the gateway against the table, finds the route being
// replaced, through another device, and answers EINVAL. Then the old route is deleted
// and nr added.
func replaceRoute(h *netlink.Handle, nr *netlink.Route) error {
	err := h.RouteReplace(nr)
	if !errors.Is(err, unix.EINVAL) || nr.Flags&int(netlink.FLAG_ONLINK) == 0 || nr.Dst == nil || nr.Dst.IP.To4() != nil {
		return err
	}
	old := netlink.Route{Dst: nr.Dst, Table: nr.Table, Protocol: nr.Protocol}
	if derr := h.RouteDel(&old); derr != nil && !errors.Is(derr, unix.ESRCH) {
		return errors.Join(err, fmt.Errorf("delete the route it replaces: %w", derr))
	}
	return h.RouteAdd(nr)
}

// list returns the kernel's routes of RouteProtocol in the reconciler's table.
func (r *RouteReconciler) list(links linkTable) ([]kernelRoute, error) {
	filter := &netlink.Route{Table: r.table, Protocol: netlink.RouteProtocol(RouteProtocol)}
	var have []kernelRoute
	err := retryDump(func() error {
		have = have[:0]
		return r.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL,
			func(nr netlink.Route) bool {
				have = append(have, fromNetlink(nr, links))
				return true
			})
	})
	if err != nil {
		return nil, fmt.Errorf("list routes of protocol %d in table %d: %w", RouteProtocol, r.table, err)
	}
	return have, nil
}

// toNetlink converts a desired route; its interface, if any, is known to exist.
func (r *RouteReconciler) toNetlink(rt Route, links linkTable) netlink.Route {
	nr := netlink.Route{
		Dst:      prefixToIPNet(rt.Dst),
		Table:    r.table,
		Protocol: netlink.RouteProtocol(RouteProtocol),
	}
	switch rt.Type {
	case RouteUnicast:
		nr.LinkIndex = links.byName[rt.Interface].index
		if rt.Dst.Addr().Is4() {
			nr.Scope = netlink.SCOPE_LINK // a directly attached destination, as `ip route add ... dev` makes
		}
	case RouteBlackhole:
		nr.Type = unix.RTN_BLACKHOLE
	case RouteGateway:
		nr.Gw = rt.Gateway.AsSlice()
		if rt.Interface != "" {
			nr.LinkIndex = links.byName[rt.Interface].index
		}
		if rt.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	return nr
}

// kernelRoute is one of the kernel's routes of RouteProtocol, seen through Route.
type kernelRoute struct {
	Route Route
	// Odd is set when the kernel route has attributes Route cannot express (a gateway, a
	// source, TOS, metrics, another route type): it never equals a desired route.
	Odd bool
	// OtherMetric is set when its metric is not the one felix writes, so that writing the
	// desired route would add a second route rather than replace this one.
	OtherMetric bool
	// link is the kernel's interface index.
	link int
	// raw is the kernel's route itself, kept only when Odd or OtherMetric: any other is
	// told apart by Route and link alone, and a full table's routes are read on every
	// full pass.
	raw *netlink.Route
}

// delRequest is what deletes k: the kernel's route for an odd one, else one rebuilt from
// Route with exactly the attributes that fromNetlink found normal.
func (k kernelRoute) delRequest(table int) netlink.Route {
	if k.raw != nil {
		nr := *k.raw
		nr.Flags = 0 // state flags (linkdown) are not part of the route's identity
		return nr
	}
	nr := netlink.Route{Dst: prefixToIPNet(k.Route.Dst), Table: table, Protocol: netlink.RouteProtocol(RouteProtocol), LinkIndex: k.link}
	v4 := k.Route.Dst.Addr().Is4()
	if !v4 {
		nr.Priority = ip6DefaultMetric
	}
	switch k.Route.Type {
	case RouteUnicast:
		if v4 {
			nr.Scope = netlink.SCOPE_LINK
		}
	case RouteBlackhole:
		nr.Type = unix.RTN_BLACKHOLE
	case RouteGateway:
		nr.Gw = k.Route.Gateway.AsSlice()
	}
	return nr
}

// matches says whether the kernel route is the desired route w. A gateway route that leaves
// its interface to the kernel matches whatever interface the kernel chose.
func (k kernelRoute) matches(w Route) bool {
	if w.Type == RouteGateway && w.Interface == "" {
		r := k.Route
		r.Interface = ""
		return r == w
	}
	return k.Route == w
}

func (k kernelRoute) describe() string {
	if k.raw != nil {
		return k.raw.String()
	}
	return k.Route.String()
}

func fromNetlink(nr netlink.Route, links linkTable) kernelRoute {
	k := kernelRoute{link: nr.LinkIndex}
	if nr.Dst != nil {
		k.Route.Dst = ipNetToPrefix(nr.Dst)
	} else if nr.Family == unix.AF_INET6 { // a default route has no RTA_DST
		k.Route.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		k.Route.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	v4 := k.Route.Dst.Addr().Is4()
	wantMetric := 0
	if !v4 {
		wantMetric = ip6DefaultMetric
	}
	k.OtherMetric = nr.Priority != wantMetric
	k.Odd = nr.Src != nil || len(nr.MultiPath) > 0 || nr.Encap != nil || nr.Via != nil ||
		nr.NewDst != nil || nr.Tos != 0 || nr.Realm != 0 || nr.MTU != 0 || nr.AdvMSS != 0 || nr.Hoplimit != 0
	switch nr.Type {
	case unix.RTN_UNICAST:
		k.Route.Interface = links.byIndex[nr.LinkIndex]
		if nr.Gw != nil {
			k.Route.Type = RouteGateway
			gw, _ := netip.AddrFromSlice(nr.Gw)
			k.Route.Gateway = gw.Unmap()
			k.Route.OnLink = nr.Flags&int(netlink.FLAG_ONLINK) != 0
			k.Odd = k.Odd || nr.Scope != netlink.SCOPE_UNIVERSE
			break
		}
		k.Route.Type = RouteUnicast
		wantScope := netlink.SCOPE_UNIVERSE
		if v4 {
			wantScope = netlink.SCOPE_LINK
		}
		k.Odd = k.Odd || k.Route.Interface == "" || nr.Scope != wantScope
	case unix.RTN_BLACKHOLE:
		k.Route.Type = RouteBlackhole
		k.Odd = k.Odd || nr.Scope != netlink.SCOPE_UNIVERSE
	default:
		k.Odd = true
	}
	if k.Odd || k.OtherMetric {
		k.raw = &nr
	}
	return k
}

type opKind uint8

const (
	opAdd opKind = iota
	opReplace
	opDelete
)

func (k opKind) String() string {
	return [...]string{"add", "replace", "delete"}[k]
}

// routeOp is one kernel write: add or replace route, or delete have[have].
type routeOp struct {
	kind  opKind
	route Route
	have  int
}

// planRoutes returns the writes that turn have (the kernel's routes of our protocol) into
// want: adds and replaces first, in want's order, so traffic never meets a gap, then
// deletes. A kernel route equal to its desired route is left alone. A desired route takes
// over the kernel route in its slot (same destination and metric) by replacing it; any
// other kernel route of ours for that destination, and every one for a destination not
// wanted, is deleted, except that with holdGateways a gateway route for a destination not
// wanted is kept.
func planRoutes(have []kernelRoute, want []Route, holdGateways bool) []routeOp {
	// first[dst] is the first of have's routes for dst, next[i] the next one after have[i]
	// (-1: none): one map entry per destination and no slice for each.
	first := make(map[netip.Prefix]int, len(have))
	next := make([]int, len(have))
	for i := len(have) - 1; i >= 0; i-- {
		next[i] = -1
		if j, ok := first[have[i].Route.Dst]; ok {
			next[i] = j
		}
		first[have[i].Route.Dst] = i
	}
	// first[dst] becomes wanted once a desired route for dst is planned: it dedups want and
	// tells held gateway routes, with no second map of a full table.
	const wanted = -2
	keep := make([]bool, len(have))
	var ops, dels []routeOp
	for _, w := range want {
		i, ok := first[w.Dst]
		if ok && i == wanted {
			continue
		}
		first[w.Dst] = wanted
		exact, slot := -1, -1
		for ; ok && i >= 0; i = next[i] {
			k := have[i]
			if k.OtherMetric {
				continue
			}
			if !k.Odd && k.matches(w) && exact < 0 {
				exact = i
			}
			if slot < 0 {
				slot = i
			}
		}
		switch {
		case exact >= 0:
			keep[exact] = true
		case slot >= 0:
			keep[slot] = true
			ops = append(ops, routeOp{kind: opReplace, route: w})
		default:
			ops = append(ops, routeOp{kind: opAdd, route: w})
		}
	}
	for i, k := range have {
		if holdGateways && !keep[i] && k.Route.Type == RouteGateway && first[k.Route.Dst] != wanted {
			keep[i] = true
		}
		if !keep[i] {
			dels = append(dels, routeOp{kind: opDelete, route: k.Route, have: i})
		}
	}
	return append(ops, dels...)
}

// retryDump runs a netlink dump again when the kernel says it changed while being read,
// which is common while thousands of routes are being written.
func retryDump(dump func() error) error {
	var err error
	for range 5 {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// errorList collects a pass's errors, keeping the first maxErrors.
type errorList struct {
	errs    []error
	dropped int
}

func (l *errorList) add(err error) {
	if len(l.errs) < maxErrors {
		l.errs = append(l.errs, err)
	} else {
		l.dropped++
	}
}

func (l *errorList) err() error {
	if l.dropped > 0 {
		l.errs = append(l.errs, fmt.Errorf("and %d more errors", l.dropped))
	}
	return errors.Join(l.errs...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
