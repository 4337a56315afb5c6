package felix

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// HostInterfaceAddrs lists the interfaces of h's namespace (nil h: the current one) that
// host endpoints may govern, with their global addresses of both families: every one but
// lo and workloads' (names starting with prefix). It is what
// policy.Model.HostEndpointsOf finds a host endpoint without interfaceName by.
func HostInterfaceAddrs(h *netlink.Handle, prefix string) (map[string][]netip.Addr, error) {
	if h == nil {
		h = &netlink.Handle{}
	}
	out := map[string][]netip.Addr{}
	for _, version := range []int{4, 6} {
		ifaces, err := hostInterfaces(h, version)
		if err != nil {
			return nil, err
		}
		for _, hi := range ifaces {
			if hi.Name == "lo" || strings.HasPrefix(hi.Name, prefix) || len(hi.Addrs) == 0 {
				continue
			}
			for _, p := range hi.Addrs {
				out[hi.Name] = append(out[hi.Name], p.Addr())
			}
		}
	}
	return out, nil
}

// SubscribeAddrs pokes kick on every address added to or removed from an interface of
// the current namespace, until ctx ends. An error of the event stream (its socket
// failed) is passed to onErr; the stream then ends, and the caller's periodic re-read is
// what remains.
func SubscribeAddrs(ctx context.Context, kick chan struct{}, onErr func(error)) error {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
	if err != nil {
		close(done)
		return fmt.Errorf("subscribe to address events: %w", err)
	}
	go func() {
		stop := ctx.Done()
		for {
			select {
			case <-stop:
				close(done) // netlink closes ch once its reader sees this
				stop = nil
			case _, ok := <-ch:
				if !ok {
					return
				}
				if stop != nil {
					poke(kick)
				}
			}
		}
	}()
	return nil
}
