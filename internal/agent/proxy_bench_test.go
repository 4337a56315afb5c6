package agent

import (
	"fmt"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// proxyBenchViews are two views of n Services with a selector-less Endpoints resource of
// 5 addresses each, the shape of e2e's BenchmarkServiceSync, which differ in Service 0's
// Endpoints only (and share every other resource, as views do).
func proxyBenchViews(b *testing.B, n int) [2]*snapshot.View {
	var views [2]*snapshot.View
	rs := proxyBenchResources(n, 0)
	for i, variant := range []int{0, 1} {
		rs[1] = proxyBenchResources(1, variant)[1]
		v, err := snapshot.NewView(nil, rs...)
		if err != nil {
			b.Fatal(err)
		}
		views[i] = v
	}
	return views
}

// proxyBenchResources are n Services and their Endpoints; variant moves the last
// endpoint of Service 0.
func proxyBenchResources(n, variant int) []api.Resource {
	rs := make([]api.Resource, 0, 2*n)
	for i := range n {
		s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore},
			Spec: api.ServiceSpec{ClusterIP: fmt.Sprintf("10.100.%d.%d", i>>8&255, i&255),
				Ports: []api.ServicePort{{Name: "http", Protocol: api.PortProtocolTCP, Port: 80}}}}
		s.Namespace, s.Name = "bench", fmt.Sprintf("s%d", i)
		e := &api.Endpoints{TypeMeta: api.TypeMeta{Kind: "Endpoints", APIVersion: api.VersionCore}}
		e.Namespace, e.Name = "bench", s.Name
		sub := api.EndpointSubset{Ports: []api.EndpointPort{{Name: "http", Port: 8080, Protocol: api.PortProtocolTCP}}}
		for a := range 5 {
			if i == 0 && a == 4 {
				a += variant
			}
			sub.Addresses = append(sub.Addresses, api.EndpointAddress{IP: fmt.Sprintf("10.255.%d.%d", a, i&255)})
		}
		e.Subsets = []api.EndpointSubset{sub}
		rs = append(rs, s, e)
	}
	return rs
}

// BenchmarkProxyDerive measures what the proxy subsystem derives on every view that
// changes Services or their endpoints (here: one Service's Endpoints, back and forth), before felix writes anything: the Services'
// endpoints (serviceIndex, shared with DNS), the exempt filter, proxy.Desired (the subsystem's LBCache) and the
// healthCheckNodePort servers, at 1k and 10k Services of 5 endpoints.
func BenchmarkProxyDerive(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			views := proxyBenchViews(b, n)
			p := &proxySubsystem{node: "node1", services: &serviceIndex{}}
			i := 0
			for b.Loop() {
				in := p.inputs(views[i%2])
				st := p.lb.Desired(p.node, in)
				_ = healthChecks(p.node, in)
				if len(st.Ports) != n {
					b.Fatalf("%d ports, want %d", len(st.Ports), n)
				}
				i++
			}
		})
	}
}
