package felix

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
)

// RemoveRoutes deletes every route of RouteProtocol, both families, every table: what
// `tabby-node cleanup` does for a node leaving tabby. A route that will not go is logged
// and skipped; n counts those removed.
func RemoveRoutes(log *slog.Logger) (n int, err error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: 0}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("list routes of protocol %d: %w", RouteProtocol, err)
	}
	for i := range rs {
		if err := netlink.RouteDel(&rs[i]); err != nil {
			log.Warn("route not removed", "route", rs[i].String(), "err", err)
			continue
		}
		n++
	}
	return n, nil
}
