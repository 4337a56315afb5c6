// Package proxy owns the Service proxy's desired state, computed with pure functions from
// the agent's snapshot: which endpoints stand behind each Service (endpoints.go), the
// load balancing of one node (lb.go), the UDP conntrack entries a change leaves stale
// (conntrack.go), and the nftables table and transactions that make it (nftables.go). It
// reads no datastore and writes no kernel: felix's ServiceProxy runs what it plans.
// Cluster DNS reads the same endpoints.
package proxy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// Endpoint is one endpoint of a Service.
type Endpoint struct {
	Addrs []netip.Addr
	// Node is the endpoint's node ("" when an Endpoints resource does not say).
	Node string
	// Hostname is the endpoint's own DNS name under a headless Service, if it has one.
	Hostname string
	// Ready, Serving and Terminating are the EndpointSlice conditions (kube-proxy's
	// reading: unset ready and serving are true, unset terminating false). A
	// WorkloadEndpoint is ready and serving; an Endpoints address is serving when ready.
	// The proxy falls back to serving, terminating endpoints when none is ready.
	Ready       bool
	Serving     bool
	Terminating bool
	// Ports maps each Service port's name to the endpoint's port for it; a named
	// targetPort the workload does not declare leaves the Service port out.
	Ports map[string]uint16
	// Workload is "<namespace>/<name>" of the WorkloadEndpoint behind a selector's
	// endpoint ("" for one from an Endpoints resource).
	Workload string
}

// ServiceEndpoints returns the endpoints of svc in a stable order: for a Service with a
// selector, every WorkloadEndpoint of its namespace whose labels carry the selector (no
// central controller: every node derives the same list); for one without, the endpoints
// of the EndpointSlices of its namespace labelled kubernetes.io/service-name with its name
// (others in slices are skipped), merged, or when there is no such slice, the addresses of
// the Endpoints resource of the same name (eps, nil if there is none).
func ServiceEndpoints(svc *api.Service, weps []*api.WorkloadEndpoint, eps *api.Endpoints, epslices []*api.EndpointSlice) []Endpoint {
	if len(svc.Spec.Selector) == 0 {
		if out, ok := fromSlices(svc, epslices); ok {
			return out
		}
		return fromEndpoints(eps)
	}
	var out []Endpoint
	for _, w := range weps {
		if w.Namespace != svc.Namespace || !selects(svc.Spec.Selector, w.Labels) {
			continue
		}
		addrs, err := w.Spec.Addrs()
		if err != nil || len(addrs) == 0 {
			continue // the agent reports such endpoints; they serve nothing
		}
		ep := Endpoint{Addrs: addrs, Node: w.Spec.Node, Ready: true, Serving: true, Ports: map[string]uint16{}, Workload: w.Namespace + "/" + w.Name}
		for _, sp := range svc.Spec.Ports {
			if p, ok := targetPort(sp, w.Spec.Ports); ok {
				ep.Ports[sp.Name] = p
			}
		}
		out = append(out, ep)
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return cmp.Compare(a.Workload, b.Workload) })
	return out
}

// WithHealth applies health records to eps, the endpoints ServiceEndpoints derived for
// svc: when svc has a valid health check (tabby.io/health-check), an endpoint whose
// workload's record (records: svc's namespace's EndpointHealths by name) is failing, and
// was written by the endpoint's own node, is neither ready nor serving, so no proxy
// picks it and DNS does not list it. An endpoint without a record (not probed yet)
// keeps its conditions. eps is not changed: the result is a copy when anything fails.
func WithHealth(svc *api.Service, eps []Endpoint, records func(name string) (*api.EndpointHealth, bool)) []Endpoint {
	if hc, err := svc.HealthCheck(); hc == nil || err != nil {
		return eps
	}
	var out []Endpoint
	for i, ep := range eps {
		_, workload, ok := strings.Cut(ep.Workload, "/")
		if !ok {
			continue
		}
		h, ok := records(api.EndpointHealthName(svc.Name, workload))
		if !ok || h.Spec.Passing || h.Spec.Node != ep.Node {
			continue
		}
		if out == nil {
			out = slices.Clone(eps)
		}
		out[i].Ready, out[i].Serving = false, false
	}
	if out == nil {
		return eps
	}
	return out
}

