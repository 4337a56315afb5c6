package agent

import (
	"maps"
	"slices"
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
	kindNamespaces      = mustKind("namespaces")
	// serviceInputKinds are the kinds serviceInputs reads: a view that changes none of them
	// derives the same inputs.
	serviceInputKinds = []*api.Kind{kindServices, kindEndpoints, kindEndpointSlices, kindWorkloadEndpoints, kindEndpointHealths}
)

// serviceInputs pairs every Service of a view with its endpoints, derived once for the
// Service proxy, cluster DNS and BGP alike (proxy.ServiceEndpoints), in key order.
// Endpoints that fail their Service's health check, by the EndpointHealth records of
// their nodes, are neither ready nor serving (proxy.WithHealth).
func serviceInputs(v *snapshot.View) []proxy.ServiceInput {
	return new(serviceIndex).inputs(v)
}

// serviceIndex derives serviceInputs once per view for the Service proxy, cluster DNS and
// BGP, which all need them on the same change. What it returns is shared: callers must not
// change it.
//
// It carries each Service's endpoints over from the view before when what they are
// derived from is the same (views share unchanged resources, so this is a pointer
// comparison): a one-Service change in a cluster of 10k Services derives one Service's
// endpoints, not 10k.
type serviceIndex struct {
	mu   sync.Mutex
	view *snapshot.View
	in   []proxy.ServiceInput
	keys []string // of the Services, sorted
	memo map[*api.Service]serviceMemo
}

// serviceMemo is what a Service's endpoints were derived from, the endpoints as derived
// (raw), and with the health records applied.
type serviceMemo struct {
	eps       *api.Endpoints
	slices    []*api.EndpointSlice
	raw       []proxy.Endpoint
	endpoints []proxy.Endpoint
}

func (x *serviceIndex) inputs(v *snapshot.View) []proxy.ServiceInput {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.view == v {
		return x.in
	}
	services, endpoints := v.Resources(kindServices), v.Resources(kindEndpoints)
	if x.view == nil || v.Differs(x.view, false, kindServices) {
		x.keys = slices.Sorted(maps.Keys(services))
	}
	// A Service with a selector reads the WorkloadEndpoints of its namespace: a change to
	// them derives the selector Services of that namespace afresh.
	changedNS := map[string]bool{}
	weps := v.Resources(kindWorkloadEndpoints)
	if x.view != nil && v.Differs(x.view, false, kindWorkloadEndpoints) {
		old := x.view.Resources(kindWorkloadEndpoints)
		for k, w := range weps {
			if old[k] != w {
				changedNS[w.GetObjectMeta().Namespace] = true
			}
		}
		for k, w := range old {
			if _, ok := weps[k]; !ok {
				changedNS[w.GetObjectMeta().Namespace] = true
			}
		}
	}
	// The WorkloadEndpoints of a namespace, grouped when first needed: of every namespace
	// on the first view, then of the changed ones and of any other a Service derived
	// afresh asks for.
	var byNS map[string][]*api.WorkloadEndpoint
	covered := maps.Clone(changedNS)
	workloads := func(ns string) []*api.WorkloadEndpoint {
		if byNS == nil {
			byNS = workloadsByNamespace(weps, x.view == nil, changedNS)
		}
		if x.view != nil && !covered[ns] {
			maps.Copy(byNS, workloadsByNamespace(weps, false, map[string]bool{ns: true}))
			covered[ns] = true
		}
		return byNS[ns]
	}
	bySvc := map[[2]string][]*api.EndpointSlice{}
	for _, s := range snapshot.List[*api.EndpointSlice](v) {
		if name := s.ServiceName(); name != "" {
			bySvc[[2]string{s.Namespace, name}] = append(bySvc[[2]string{s.Namespace, name}], s)
		}
	}
	// Health records apply afresh to every Service when they change.
	health := v.Resources(kindEndpointHealths)
	healthChanged := x.view == nil || v.Differs(x.view, false, kindEndpointHealths)
	in := make([]proxy.ServiceInput, 0, len(x.keys))
	memo := make(map[*api.Service]serviceMemo, len(x.keys))
	for _, key := range x.keys {
		svc := services[key].(*api.Service)
		eps, _ := endpoints[key].(*api.Endpoints)
		epslices := bySvc[[2]string{svc.Namespace, svc.Name}]
		m, ok := x.memo[svc]
		if !ok || m.eps != eps || !slices.Equal(m.slices, epslices) || (len(svc.Spec.Selector) > 0 && (x.view == nil || changedNS[svc.Namespace])) {
			var ws []*api.WorkloadEndpoint
			if len(svc.Spec.Selector) > 0 {
				ws = workloads(svc.Namespace)
			}
			m = serviceMemo{eps: eps, slices: epslices, raw: proxy.ServiceEndpoints(svc, ws, eps, epslices)}
			m.endpoints = withHealth(svc, m.raw, health)
		} else if healthChanged {
			m.endpoints = withHealth(svc, m.raw, health)
		}
		in = append(in, proxy.ServiceInput{Service: svc, Endpoints: m.endpoints})
		memo[svc] = m
	}
	x.view, x.in, x.memo = v, in, memo
	return in
}

// withHealth is proxy.WithHealth over a view's EndpointHealth records (by key).
func withHealth(svc *api.Service, eps []proxy.Endpoint, records map[string]api.Resource) []proxy.Endpoint {
	return proxy.WithHealth(svc, eps, func(name string) (*api.EndpointHealth, bool) {
		r, ok := records[svc.Namespace+"/"+name]
		if !ok {
			return nil, false
		}
		return r.(*api.EndpointHealth), true
	})
}

// workloadsByNamespace groups the WorkloadEndpoints (a view's, by key) by namespace, in
// key order: of every namespace, or only of those in namespaces.
func workloadsByNamespace(weps map[string]api.Resource, all bool, namespaces map[string]bool) map[string][]*api.WorkloadEndpoint {
	var keys []string
	for k, w := range weps {
		if all || namespaces[w.GetObjectMeta().Namespace] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	byNS := map[string][]*api.WorkloadEndpoint{}
	for _, k := range keys {
		w := weps[k].(*api.WorkloadEndpoint)
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
	}
	return byNS
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
