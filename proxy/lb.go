package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
)

// ServiceInput is one Service with the endpoints ServiceEndpoints derived for it.
type ServiceInput struct {
	Service   *api.Service
	Endpoints []Endpoint
}

// PortKey names one load-balanced port of one Service. External is set for the external
// IPs of a Service whose internalTrafficPolicy is Local: they keep every ready endpoint
// while its cluster IPs keep only the node's own, so they need a backend list of their own.
type PortKey struct {
	Namespace, Name, Port string
	Protocol              api.PortProtocol
	External              bool
}

func (k PortKey) String() string {
	s := k.Namespace + "/" + k.Name + "/" + k.Port + "/" + string(k.Protocol)
	if k.External {
		s += "/external"
	}
	return s
}

func (k PortKey) compare(o PortKey) int {
	return cmp.Or(cmp.Compare(k.Namespace, o.Namespace), cmp.Compare(k.Name, o.Name),
		cmp.Compare(k.Port, o.Port), cmp.Compare(k.Protocol, o.Protocol), boolCompare(k.External, o.External))
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Backend is one endpoint address and the port traffic is sent to there.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

func (b Backend) String() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

func (b Backend) compare(o Backend) int {
	return cmp.Or(b.Addr.Compare(o.Addr), cmp.Compare(b.Port, o.Port))
}

// PortLB is the desired load balancing of one Service port on this node: packets to any
// of Frontends (cluster IPs, then external and load-balancer IPs) on Protocol/Port go to one
// of Backends. Without a backend of a frontend's family, that frontend rejects.
type PortLB struct {
	Key       PortKey
	Protocol  api.PortProtocol
	Port      uint16
	Frontends []netip.Addr
	Backends  []Backend
	// Affinity is ClientIP session affinity's timeout; 0 means none.
	Affinity time.Duration
	// NodePort is the Service port's nodePort (0: none): packets to any local address of
	// the node on it are balanced like the frontends, in the families NodePortFamilies
	// holds (index 0: IPv4, 1: IPv6; those of the cluster IPs).
	NodePort         uint16
	NodePortFamilies [2]bool
	// ExternalLocal is externalTrafficPolicy Local (only on a PortLB with Key.External):
	// the frontends and the NodePort go to LocalBackends only, and keep the client's
	// source. Traffic from the pod CIDRs and from the node itself still goes to every
	// backend, as kube-proxy short-circuits it; without a local backend the rest is
	// dropped.
	ExternalLocal bool
	LocalBackends []Backend
}

// BackendsOf returns the backends of p whose address has the family of v6: p.Backends
// itself when they all have it (callers must not change it).
func (p *PortLB) BackendsOf(v6 bool) []Backend {
	if p.countOf(v6) == len(p.Backends) {
		return p.Backends // the common case: one family, nothing to copy
	}
	var out []Backend
	for _, b := range p.Backends {
		if b.Addr.Is6() == v6 {
			out = append(out, b)
		}
	}
	return out
}

// countOf is len(p.BackendsOf(v6)), without the copy.
func (p *PortLB) countOf(v6 bool) int {
	n := 0
	for _, b := range p.Backends {
		if b.Addr.Is6() == v6 {
			n++
		}
	}
	return n
}

// LBState is the desired load balancing of one node: every Service port, sorted by Key.
type LBState struct {
	Ports []PortLB
}

// Desired computes the load balancing of node from the Services and their endpoints:
// per Service port, its frontends and its ready backends. Headless and ExternalName
// Services and Services without a cluster IP balance nothing. internalTrafficPolicy Local
// keeps only node's endpoints behind the cluster IPs. The result is sorted, so equal
// inputs give equal states whatever their order.
func Desired(node string, services []ServiceInput) *LBState {
	return new(LBCache).Desired(node, services)
}

// LBCache computes Desired again and again, carrying each Service's ports over from the
// call before when the Service and its endpoints are the same objects (the agent's views
// share what did not change): a one-Service change among 10k Services computes the ports
// of one. The states it returns share their ports' slices: nothing may change them.
type LBCache struct {
	memo map[*api.Service]lbMemo
}

type lbMemo struct {
	node      string
	endpoints []Endpoint // what the ports were computed from
	ports     []PortLB
}

// Desired is the package's Desired, from what c remembers where it can.
func (c *LBCache) Desired(node string, services []ServiceInput) *LBState {
	st := &LBState{}
	memo := make(map[*api.Service]lbMemo, len(services))
	for _, in := range services {
		m, ok := c.memo[in.Service]
		if !ok || m.node != node || !sameSlice(m.endpoints, in.Endpoints) {
			m = lbMemo{node: node, endpoints: in.Endpoints, ports: servicePorts(node, in)}
		}
		memo[in.Service] = m
		st.Ports = append(st.Ports, m.ports...)
	}
	c.memo = memo
	compare := func(a, b PortLB) int { return a.Key.compare(b.Key) }
	if !slices.IsSortedFunc(st.Ports, compare) {
		slices.SortFunc(st.Ports, compare)
	}
	return st
}

// sameSlice says whether a and b are the same slice of the same array (not only equal).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func servicePorts(node string, in ServiceInput) []PortLB {
	svc := in.Service
	if svc == nil || svc.IsHeadless() || svc.Spec.Type == api.ServiceTypeExternalName {
		return nil
	}
	cluster, err := svc.ClusterAddrs()
	if err != nil || len(cluster) == 0 {
		return nil // validation refuses bad addresses; an unallocated Service has no VIP yet
	}
	external := externalAddrs(svc)
	var affinity time.Duration
	if svc.Spec.SessionAffinity == api.SessionAffinityClientIP {
		affinity = api.DefaultAffinityTimeoutSeconds * time.Second
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	localOnly := svc.Spec.InternalTrafficPolicy == api.TrafficPolicyLocal
	externalLocal := svc.Spec.ExternalTrafficPolicy == api.TrafficPolicyLocal
	nodePorts := svc.Spec.Type == api.ServiceTypeNodePort || svc.Spec.Type == api.ServiceTypeLoadBalancer
	var families [2]bool
	for _, a := range cluster {
		families[boolIndex(a.Is6())] = true
	}
	var out []PortLB
	for _, sp := range svc.Spec.Ports {
		proto := cmp.Or(sp.Protocol, api.PortProtocolTCP)
		key := PortKey{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Protocol: proto}
		lb := PortLB{Key: key, Protocol: proto, Port: uint16(sp.Port), Affinity: affinity}
		lb.Frontends = slices.Clone(cluster)
		lb.Backends = backends(in.Endpoints, sp.Name, node, localOnly)
		var np uint16
		if nodePorts && sp.NodePort > 0 {
			np = uint16(sp.NodePort)
		}
		if (localOnly || externalLocal) && (len(external) > 0 || np != 0) {
			// The external frontends and the NodePort need backends of their own.
			ext := lb
			ext.Key.External = true
			ext.Frontends = slices.Clone(external)
			ext.Backends = backends(in.Endpoints, sp.Name, node, false)
			ext.NodePort, ext.NodePortFamilies = np, families
			if np == 0 {
				ext.NodePortFamilies = [2]bool{}
			}
			if externalLocal {
				ext.ExternalLocal = true
				ext.LocalBackends = backends(in.Endpoints, sp.Name, node, true)
			}
			out = append(out, lb, ext)
			continue
		}
		lb.Frontends = append(lb.Frontends, external...)
		if np != 0 {
			lb.NodePort, lb.NodePortFamilies = np, families
		}
		out = append(out, lb)
	}
	return out
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// externalAddrs returns the Service's external IPs and load-balancer ingress IPs, sorted
// and without duplicates.
func externalAddrs(svc *api.Service) []netip.Addr {
	out := append(svc.ExternalAddrs(), svc.LoadBalancerAddrs()...)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// backends returns the ready endpoints' addresses with their port for the Service port
// named port, only node's own when localOnly, sorted and without duplicates. When none is
// ready, it takes the serving, terminating ones instead, as kube-proxy does.
func backends(eps []Endpoint, port, node string, localOnly bool) []Backend {
	var out, terminating []Backend
	for _, ep := range eps {
		p, ok := ep.Ports[port]
		if !ok || (localOnly && ep.Node != node) {
			continue
		}
		for _, a := range ep.Addrs {
			if ep.Ready {
				out = append(out, Backend{Addr: a.Unmap(), Port: p})
			} else if ep.Serving && ep.Terminating {
				terminating = append(terminating, Backend{Addr: a.Unmap(), Port: p})
			}
		}
	}
	if len(out) == 0 {
		out = terminating
	}
	slices.SortFunc(out, Backend.compare)
	return slices.Compact(out)
}

func (p *PortLB) equal(o *PortLB) bool {
	return p.Key == o.Key && p.Protocol == o.Protocol && p.Port == o.Port && p.Affinity == o.Affinity &&
		p.NodePort == o.NodePort && p.NodePortFamilies == o.NodePortFamilies && p.ExternalLocal == o.ExternalLocal &&
		slices.Equal(p.Frontends, o.Frontends) && slices.Equal(p.Backends, o.Backends) && slices.Equal(p.LocalBackends, o.LocalBackends)
}

// hasNodePortOf says whether p has a NodePort in the family of v6.
func (p *PortLB) hasNodePortOf(v6 bool) bool {
	return p.NodePort != 0 && p.NodePortFamilies[boolIndex(v6)]
}

func (p *PortLB) hasFrontendOf(v6 bool) bool {
	return slices.ContainsFunc(p.Frontends, func(a netip.Addr) bool { return a.Is6() == v6 })
}

// Clone returns a copy of st that shares no slice with it, its ports sorted by Key.
func (st *LBState) Clone() *LBState {
	c := &LBState{Ports: slices.Clone(st.Ports)}
	for i := range c.Ports {
		c.Ports[i].Frontends = slices.Clone(c.Ports[i].Frontends)
		c.Ports[i].Backends = slices.Clone(c.Ports[i].Backends)
		c.Ports[i].LocalBackends = slices.Clone(c.Ports[i].LocalBackends)
	}
	slices.SortFunc(c.Ports, func(a, b PortLB) int { return a.Key.compare(b.Key) })
	return c
}

// ChangedPorts returns the ports that differ between old and st: before holds those of
// old (gone or changed), after those of st (new or changed). It walks both port lists
// once, so both must be sorted by Key, as Desired returns them.
func ChangedPorts(old, st *LBState) (before, after *LBState) {
	before, after = &LBState{}, &LBState{}
	i, j := 0, 0
	for i < len(old.Ports) || j < len(st.Ports) {
		switch {
		case j == len(st.Ports) || (i < len(old.Ports) && old.Ports[i].Key.compare(st.Ports[j].Key) < 0):
			before.Ports = append(before.Ports, old.Ports[i])
			i++
		case i == len(old.Ports) || old.Ports[i].Key.compare(st.Ports[j].Key) > 0:
			after.Ports = append(after.Ports, st.Ports[j])
			j++
		default:
			if !old.Ports[i].equal(&st.Ports[j]) {
				before.Ports = append(before.Ports, old.Ports[i])
				after.Ports = append(after.Ports, st.Ports[j])
			}
			i, j = i+1, j+1
		}
	}
	return before, after
}
