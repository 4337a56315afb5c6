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
	v4, v6 := staleUDPFilter{}, staleUDPFilter{}
	for _, f := range flows {
		if f.Backend.Addr.Is6() {
			v6[f] = true
		} else {
			v4[f] = true
		}
	}
	// A family without flows is not dumped.
	byFamily := map[netlink.InetFamily]netlink.CustomConntrackFilter{}
	if len(v4) > 0 {
		byFamily[unix.AF_INET] = v4
	}
	if len(v6) > 0 {
		byFamily[unix.AF_INET6] = v6
	}
	return deleteUDPEntries(netNS, byFamily)
}

// DeleteUDPNotServing deletes the conntrack entries of UDP flows the proxy DNATed from a
// frontend or node port of st to a backend no longer behind it (proxy.UDPServing), in
// the ServiceProxy's namespace: kube-proxy's full cleanup, for the changes an agent
// started after (DeleteStaleUDP covers those it saw). One dump of the table per family.
func (p *ServiceProxy) DeleteUDPNotServing(st *proxy.LBState) (uint, error) {
	return deleteUDPNotServing(p.netNS, st)
}

// deleteUDPNotServing is DeleteUDPNotServing in the namespace named netNS, for both modes.
func deleteUDPNotServing(netNS string, st *proxy.LBState) (uint, error) {
	f := notServingFilter{proxy.ServingUDP(st)}
	return deleteUDPEntries(netNS, map[netlink.InetFamily]netlink.CustomConntrackFilter{unix.AF_INET: f, unix.AF_INET6: f})
}

// deleteUDPEntries deletes, in the namespace named netNS, the conntrack entries each
// family's filter matches, and returns how many went.
func deleteUDPEntries(netNS string, byFamily map[netlink.InetFamily]netlink.CustomConntrackFilter) (uint, error) {
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

// notServingFilter matches the UDP entries that were DNATed (the reply comes from another
// address or port than the original destination) to a backend no longer serving their
// destination.
type notServingFilter struct{ serving proxy.UDPServing }

func (f notServingFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	if fl.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst, ok := netip.AddrFromSlice(fl.Forward.DstIP)
	back, ok2 := netip.AddrFromSlice(fl.Reverse.SrcIP)
	if !ok || !ok2 {
		return false
	}
	d := netip.AddrPortFrom(dst.Unmap(), fl.Forward.DstPort)
	b := proxy.Backend{Addr: back.Unmap(), Port: fl.Reverse.SrcPort}
	if b.Addr == d.Addr() && b.Port == d.Port() {
		return false // not DNATed: not the proxy's
	}
	return f.serving.Stale(d, b)
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
