package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/bgp"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// BenchmarkBGPServiceAdverts measures what a change to Services or endpoints costs the
// BGP subsystem on top of the derivation it shares with the proxy and DNS: localServices
// and DesiredAdvertisements over 10,000 Services (100 namespaces, 5 endpoints each on 10
// nodes, every 10th with externalTrafficPolicy Local, an external and a load-balancer IP),
// beside serviceInputs of the same view, the shared derivation, as the baseline. It
// reports both per change and their ratio.
func BenchmarkBGPServiceAdverts(b *testing.B) {
	const services, perService, nodes = 10000, 5, 10
	var rs []api.Resource
	for i := range services {
		ns, app := fmt.Sprintf("ns%d", i%100), fmt.Sprintf("s%d", i)
		s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
		s.Namespace, s.Name = ns, app
		s.Spec = api.ServiceSpec{Type: api.ServiceTypeLoadBalancer, ExternalTrafficPolicy: api.TrafficPolicyCluster,
			ClusterIP: fmt.Sprintf("10.96.%d.%d", i>>8, i&255), Selector: map[string]string{"app": app},
			ExternalIPs: []string{fmt.Sprintf("198.51.%d.%d", i>>8, i&255)}, Ports: []api.ServicePort{{Port: 80}}}
		s.Status = &api.ServiceStatus{LoadBalancer: api.LoadBalancerStatus{Ingress: []api.LoadBalancerIngress{{IP: fmt.Sprintf("203.0.%d.%d", i>>8, i&255)}}}}
		if i%10 == 0 {
			s.Spec.ExternalTrafficPolicy = api.TrafficPolicyLocal
		}
		rs = append(rs, s)
		for j := range perService {
			w := wep(ns, fmt.Sprintf("%s-%d", app, j), fmt.Sprintf("node%d", (i+j)%nodes), "tabbyx",
				fmt.Sprintf("10.%d.%d.%d/32", 100+j, i>>8, i&255))
			w.Labels = map[string]string{"app": app}
			rs = append(rs, w)
		}
	}
	v, err := snapshot.NewView(nil, rs...)
	if err != nil {
		b.Fatal(err)
	}
	cidrs := bgp.ServiceCIDRs{
		ClusterIPs:      []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		ExternalIPs:     []netip.Prefix{netip.MustParsePrefix("198.51.0.0/16")},
		LoadBalancerIPs: []netip.Prefix{netip.MustParsePrefix("203.0.0.0/16")},
	}
	var derive, adverts time.Duration
	var n int
	for b.Loop() {
		start := time.Now()
		in := serviceInputs(v)
		mid := time.Now()
		out := bgp.DesiredAdvertisements(bgp.AdvertInput{Services: cidrs, LocalServices: localServices("node1", in)})
		adverts += time.Since(mid)
		derive += mid.Sub(start)
		n = len(out)
	}
	// Every Local Service has an endpoint on node1: 3 host routes each, and the 3 CIDRs.
	if want := 3 + 3*services/10; n != want {
		b.Fatalf("%d prefixes advertised, want %d", n, want)
	}
	ops := float64(b.N)
	b.ReportMetric(float64(derive.Nanoseconds())/ops, "derive-ns/op")
	b.ReportMetric(float64(adverts.Nanoseconds())/ops, "bgp-ns/op")
	b.ReportMetric(float64(adverts)/float64(derive), "bgp/derive")
}
