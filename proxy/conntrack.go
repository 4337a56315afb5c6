package proxy

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/tabby-net/tabby/api"
)

// StaleFlow names the conntrack entries of UDP packets to Frontend:Port that were DNATed
// to Backend: once Backend no longer stands behind that port, they would keep sending a
// client's datagrams to it (UDP has no end to wait for), so they are deleted, as
// kube-proxy does. A NodePort's flow has no Frontend (the zero Addr): its entries are
// those to any address on Port, the node port.
type StaleFlow struct {
	Frontend netip.Addr
	Port     uint16
	Backend  Backend
}

func (f StaleFlow) compare(o StaleFlow) int {
	return cmp.Or(f.Frontend.Compare(o.Frontend), cmp.Compare(f.Port, o.Port), f.Backend.compare(o.Backend))
}

// StaleUDP returns the flows to forget after old was replaced by next: for every UDP port
// of old, each backend that is no longer among the port's backends in next (all of them
// when the port or its Service is gone), paired with each of the port's frontends in old
// of the backend's family, and with its node port when it had one in that family (all
// its backends when the node port changed). Sorted, without duplicates; nil when old is
// nil.
func StaleUDP(old, next *LBState) []StaleFlow {
	if old == nil {
		return nil
	}
	now := map[PortKey]*PortLB{}
	if next != nil {
		for i := range next.Ports {
			now[next.Ports[i].Key] = &next.Ports[i]
		}
	}
	var out []StaleFlow
	for _, p := range old.Ports {
		if p.Protocol != api.PortProtocolUDP {
			continue
		}
		var kept, keptNodePort []Backend
		n := now[p.Key]
		if n != nil && n.Port == p.Port {
			kept = n.Backends
		}
		if n != nil && n.NodePort == p.NodePort {
			keptNodePort = n.Backends
		}
		for _, b := range p.Backends {
			if !slices.Contains(kept, b) {
				for _, f := range p.Frontends {
					if f.Is4() == b.Addr.Is4() {
						out = append(out, StaleFlow{Frontend: f, Port: p.Port, Backend: b})
					}
				}
			}
			if p.NodePort != 0 && p.NodePortFamilies[boolIndex(b.Addr.Is6())] && !slices.Contains(keptNodePort, b) {
				out = append(out, StaleFlow{Port: p.NodePort, Backend: b})
			}
		}
	}
	slices.SortFunc(out, StaleFlow.compare)
	return slices.Compact(out)
}

// UDPServing is, for the UDP ports of a state, the backends that stand behind each
// frontend address and port and behind each node port (on any address). A conntrack
// entry the proxy DNATed from one of those to a backend not among them is stale: the
// full counterpart of StaleUDP, for changes an agent did not see (it started after
// them).
type UDPServing struct {
	frontends map[netip.AddrPort][]Backend
	nodePorts map[uint16][]Backend
}

// ServingUDP returns the UDPServing of st (nil: nothing is served).
func ServingUDP(st *LBState) UDPServing {
	s := UDPServing{frontends: map[netip.AddrPort][]Backend{}, nodePorts: map[uint16][]Backend{}}
	if st == nil {
		return s
	}
	for _, p := range st.Ports {
		if p.Protocol != api.PortProtocolUDP {
			continue
		}
		// LocalBackends are among Backends; both are listed so the union holds either.
		backends := slices.Concat(p.Backends, p.LocalBackends)
		for _, f := range p.Frontends {
			k := netip.AddrPortFrom(f, p.Port)
			s.frontends[k] = append(s.frontends[k], backends...)
		}
		if p.NodePort != 0 {
			s.nodePorts[p.NodePort] = append(s.nodePorts[p.NodePort], backends...)
		}
	}
	return s
}

// Stale says whether a UDP flow to dst (its original destination) that conntrack DNATed
// to b is stale: dst is a frontend or a node port of a UDP port and b is not one of its
// backends. Flows to anything else are not the proxy's to judge.
func (s UDPServing) Stale(dst netip.AddrPort, b Backend) bool {
	if backends, ok := s.frontends[dst]; ok {
		return !slices.Contains(backends, b)
	}
	if backends, ok := s.nodePorts[dst.Port()]; ok {
		return !slices.Contains(backends, b)
	}
	return false
}

// Families says which address families ([0] IPv4, [1] IPv6) hold flows Stale can judge
// stale: those of a frontend's family, and both where a node port is served (its flows
// arrive on any address). A cleanup need not read the entries of the others.
func (s UDPServing) Families() [2]bool {
	var fams [2]bool
	for ap := range s.frontends {
		fams[boolIndex(ap.Addr().Is6())] = true
	}
	if len(s.nodePorts) > 0 {
		fams = [2]bool{true, true}
	}
	return fams
}
