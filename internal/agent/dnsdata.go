package agent

import (
	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

// dnsData is what the cluster zone answers from: every Service with its addresses, ports
// and endpoints (serviceInputs, as the Service proxy sees them). A Service whose
// clusterIPs do not parse is left out.
func dnsData(inputs []proxy.ServiceInput) *dns.ClusterData {
	data := &dns.ClusterData{Services: make([]dns.Service, 0, len(inputs))}
	for _, in := range inputs {
		s := in.Service
		addrs, err := s.ClusterAddrs()
		if err != nil {
			continue
		}
		ds := dns.Service{Namespace: s.Namespace, Name: s.Name, Headless: s.IsHeadless()}
		if s.Spec.Type == api.ServiceTypeExternalName {
			ds.ExternalName = s.Spec.ExternalName
		} else {
			ds.ClusterIPs = addrs
		}
		ds.Ports = make([]dns.Port, 0, len(s.Spec.Ports))
		for _, p := range s.Spec.Ports {
			ds.Ports = append(ds.Ports, dns.Port{Name: p.Name, Protocol: string(p.Protocol), Port: uint16(p.Port)})
		}
		ds.Endpoints = make([]dns.Endpoint, 0, len(in.Endpoints))
		for _, e := range in.Endpoints {
			ds.Endpoints = append(ds.Endpoints, dns.Endpoint{Addrs: e.Addrs, Hostname: e.Hostname, Ready: e.Ready, Ports: e.Ports})
		}
		data.Services = append(data.Services, ds)
	}
	return data
}

// namespaceNames are the names of the view's Namespaces: each has its "<ns>.svc" name in
// the cluster zone, with Services or not.
func namespaceNames(v *snapshot.View) []string {
	var out []string
	for _, ns := range snapshot.List[*api.Namespace](v) {
		out = append(out, ns.Name)
	}
	return out
}
