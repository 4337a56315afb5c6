package agent

import (
	"fmt"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// proxyBenchViews are views of n Services in 100 namespaces with 5 endpoints each, and
// views that follow them as the snapshot publishes a change (sharing every kind the change
// does not touch). With selector, the endpoints are WorkloadEndpoints and the change adds
// a workload to Service 0's namespace; without, they are Endpoints resources (the shape
// of e2e's BenchmarkServiceSync) and the change moves an endpoint of Service 0.
func proxyBenchViews(b *testing.B, n int, selector bool) [2]*snapshot.View {
	var rs []api.Resource
	for i := range n {
		s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore},
			Spec: api.ServiceSpec{ClusterIP: fmt.Sprintf("10.100.%d.%d", i>>8&255, i&255),
				Ports: []api.ServicePort{{Name: "http", Protocol: api.PortProtocolTCP, Port: 80, TargetPort: api.IntOrString{IntVal: 8080}}}}}
		s.Namespace, s.Name = fmt.Sprintf("ns%d", i%100), fmt.Sprintf("s%d", i)
		rs = append(rs, s)
		if selector {
			s.Spec.Selector = map[string]string{"app": s.Name}
			for a := range 5 {
				w := wep(s.Namespace, fmt.Sprintf("%s-%d", s.Name, a), "node1", "tabbyx", fmt.Sprintf("10.%d.%d.%d/32", 100+a, i>>8&255, i&255))
				w.Labels = s.Spec.Selector
				rs = append(rs, w)
			}
			continue
		}
		rs = append(rs, benchEndpoints(s, 0))
	}
	v, err := snapshot.NewView(nil, rs...)
	if err != nil {
		b.Fatal(err)
	}
	change := api.Resource(nil)
	if selector {
		w := wep("ns0", "s0-extra", "node1", "tabbyx", "10.99.0.1/32")
		w.Labels = map[string]string{"app": "s0"}
		change = w
	} else {
		change = benchEndpoints(rs[0].(*api.Service), 1)
	}
	next, err := v.With(change)
	if err != nil {
		b.Fatal(err)
	}
	return [2]*snapshot.View{v, next}
}

// benchEndpoints is an Endpoints resource of 5 addresses for s; variant moves the last.
func benchEndpoints(s *api.Service, variant int) *api.Endpoints {
	e := &api.Endpoints{TypeMeta: api.TypeMeta{Kind: "Endpoints", APIVersion: api.VersionCore}}
	e.Namespace, e.Name = s.Namespace, s.Name
	sub := api.EndpointSubset{Ports: []api.EndpointPort{{Name: "http", Port: 8080, Protocol: api.PortProtocolTCP}}}
	for a := range 5 {
		if a == 4 {
			a += variant
		}
		sub.Addresses = append(sub.Addresses, api.EndpointAddress{IP: fmt.Sprintf("10.255.%d.%d", a, len(s.Name))})
	}
	e.Subsets = []api.EndpointSubset{sub}
	return e
}

// BenchmarkProxyDerive measures what the proxy subsystem derives on a view that changes
// one Service's endpoints, before felix writes anything: the Services' endpoints
// (serviceIndex, shared with DNS and BGP), the exempt filter, proxy.Desired (the
// subsystem's LBCache) and the healthCheckNodePort servers, at 1k and 10k Services of 5
// endpoints, from Endpoints resources or from a selector over WorkloadEndpoints. Each op
// derives the change and its undoing (two views). The baseline, "from-nothing", is the
// same derivation on a fresh serviceIndex and LBCache (what every view cost before they
// carried Services over).
func BenchmarkProxyDerive(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, selector := range []bool{false, true} {
			for _, fresh := range []bool{false, true} {
				name := fmt.Sprintf("services=%d/selector=%v/from-nothing=%v", n, selector, fresh)
				b.Run(name, func(b *testing.B) {
					views := proxyBenchViews(b, n, selector)
					p := &proxySubsystem{node: "node1", services: &serviceIndex{}}
					p.lb.Desired(p.node, p.inputs(views[0]))
					for b.Loop() {
						for _, v := range views {
							if fresh {
								p = &proxySubsystem{node: "node1", services: &serviceIndex{}}
							}
							in := p.inputs(v)
							st := p.lb.Desired(p.node, in)
							_ = healthChecks(p.node, in)
							if len(st.Ports) != n {
								b.Fatalf("%d ports, want %d", len(st.Ports), n)
							}
						}
					}
				})
			}
		}
	}
}
