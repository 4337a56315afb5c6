package felix

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/proxy"
)

// DeleteStaleUDP deletes the conntrack entries of flows (proxy.StaleUDP) from the kernel,
// in the ServiceProxy's namespace: UDP entries whose original destination is a flow's
// frontend and port (a NodePort's flow: any address on its node port) and whose reply
// comes from its backend address and port. A client's
// next datagram then goes through the Service's rules again and finds a live endpoint.
// It is kube-proxy's cleanup, by netlink: one dump of the table per family, and one
// delete per matching entry. It returns how many entries went.
func (p *ServiceProxy) DeleteStaleUDP(flows []proxy.StaleFlow) (uint, error) {
	return deleteStaleUDP(p.netNS, flows)
}

// deleteStaleUDP is DeleteStaleUDP in the network namespace named netNS ("": the agent's),
// for both proxy modes.
func deleteStaleUDP(netNS string, flows []proxy.StaleFlow) (uint, error) {
	byFamily := map[netlink.InetFamily]staleUDPFilter{}
	for _, f := range flows {
		fam := netlink.InetFamily(unix.AF_INET)
		if f.Backend.Addr.Is6() {
			fam = unix.AF_INET6
		}
		if byFamily[fam] == nil {
			byFamily[fam] = staleUDPFilter{}
		}
		byFamily[fam][f] = true
	}
	var deleted uint
	err := inNamedNetNS(netNS, func() error {
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			filter := byFamily[fam]
			if filter == nil {
				continue
			}
			n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filter)
			deleted += n
			if err != nil {
				return fmt.Errorf("delete stale UDP conntrack entries: %w", err)
			}
		}
		return nil
	})
	return deleted, err
}

// staleUDPFilter matches the conntrack entries of a set of stale flows.
type staleUDPFilter map[proxy.StaleFlow]bool

func (f staleUDPFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	if fl.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	front, ok := netip.AddrFromSlice(fl.Forward.DstIP)
	back, ok2 := netip.AddrFromSlice(fl.Reverse.SrcIP)
	if !ok || !ok2 {
		return false
	}
	b := proxy.Backend{Addr: back.Unmap(), Port: fl.Reverse.SrcPort}
	// A NodePort's flow matches the node port on any address: kube-proxy's
	// "conntrack -D -p udp --dport <nodePort>" for the endpoint.
	return f[proxy.StaleFlow{Frontend: front.Unmap(), Port: fl.Forward.DstPort, Backend: b}] ||
		f[proxy.StaleFlow{Port: fl.Forward.DstPort, Backend: b}]
}
