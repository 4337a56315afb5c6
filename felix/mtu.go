package felix

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// LinkMTUOf is the MTU of the interface holding addr (the node's underlay).
func LinkMTUOf(addr netip.Addr) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("underlay interface of %s: %w", addr, err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("no interface has the node address %s", addr)
}
