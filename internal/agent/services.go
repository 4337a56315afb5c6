package agent

import (
	"sync"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

var (
	kindServices       = mustKind("services")
	kindEndpoints      = mustKind("endpoints")
	kindEndpointSlices = mustKind("endpointslices")
	// serviceInputKinds are the kinds serviceInputs reads: a view that changes none of them
	// derives the same inputs.
	serviceInputKinds = []*api.Kind{kindServices, kindEndpoints, kindEndpointSlices, kindWorkloadEndpoints}
)

// serviceInputs pairs every Service of a view with its endpoints, derived once for the
// Service proxy, cluster DNS and BGP alike (proxy.ServiceEndpoints), in key order.
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
	var out []proxy.ServiceInput
	for _, s := range snapshot.List[*api.Service](v) {
		eps, _ := snapshot.Get[*api.Endpoints](v, s.Namespace, s.Name)
		slices := bySvc[[2]string{s.Namespace, s.Name}]
		out = append(out, proxy.ServiceInput{Service: s, Endpoints: proxy.ServiceEndpoints(s, byNS[s.Namespace], eps, slices)})
	}
	return out
}

// localReadyEndpoints counts the ready endpoints on node: those behind a Service's
// healthCheckNodePort and its BGP host routes (externalTrafficPolicy Local).
func localReadyEndpoints(node string, eps []proxy.Endpoint) int {
	n := 0
	for _, ep := range eps {
		if ep.Ready && ep.Node == node {
			n++
		}
	}
	return n
}

// serviceIndex derives serviceInputs once per view for the Service proxy, cluster DNS and
// BGP, which all need them on the same change. What it returns is shared: callers must not
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
