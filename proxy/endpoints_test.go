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
	got := ServiceEndpoints(s, weps, nil)
	want := []Endpoint{
		{Addrs: addrs("10.244.0.1", "fd00::1"), Node: "node1", Ready: true, Workload: "shop/web-a",
			Ports: map[string]uint16{"num": 9090, "same": 82}}, // no port named http: "named" left out
		{Addrs: addrs("10.244.0.2"), Node: "node1", Ready: true, Workload: "shop/web-b",
			Ports: map[string]uint16{"num": 9090, "named": 8080, "same": 82}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", got, want)
	}
}

func TestServiceEndpointsNamedPortNeedsItsProtocol(t *testing.T) {
	w := wep("shop", "dns", map[string]string{"app": "dns"}, []api.WorkloadEndpointPort{{Name: "dns", Protocol: "TCP", Port: 5353}}, "10.244.0.9/32")
	s := svc("shop", "dns", map[string]string{"app": "dns"}, api.ServicePort{Name: "udp", Protocol: "UDP", Port: 53, TargetPort: api.IntOrString{StrVal: "dns"}})
	if got := ServiceEndpoints(s, []*api.WorkloadEndpoint{w}, nil); len(got) != 1 || len(got[0].Ports) != 0 {
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
	got := ServiceEndpoints(s, nil, eps)
	want := []Endpoint{
		{Addrs: addrs("192.0.2.1"), Ready: true, Ports: map[string]uint16{"http": 8080}},
		{Addrs: addrs("192.0.2.2"), Node: "node2", Hostname: "b", Ready: true, Ports: map[string]uint16{"http": 8080}},
		{Addrs: addrs("192.0.2.3"), Ready: false, Ports: map[string]uint16{"http": 8080}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", got, want)
	}
	if got := ServiceEndpoints(s, nil, nil); got != nil {
		t.Errorf("no Endpoints resource: %+v, want none", got)
	}
}
