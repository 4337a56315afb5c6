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
}

// BackendsOf returns the backends of p whose address has the family of v6.
func (p *PortLB) BackendsOf(v6 bool) []Backend {
	var out []Backend
	for _, b := range p.Backends {
		if b.Addr.Is6() == v6 {
			out = append(out, b)
		}
	}
	return out
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
	st := &LBState{}
	for _, in := range services {
		st.Ports = append(st.Ports, servicePorts(node, in)...)
	}
	slices.SortFunc(st.Ports, func(a, b PortLB) int { return a.Key.compare(b.Key) })
	return st
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
	var out []PortLB
	for _, sp := range svc.Spec.Ports {
		proto := cmp.Or(sp.Protocol, api.PortProtocolTCP)
		key := PortKey{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Protocol: proto}
		lb := PortLB{Key: key, Protocol: proto, Port: uint16(sp.Port), Affinity: affinity}
		lb.Frontends = slices.Clone(cluster)
		lb.Backends = backends(in.Endpoints, sp.Name, node, localOnly)
		if localOnly && len(external) > 0 {
			ext := lb
			ext.Key.External = true
			ext.Frontends = external
			ext.Backends = backends(in.Endpoints, sp.Name, node, false)
			out = append(out, lb, ext)
			continue
		}
		lb.Frontends = append(lb.Frontends, external...)
		out = append(out, lb)
	}
	return out
}

// externalAddrs returns the Service's external IPs and load-balancer ingress IPs, sorted
// and without duplicates; addresses that do not parse are skipped (validation refuses
// them).
func externalAddrs(svc *api.Service) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		add(s)
	}
	if svc.Status != nil {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				add(in.IP)
			}
		}
	}
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
		slices.Equal(p.Frontends, o.Frontends) && slices.Equal(p.Backends, o.Backends)
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
	}
	slices.SortFunc(c.Ports, func(a, b PortLB) int { return a.Key.compare(b.Key) })
	return c
}
