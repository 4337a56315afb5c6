package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/proxy"
)

// serviceData is what the endpoints of a namespace's Services are derived from, as every
// agent derives them: Services, WorkloadEndpoints, Endpoints, EndpointSlices and the
// agents' EndpointHealth records.
type serviceData struct {
	services []*api.Service
	weps     map[string][]*api.WorkloadEndpoint // by namespace
	eps      map[string]*api.Endpoints          // by "<namespace>/<name>"
	slices   map[string][]*api.EndpointSlice    // by "<namespace>/<service>"
	health   map[string]*api.EndpointHealth     // by "<namespace>/<name>"
}

// loadServiceData lists what the endpoints of the Services of ns ("" every namespace)
// are derived from.
func loadServiceData(ctx context.Context, ds *datastore.Client, ns string) (*serviceData, error) {
	d := &serviceData{weps: map[string][]*api.WorkloadEndpoint{}, eps: map[string]*api.Endpoints{},
		slices: map[string][]*api.EndpointSlice{}, health: map[string]*api.EndpointHealth{}}
	var err error
	if d.services, _, err = datastore.ListAs[*api.Service](ctx, ds, ns); err != nil {
		return nil, err
	}
	weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, ds, ns)
	if err != nil {
		return nil, err
	}
	for _, w := range weps {
		d.weps[w.Namespace] = append(d.weps[w.Namespace], w)
	}
	eps, _, err := datastore.ListAs[*api.Endpoints](ctx, ds, ns)
	if err != nil {
		return nil, err
	}
	for _, e := range eps {
		d.eps[e.Namespace+"/"+e.Name] = e
	}
	slices, _, err := datastore.ListAs[*api.EndpointSlice](ctx, ds, ns)
	if err != nil {
		return nil, err
	}
	for _, s := range slices {
		if name := s.ServiceName(); name != "" {
			d.slices[s.Namespace+"/"+name] = append(d.slices[s.Namespace+"/"+name], s)
		}
	}
	health, _, err := datastore.ListAs[*api.EndpointHealth](ctx, ds, ns)
	if err != nil {
		return nil, err
	}
	for _, h := range health {
		d.health[h.Namespace+"/"+h.Name] = h
	}
	return d, nil
}

// endpoints are svc's endpoints as the agents derive them (proxy.ServiceEndpoints, then
// proxy.WithHealth), and where they come from: "selector", "endpointslices" or
// "endpoints".
func (d *serviceData) endpoints(svc *api.Service) ([]proxy.Endpoint, string) {
	key := svc.Namespace + "/" + svc.Name
	source := "selector"
	switch {
	case len(svc.Spec.Selector) > 0:
	case len(d.slices[key]) > 0:
		source = "endpointslices"
	default:
		source = "endpoints"
	}
	eps := proxy.ServiceEndpoints(svc, d.weps[svc.Namespace], d.eps[key], d.slices[key])
	return proxy.WithHealth(svc, eps, func(name string) (*api.EndpointHealth, bool) {
		h, ok := d.health[svc.Namespace+"/"+name]
		return h, ok
	}), source
}

// healthOf says how svc's health check sees ep: "-" without a check, "unknown" before
// the endpoint's node has probed it, else the record's "passing" or "failing", with the
// record's reason.
func (d *serviceData) healthOf(svc *api.Service, ep proxy.Endpoint) (string, string) {
	if hc, err := svc.HealthCheck(); hc == nil || err != nil {
		return "-", ""
	}
	_, workload, _ := strings.Cut(ep.Workload, "/")
	h := d.health[svc.Namespace+"/"+api.EndpointHealthName(svc.Name, workload)]
	switch {
	case h == nil || h.Spec.Node != ep.Node:
		return "unknown", ""
	case h.Spec.Passing:
		return "passing", ""
	}
	return "failing", h.Spec.Reason
}

// endpointAddrs is an endpoint's first address with each of its ports, in the order of
// the Service's ports: "10.65.0.2:8080,10.65.0.2:8081".
func endpointAddrs(svc *api.Service, ep proxy.Endpoint) string {
	if len(ep.Addrs) == 0 {
		return ""
	}
	var out []string
	for _, sp := range svc.Spec.Ports {
		if p, ok := ep.Ports[sp.Name]; ok {
			out = append(out, netip.AddrPortFrom(ep.Addrs[0], p).String())
		}
	}
	if len(out) == 0 {
		return ep.Addrs[0].String()
	}
	return strings.Join(out, ",")
}

// readyEndpoints is the ENDPOINTS column of `get services -o wide`: the addresses of
// the Service's ready endpoints, at most three and a count of the rest, as kubectl.
func (d *serviceData) readyEndpoints(svc *api.Service) string {
	eps, _ := d.endpoints(svc)
	var out []string
	for _, ep := range eps {
		if ep.Ready {
			out = append(out, endpointAddrs(svc, ep))
		}
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + " + " + strconv.Itoa(len(out)-3) + " more"
	}
	return cmp.Or(strings.Join(out, ","), "<none>")
}

// printEndpoints is `tabbyctl get endpoints` as a table: a row per endpoint of each
// Service named (every Service when names is empty), as the agents derive it, with its
// conditions and health; then the stored Endpoints resources (named ones, or all) that
// no Service takes its endpoints from. A name that is neither a Service nor an
// Endpoints resource is an error.
func printEndpoints(w io.Writer, d *serviceData, stored []*api.Endpoints, names []string, showNamespace, wide bool) error {
	head := []string{"NAME", "ENDPOINTS", "NODE", "READY", "SERVING", "HEALTH", "TERMINATING", "WORKLOAD", "SOURCE", "REASON"}
	shown := 6 // the rest with -o wide
	if wide {
		shown = len(head)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	row := func(ns string, cells ...string) {
		cells = cells[:shown]
		if showNamespace {
			cells = append([]string{ns}, cells...)
		}
		for i, c := range cells {
			cells[i] = cmp.Or(c, "-")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	row("NAMESPACE", head...)
	want := func(name string) bool { return len(names) == 0 || slices.Contains(names, name) }
	found := map[string]bool{}
	used := map[string]bool{} // Endpoints resources a Service reads
	for _, svc := range d.services {
		if svc.Spec.Type == api.ServiceTypeExternalName || !want(svc.Name) {
			continue
		}
		found[svc.Name] = true
		eps, source := d.endpoints(svc)
		if source == "endpoints" {
			used[svc.Namespace+"/"+svc.Name] = true
		}
		if len(eps) == 0 {
			row(svc.Namespace, svc.Name, "<none>", "", "", "", "", "", "", source, "")
		}
		for _, ep := range eps {
			health, reason := d.healthOf(svc, ep)
			_, workload, _ := strings.Cut(ep.Workload, "/")
			row(svc.Namespace, svc.Name, endpointAddrs(svc, ep), ep.Node, strconv.FormatBool(ep.Ready), strconv.FormatBool(ep.Serving),
				health, strconv.FormatBool(ep.Terminating), workload, source, reason)
		}
	}
	for _, e := range stored {
		if used[e.Namespace+"/"+e.Name] || !want(e.Name) {
			continue
		}
		found[e.Name] = true
		row(e.Namespace, e.Name, cmp.Or(storedEndpoints(e), "<none>"), "", "", "", "", "", "", "endpoints (unused)", "")
	}
	for _, n := range names {
		if !found[n] {
			return fmt.Errorf("endpoints %q: no Service and no Endpoints of that name", n)
		}
	}
	return tw.Flush()
}
