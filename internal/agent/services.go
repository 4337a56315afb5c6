package agent

import (
	"sync"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

var (
	kindServices        = mustKind("services")
	kindEndpoints       = mustKind("endpoints")
	kindEndpointSlices  = mustKind("endpointslices")
	kindEndpointHealths = mustKind("endpointhealths")
)

// serviceKinds are the kinds Services' endpoints are derived from: a view that changes
// none of them leaves serviceInputs as they were.
var serviceKinds = []*api.Kind{kindServices, kindEndpoints, kindEndpointSlices, kindWorkloadEndpoints, kindEndpointHealths}

// serviceInputs pairs every Service of a view with its endpoints, derived once for the
// Service proxy and cluster DNS alike (proxy.ServiceEndpoints), in key order. Endpoints
// that fail their Service's health check, by the EndpointHealth records of their nodes,
// are neither ready nor serving (proxy.WithHealth).
func serviceInputs(v *snapshot.View) []proxy.ServiceInput {
	byNS := map[string][]*api.WorkloadEndpoint{}
	for _, w := range snapshot.List[*api.WorkloadEndpoint](v) {
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
	}
	bySvc := map[[2]string][]*api.EndpointSlice{}
	for _, s := range snapshot.List[*api.EndpointSlice](v) {
		if name := s.ServiceName(); name != "" {
			bySvc[[2]string{s.Namespace, name}] = append(bySvc[[2]string{s.Namespace, name}], s)
		}
	}
	health := v.Resources(kindEndpointHealths)
	var out []proxy.ServiceInput
	for _, s := range snapshot.List[*api.Service](v) {
		eps, _ := snapshot.Get[*api.Endpoints](v, s.Namespace, s.Name)
		slices := bySvc[[2]string{s.Namespace, s.Name}]
		endpoints := proxy.ServiceEndpoints(s, byNS[s.Namespace], eps, slices)
		endpoints = proxy.WithHealth(s, endpoints, func(name string) (*api.EndpointHealth, bool) {
			r, ok := health[s.Namespace+"/"+name]
			if !ok {
				return nil, false
			}
			return r.(*api.EndpointHealth), true
		})
		out = append(out, proxy.ServiceInput{Service: s, Endpoints: endpoints})
	}
	return out
}

// serviceIndex derives serviceInputs once per view for the Service proxy and cluster DNS,
// which both need them on the same change. What it returns is shared: callers must not
// change it.
type serviceIndex struct {
	mu   sync.Mutex
	view *snapshot.View
	in   []proxy.ServiceInput
}

func (x *serviceIndex) inputs(v *snapshot.View) []proxy.ServiceInput {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.view != v {
		x.view, x.in = v, serviceInputs(v)
	}
	return x.in
}
