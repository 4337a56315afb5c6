package policy

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/proxy"
)

// ServiceKinds are the plural names of the kinds Build derives Services' endpoints from,
// for services matches, when Input.Services is not given.
var ServiceKinds = []string{"services", "endpoints", "endpointslices"}

// serviceResources are the resources of ServiceKinds given to Input.Add.
type serviceResources struct {
	services []*api.Service
	eps      []*api.Endpoints
	slices   []*api.EndpointSlice
}

func (s *serviceResources) add(r api.Resource) {
	switch r := r.(type) {
	case *api.Service:
		s.services = append(s.services, r)
	case *api.Endpoints:
		s.eps = append(s.eps, r)
	case *api.EndpointSlice:
		s.slices = append(s.slices, r)
	}
}

// derive derives every Service's endpoints as the Service proxy does
// (proxy.ServiceEndpoints) from the resources and weps.
func (s *serviceResources) derive(weps []*api.WorkloadEndpoint) []proxy.ServiceInput {
	byNS := map[string][]*api.WorkloadEndpoint{}
	for _, w := range weps {
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
	}
	eps := map[string]*api.Endpoints{}
	for _, e := range s.eps {
		eps[e.Namespace+"/"+e.Name] = e
	}
	slicesOf := map[string][]*api.EndpointSlice{}
	for _, sl := range s.slices {
		if name := sl.ServiceName(); name != "" {
			slicesOf[sl.Namespace+"/"+name] = append(slicesOf[sl.Namespace+"/"+name], sl)
		}
	}
	out := make([]proxy.ServiceInput, 0, len(s.services))
	for _, svc := range s.services {
		key := svc.Namespace + "/" + svc.Name
		out = append(out, proxy.ServiceInput{Service: svc,
			Endpoints: proxy.ServiceEndpoints(svc, byNS[svc.Namespace], eps[key], slicesOf[key])})
	}
	return out
}

// ServiceRef is a rule's services match: the Service namespace/name.
type ServiceRef struct {
	Namespace, Name string
}

// Key is "namespace/name".
func (r ServiceRef) Key() string { return r.Namespace + "/" + r.Name }

// Service is what a services match stands for: the addresses of a Service's endpoints
// (as the Service proxy derives them, ready or not) and, for a destination, the
// endpoints' ports of the Service's ports.
type Service struct {
	Addrs []netip.Addr      // sorted, no repeats
	Ports []NamedPortMember // address, protocol and port; sorted, no repeats
}

// compileService derives a Service's match from its endpoints.
func compileService(in proxy.ServiceInput) *Service {
	s := &Service{}
	for _, ep := range in.Endpoints {
		s.Addrs = append(s.Addrs, ep.Addrs...)
		for _, sp := range in.Service.Spec.Ports {
			port, ok := ep.Ports[sp.Name]
			if !ok {
				continue
			}
			proto := sp.Protocol
			if proto == "" {
				proto = api.PortProtocolTCP
			}
			n, _ := api.ParseProtocol(string(proto)).Number()
			for _, a := range ep.Addrs {
				s.Ports = append(s.Ports, NamedPortMember{Addr: a, Protocol: n, Port: port})
			}
		}
	}
	slices.SortFunc(s.Addrs, netip.Addr.Compare)
	s.Addrs = slices.Compact(s.Addrs)
	slices.SortFunc(s.Ports, compareMember)
	s.Ports = slices.Compact(s.Ports)
	return s
}

func compareMember(a, b NamedPortMember) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

// UsesServices says whether any rule has a services match: whether the model depends on
// the Services' endpoints.
func (m *Model) UsesServices() bool {
	has := func(rules []Rule) bool {
		return slices.ContainsFunc(rules, func(r Rule) bool { return r.Src.Service != nil || r.Dst.Service != nil })
	}
	for _, p := range m.Policies {
		if has(p.IngressRules) || has(p.EgressRules) {
			return true
		}
	}
	for _, pr := range m.Profiles {
		if has(pr.IngressRules) || has(pr.EgressRules) {
			return true
		}
	}
	return false
}

// ServiceOf returns the match of a Service; a Service that does not exist matches
// nothing.
func (m *Model) ServiceOf(r ServiceRef) *Service {
	if s := m.Services[r.Key()]; s != nil {
		return s
	}
	return &Service{}
}

// serviceHas says whether a packet's address (and, for a destination, its protocol and
// port) is one of the Service's endpoints.
func (m *Model) serviceHas(r ServiceRef, addr netip.Addr, proto uint8, port uint16, dst bool) bool {
	s := m.ServiceOf(r)
	if !dst {
		_, ok := slices.BinarySearchFunc(s.Addrs, addr, netip.Addr.Compare)
		return ok
	}
	_, ok := slices.BinarySearchFunc(s.Ports, NamedPortMember{Addr: addr, Protocol: proto, Port: port}, compareMember)
	return ok
}