// selects says whether labels carry every key and value of selector.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// targetPort resolves a Service port's targetPort on one workload: a number as it is (the
// port itself when unset), a name through the workload's declared ports of the same
// protocol.
func targetPort(sp api.ServicePort, ports []api.WorkloadEndpointPort) (uint16, bool) {
	tp := sp.TargetPort
	if !tp.IsString() {
		if tp.IntVal == 0 {
			return uint16(sp.Port), true
		}
		return uint16(tp.IntVal), true
	}
	proto := cmp.Or(string(sp.Protocol), "TCP")
	for _, p := range ports {
		if p.Name == tp.StrVal && cmp.Or(string(p.Protocol), "TCP") == proto {
			return p.Port, true
		}
	}
	return 0, false
}

// fromEndpoints reads a selector-less Service's Endpoints resource: ready and not-ready
// addresses, each with the subset's ports by name.
func fromEndpoints(eps *api.Endpoints) []Endpoint {
	if eps == nil {
		return nil
	}
	byAddr := map[netip.Addr]*Endpoint{}
	for _, ss := range eps.Subsets {
		ports := map[string]uint16{}
		for _, p := range ss.Ports {
			ports[p.Name] = uint16(p.Port)
		}
		add := func(as []api.EndpointAddress, ready bool) {
			for _, a := range as {
				ip, err := netip.ParseAddr(a.IP)
				if err != nil {
					continue // validation refuses these; never serve a bad address
				}
				ep := byAddr[ip]
				if ep == nil {
					ep = &Endpoint{Addrs: []netip.Addr{ip}, Node: a.NodeName, Hostname: a.Hostname, Ready: ready, Serving: ready, Ports: map[string]uint16{}}
					byAddr[ip] = ep
				}
				maps.Copy(ep.Ports, ports)
			}
		}
		add(ss.Addresses, true)
		add(ss.NotReadyAddresses, false)
	}
	return sortedByAddr(byAddr)
}

func sortedByAddr(byAddr map[netip.Addr]*Endpoint) []Endpoint {
	out := make([]Endpoint, 0, len(byAddr))
	for _, ip := range slices.SortedFunc(maps.Keys(byAddr), netip.Addr.Compare) {
		out = append(out, *byAddr[ip])
	}
	return out
}

// fromSlices merges the EndpointSlices of a selector-less Service, in name order; ok is
// false when none names it. Like kube-proxy, it uses the first address of each endpoint.
// An address found in several slices (or twice in one) is one endpoint with the ports of
// all: ready or serving if any says so, terminating only if all do. FQDN slices, which
// validation refuses, and addresses that do not parse are skipped.
func fromSlices(svc *api.Service, all []*api.EndpointSlice) ([]Endpoint, bool) {
	var mine []*api.EndpointSlice
	for _, s := range all {
		if s.Namespace == svc.Namespace && s.ServiceName() == svc.Name {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return nil, false
	}
	slices.SortFunc(mine, func(a, b *api.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	byAddr := map[netip.Addr]*Endpoint{}
	for _, s := range mine {
		if s.AddressType != api.AddressTypeIPv4 && s.AddressType != api.AddressTypeIPv6 {
			continue
		}
		ports := map[string]uint16{}
		for _, p := range s.Ports {
			if p.Port > 0 && p.Port <= 65535 {
				ports[p.Name] = uint16(p.Port)
			}
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || ip.Zone() != "" || ip.Is4() != (s.AddressType == api.AddressTypeIPv4) {
				continue // validation refuses these; never serve a bad address
			}
			c := e.Conditions
			ep := byAddr[ip]
			if ep == nil {
				ep = &Endpoint{Addrs: []netip.Addr{ip}, Node: e.NodeName, Hostname: e.Hostname,
					Ready: c.IsReady(), Serving: c.IsServing(), Terminating: c.IsTerminating(), Ports: map[string]uint16{}}
				byAddr[ip] = ep
			} else {
				ep.Ready = ep.Ready || c.IsReady()
				ep.Serving = ep.Serving || c.IsServing()
				ep.Terminating = ep.Terminating && c.IsTerminating()
				ep.Node = cmp.Or(ep.Node, e.NodeName)
				ep.Hostname = cmp.Or(ep.Hostname, e.Hostname)
			}
			maps.Copy(ep.Ports, ports)
		}
	}
	return sortedByAddr(byAddr), true
}
