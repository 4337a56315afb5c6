package proxy

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func wep(ns, name string, labels map[string]string, ports []api.WorkloadEndpointPort, nets ...string) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.VersionCalico}}
	w.Namespace, w.Name, w.Labels = ns, name, labels
	w.Spec.Node, w.Spec.InterfaceName, w.Spec.IPNetworks, w.Spec.Ports = "node1", "tabby0", nets, ports
	return w
}

func svc(ns, name string, selector map[string]string, ports ...api.ServicePort) *api.Service {
	s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	s.Namespace, s.Name = ns, name
	s.Spec.Selector, s.Spec.Ports = selector, ports
	return s
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestServiceEndpointsFromSelector(t *testing.T) {
	httpPort := []api.WorkloadEndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}
	weps := []*api.WorkloadEndpoint{
		wep("shop", "web-b", map[string]string{"app": "web", "tier": "front"}, httpPort, "10.244.0.2/32"),
		wep("shop", "web-a", map[string]string{"app": "web"}, nil, "10.244.0.1/32", "fd00::1/128"),
		wep("shop", "db", map[string]string{"app": "db"}, nil, "10.244.0.3/32"),
		wep("other", "web", map[string]string{"app": "web"}, httpPort, "10.244.0.4/32"),
	}
	s := svc("shop", "web", map[string]string{"app": "web"},
		api.ServicePort{Name: "num", Port: 80, TargetPort: api.IntOrString{IntVal: 9090}},
		api.ServicePort{Name: "named", Port: 81, TargetPort: api.IntOrString{StrVal: "http"}},
		api.ServicePort{Name: "same", Port: 82})
	got := ServiceEndpoints(s, weps, nil, nil)
	want := []Endpoint{
		{Addrs: addrs("10.244.0.1", "fd00::1"), Node: "node1", Ready: true, Serving: true, Workload: "shop/web-a",
			Ports: map[string]uint16{"num": 9090, "same": 82}}, // no port named http: "named" left out
		{Addrs: addrs("10.244.0.2"), Node: "node1", Ready: true, Serving: true, Workload: "shop/web-b",
			Ports: map[string]uint16{"num": 9090, "named": 8080, "same": 82}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", got, want)
	}
}

func TestServiceEndpointsNamedPortNeedsItsProtocol(t *testing.T) {
	w := wep("shop", "dns", map[string]string{"app": "dns"}, []api.WorkloadEndpointPort{{Name: "dns", Protocol: "TCP", Port: 5353}}, "10.244.0.9/32")
	s := svc("shop", "dns", map[string]string{"app": "dns"}, api.ServicePort{Name: "udp", Protocol: "UDP", Port: 53, TargetPort: api.IntOrString{StrVal: "dns"}})
	if got := ServiceEndpoints(s, []*api.WorkloadEndpoint{w}, nil, nil); len(got) != 1 || len(got[0].Ports) != 0 {
		t.Errorf("a UDP port resolved through a TCP port name: %+v", got)
	}
}

func TestServiceEndpointsFromEndpointsResource(t *testing.T) {
	s := svc("shop", "ext", nil, api.ServicePort{Name: "http", Port: 80})
	eps := &api.Endpoints{Subsets: []api.EndpointSubset{{
		Addresses:         []api.EndpointAddress{{IP: "192.0.2.2", Hostname: "b", NodeName: "node2"}, {IP: "192.0.2.1"}},
		NotReadyAddresses: []api.EndpointAddress{{IP: "192.0.2.3"}},
		Ports:             []api.EndpointPort{{Name: "http", Port: 8080}},
	}}}
	got := ServiceEndpoints(s, nil, eps, nil)
	want := []Endpoint{
		{Addrs: addrs("192.0.2.1"), Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
		{Addrs: addrs("192.0.2.2"), Node: "node2", Hostname: "b", Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
		{Addrs: addrs("192.0.2.3"), Ready: false, Ports: map[string]uint16{"http": 8080}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", got, want)
	}
	if got := ServiceEndpoints(s, nil, nil, nil); got != nil {
		t.Errorf("no Endpoints resource: %+v, want none", got)
	}
}

func slice(ns, name, service string, at api.AddressType, ports []api.EndpointSlicePort, eps ...api.EndpointSliceEndpoint) *api.EndpointSlice {
	s := &api.EndpointSlice{TypeMeta: api.TypeMeta{Kind: "EndpointSlice", APIVersion: api.VersionDiscovery}, AddressType: at, Endpoints: eps, Ports: ports}
	s.Namespace, s.Name = ns, name
	if service != "" {
		s.Labels = map[string]string{api.LabelServiceName: service}
	}
	return s
}

func cond(ready, serving, terminating *bool) api.EndpointConditions {
	return api.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
}

func TestServiceEndpointsFromSlices(t *testing.T) {
	yes, no := new(true), new(false)
	s := svc("shop", "ext", nil, api.ServicePort{Name: "http", Port: 80}, api.ServicePort{Name: "dns", Protocol: "UDP", Port: 53})
	http := []api.EndpointSlicePort{{Name: "http", Protocol: "TCP", Port: 8080}}
	dns := []api.EndpointSlicePort{{Name: "dns", Protocol: "UDP", Port: 5353}}
	eps := &api.Endpoints{Subsets: []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: "192.0.2.99"}}, Ports: []api.EndpointPort{{Name: "http", Port: 1}}}}}
	tests := []struct {
		name   string
		slices []*api.EndpointSlice
		want   []Endpoint
	}{
		{"no slice: the Endpoints resource", []*api.EndpointSlice{
			slice("shop", "other", "web", api.AddressTypeIPv4, http, api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}}),
			slice("else", "ext-1", "ext", api.AddressTypeIPv4, http, api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}}),
			slice("shop", "unlabelled", "", api.AddressTypeIPv4, http, api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}}),
		}, []Endpoint{{Addrs: addrs("192.0.2.99"), Ready: true, Serving: true, Ports: map[string]uint16{"http": 1}}}},
		{"an empty slice means no endpoint", []*api.EndpointSlice{slice("shop", "ext-1", "ext", api.AddressTypeIPv4, http)}, []Endpoint{}},
		{"conditions", []*api.EndpointSlice{slice("shop", "ext-1", "ext", api.AddressTypeIPv4, http,
			api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.4"}, Conditions: cond(no, yes, yes), NodeName: "node2"},
			api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.3"}, Conditions: cond(no, no, nil)},
			api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.2", "192.0.2.9"}, Conditions: cond(yes, nil, no), Hostname: "b"},
			api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}},
		)}, []Endpoint{
			{Addrs: addrs("192.0.2.1"), Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
			{Addrs: addrs("192.0.2.2"), Hostname: "b", Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
			{Addrs: addrs("192.0.2.3"), Ports: map[string]uint16{"http": 8080}},
			{Addrs: addrs("192.0.2.4"), Node: "node2", Serving: true, Terminating: true, Ports: map[string]uint16{"http": 8080}},
		}},
		{"several slices merge, one endpoint per address", []*api.EndpointSlice{
			slice("shop", "ext-b", "ext", api.AddressTypeIPv4, dns,
				api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}, Conditions: cond(no, no, yes), NodeName: "node1"},
				api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.2"}, Conditions: cond(no, yes, yes)}),
			slice("shop", "ext-a", "ext", api.AddressTypeIPv4, http,
				api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.1"}, Conditions: cond(yes, yes, no)},
				api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.2"}, Conditions: cond(no, no, yes)},
				api.EndpointSliceEndpoint{Addresses: []string{"192.0.2.2"}, Conditions: cond(no, no, yes)}),
			slice("shop", "ext-v6", "ext", api.AddressTypeIPv6, http,
				api.EndpointSliceEndpoint{Addresses: []string{"fd00::1"}}),
			slice("shop", "ext-fqdn", "ext", api.AddressTypeFQDN, http,
				api.EndpointSliceEndpoint{Addresses: []string{"example.com"}}),
			slice("shop", "ext-bad", "ext", api.AddressTypeIPv4, http,
				api.EndpointSliceEndpoint{Addresses: []string{"fd00::2"}}, api.EndpointSliceEndpoint{Addresses: []string{"x"}}, api.EndpointSliceEndpoint{}),
		}, []Endpoint{
			{Addrs: addrs("192.0.2.1"), Node: "node1", Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080, "dns": 5353}},
			{Addrs: addrs("192.0.2.2"), Serving: true, Terminating: true, Ports: map[string]uint16{"http": 8080, "dns": 5353}},
			{Addrs: addrs("fd00::1"), Ready: true, Serving: true, Ports: map[string]uint16{"http": 8080}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ServiceEndpoints(s, nil, eps, tt.slices)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("endpoints =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
	// A Service with a selector ignores slices.
	sel := svc("shop", "ext", map[string]string{"app": "x"}, api.ServicePort{Name: "http", Port: 80})
	if got := ServiceEndpoints(sel, nil, nil, tests[2].slices); got != nil {
		t.Errorf("selector Service took slices: %+v", got)
	}
}

func TestDesiredServingTerminating(t *testing.T) {
	web := api.ServicePort{Name: "http", Protocol: "TCP", Port: 80}
	http := map[string]uint16{"http": 8080}
	terminating := func(node, a string, serving bool) Endpoint {
		return Endpoint{Addrs: addrs(a), Node: node, Serving: serving, Terminating: true, Ports: http}
	}
	ready := Endpoint{Addrs: addrs("10.65.0.1"), Node: "node2", Ready: true, Serving: true, Ports: http}
	tests := []struct {
		name  string
		local bool
		eps   []Endpoint
		want  []Backend
	}{
		{"a ready endpoint: terminating ones stay out", false, []Endpoint{ready, terminating("node1", "10.65.0.2", true)},
			[]Backend{be("10.65.0.1", 8080)}},
		{"none ready: serving terminating ones", false, []Endpoint{terminating("node1", "10.65.0.2", true), terminating("node1", "10.65.0.3", false),
			{Addrs: addrs("10.65.0.4"), Serving: true, Ports: http}}, // serving, not ready, not terminating: never
			[]Backend{be("10.65.0.2", 8080)}},
		{"none serving: reject", false, []Endpoint{terminating("node1", "10.65.0.3", false)}, nil},
		{"Local: no local ready endpoint, a local serving terminating one", true, []Endpoint{ready, terminating("node1", "10.65.0.2", true)},
			[]Backend{be("10.65.0.2", 8080)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clusterSvc("shop", "web", "10.96.0.10", web)
			if tt.local {
				s.Spec.InternalTrafficPolicy = api.TrafficPolicyLocal
			}
			got := Desired("node1", []ServiceInput{{Service: s, Endpoints: tt.eps}})
			if len(got.Ports) != 1 || !reflect.DeepEqual(got.Ports[0].Backends, tt.want) {
				t.Errorf("backends = %+v, want %v", got.Ports, tt.want)
			}
		})
	}
}

// TestWithHealth: a failing record written by the endpoint's node takes the endpoint
// out (neither ready nor serving, so Desired balances over the rest and rejects when
// none is left); a passing one, none, one from another node, or a Service without a
// check leave the endpoints as they are.
func TestWithHealth(t *testing.T) {
	weps := []*api.WorkloadEndpoint{
		wep("shop", "web-a", map[string]string{"app": "web"}, nil, "10.244.0.1/32"),
		wep("shop", "web-b", map[string]string{"app": "web"}, nil, "10.244.0.2/32"),
		wep("shop", "web-c", map[string]string{"app": "web"}, nil, "10.244.0.3/32"),
	}
	s := svc("shop", "web", map[string]string{"app": "web"}, api.ServicePort{Name: "http", Protocol: "TCP", Port: 80, TargetPort: api.IntOrString{IntVal: 8080}})
	s.Spec.ClusterIP = "10.96.0.5"
	s.Annotations = map[string]string{api.AnnotationHealthCheck: "tcp"}
	record := func(workload, node string, passing bool) *api.EndpointHealth {
		h := &api.EndpointHealth{Spec: api.EndpointHealthSpec{Service: "web", Workload: workload, Node: node, Passing: passing}}
		h.Namespace, h.Name = "shop", api.EndpointHealthName("web", workload)
		return h
	}
	lookup := func(rs ...*api.EndpointHealth) func(string) (*api.EndpointHealth, bool) {
		return func(name string) (*api.EndpointHealth, bool) {
			for _, r := range rs {
				if r.Name == name {
					return r, true
				}
			}
			return nil, false
		}
	}
	eps := ServiceEndpoints(s, weps, nil, nil)
	backends := func(eps []Endpoint) []string {
		var out []string
		for _, p := range Desired("node1", []ServiceInput{{Service: s, Endpoints: eps}}).Ports {
			for _, b := range p.Backends {
				out = append(out, b.String())
			}
		}
		return out
	}
	ready := func(eps []Endpoint) (out []bool) {
		for _, ep := range eps {
			out = append(out, ep.Ready && ep.Serving)
		}
		return out
	}
	for _, tt := range []struct {
		name     string
		records  []*api.EndpointHealth
		noCheck  bool
		ready    []bool
		backends []string
	}{
		{"no records", nil, false, []bool{true, true, true}, []string{"10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"}},
		{"one failing", []*api.EndpointHealth{record("web-a", "node1", true), record("web-b", "node1", false)}, false,
			[]bool{true, false, true}, []string{"10.244.0.1:8080", "10.244.0.3:8080"}},
		{"failing, from another node", []*api.EndpointHealth{record("web-b", "node2", false)}, false,
			[]bool{true, true, true}, []string{"10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"}},
		{"all failing", []*api.EndpointHealth{record("web-a", "node1", false), record("web-b", "node1", false), record("web-c", "node1", false)}, false,
			[]bool{false, false, false}, nil},
		{"check removed", []*api.EndpointHealth{record("web-b", "node1", false)}, true,
			[]bool{true, true, true}, []string{"10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := *s
			if tt.noCheck {
				s.Annotations = nil
			}
			got := WithHealth(&s, eps, lookup(tt.records...))
			if !reflect.DeepEqual(ready(got), tt.ready) {
				t.Errorf("ready and serving: %v, want %v", ready(got), tt.ready)
			}
			if !reflect.DeepEqual(ready(eps), []bool{true, true, true}) {
				t.Errorf("WithHealth changed its input: %v", ready(eps))
			}
			if b := backends(got); !reflect.DeepEqual(b, tt.backends) {
				t.Errorf("backends %v, want %v", b, tt.backends)
			}
		})
	}
}
