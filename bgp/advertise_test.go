package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

func pool(cidr string, noExport bool) *api.IPPool {
	return &api.IPPool{Spec: api.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
}

// service is a Service with cluster IPs, external IPs, load-balancer ingress IPs and an
// externalTrafficPolicy.
func service(name string, typ api.ServiceType, etp api.TrafficPolicy, cluster, external, lb []string) *api.Service {
	s := &api.Service{Spec: api.ServiceSpec{Type: typ, ClusterIPs: cluster, ExternalIPs: external, ExternalTrafficPolicy: etp}}
	s.Namespace, s.Name = "shop", name
	if len(cluster) > 0 {
		s.Spec.ClusterIP = cluster[0]
	}
	if lb != nil {
		s.Status = &api.ServiceStatus{}
		for _, ip := range lb {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, api.LoadBalancerIngress{IP: ip})
		}
	}
	return s
}

func TestDesiredAdvertisements(t *testing.T) {
	pp := netip.MustParsePrefix
	cidrs := ServiceCIDRs{
		ClusterIPs:      []netip.Prefix{pp("10.96.0.0/12"), pp("fd00:96::/112")},
		ExternalIPs:     []netip.Prefix{pp("198.51.100.0/24")},
		LoadBalancerIPs: []netip.Prefix{pp("203.0.113.0/24")},
	}
	wholeCIDRs := "10.96.0.0/12 198.51.100.0/24 203.0.113.0/24 fd00:96::/112"
	local, cluster := api.TrafficPolicyLocal, api.TrafficPolicyCluster
	lb, np, cip := api.ServiceTypeLoadBalancer, api.ServiceTypeNodePort, api.ServiceTypeClusterIP
	ips := func(s ...string) []string { return s }
	for _, tt := range []struct {
		name string
		in   AdvertInput
		want string
	}{
		{"nothing", AdvertInput{}, ""},
		{"blocks and borrowed addresses in exported pools", AdvertInput{
			Pools:  []*api.IPPool{pool("10.65.0.0/16", false), pool("10.66.0.0/16", true)},
			Blocks: []netip.Prefix{pp("10.65.1.0/26"), pp("10.66.0.0/26"), pp("10.99.0.0/26")},
			Addrs: []netip.Addr{
				netip.MustParseAddr("10.65.1.5"),  // in our block
				netip.MustParseAddr("10.65.2.7"),  // borrowed
				netip.MustParseAddr("10.66.1.1"),  // borrowed from a pool without export
				netip.MustParseAddr("192.0.2.10"), // in no pool
			},
			Services: ServiceCIDRs{ClusterIPs: []netip.Prefix{pp("10.96.0.0/12")}},
		}, "10.65.1.0/26 10.65.2.7/32 10.96.0.0/12"},
		{"every kind of Service CIDR, from every node", AdvertInput{Services: cidrs}, wholeCIDRs},
		{"Local LoadBalancer: its addresses inside the CIDR of their kind", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("web", lb, local, ips("10.96.5.5"),
				ips("198.51.100.7", "192.0.2.7", "203.0.113.99"),  // in, outside every CIDR, in the LB CIDR only
				ips("203.0.113.8", "192.0.2.8", "198.51.100.99")), // in, outside, in the external CIDR only
		}}, "10.96.0.0/12 10.96.5.5/32 198.51.100.0/24 198.51.100.7/32 203.0.113.0/24 203.0.113.8/32 fd00:96::/112"},
		{"a cluster IP outside serviceClusterIPs", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("web", np, local, ips("10.200.0.1"), ips("198.51.100.7"), nil),
		}}, "10.96.0.0/12 198.51.100.0/24 198.51.100.7/32 203.0.113.0/24 fd00:96::/112"},
		{"dual stack: /128 for the IPv6 cluster IP", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("web", np, local, ips("10.96.5.5", "fd00:96::5"), nil, nil),
		}}, "10.96.0.0/12 10.96.5.5/32 198.51.100.0/24 203.0.113.0/24 fd00:96::/112 fd00:96::5/128"},
		{"ClusterIP type with externalIPs and policy Local", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("web", cip, local, ips("10.96.5.5"), ips("198.51.100.7"), nil),
		}}, "10.96.0.0/12 10.96.5.5/32 198.51.100.0/24 198.51.100.7/32 203.0.113.0/24 fd00:96::/112"},
		{"two Services on one external IP: one route", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("a", lb, local, ips("10.96.5.5"), ips("198.51.100.7"), nil),
			service("b", lb, local, ips("10.96.5.6"), ips("198.51.100.7"), nil),
		}}, "10.96.0.0/12 10.96.5.5/32 10.96.5.6/32 198.51.100.0/24 198.51.100.7/32 203.0.113.0/24 fd00:96::/112"},
		{"policy Cluster: the CIDRs cover it, no host route", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("web", lb, cluster, ips("10.96.5.5"), ips("198.51.100.7"), ips("203.0.113.8")),
			service("plain", cip, "", ips("10.96.5.6"), nil, nil),
		}}, wholeCIDRs},
		{"no cluster IP: headless, ExternalName, not allocated", AdvertInput{Services: cidrs, LocalServices: []*api.Service{
			service("headless", cip, local, ips("None"), ips("198.51.100.7"), nil),
			service("name", api.ServiceTypeExternalName, local, nil, ips("198.51.100.8"), nil),
			service("new", lb, local, nil, ips("198.51.100.9"), nil),
		}}, wholeCIDRs},
		{"no Service CIDRs: nothing of a Local Service", AdvertInput{LocalServices: []*api.Service{
			service("web", lb, local, ips("10.96.5.5"), ips("198.51.100.7"), ips("203.0.113.8")),
		}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range DesiredAdvertisements(tt.in) {
				got = append(got, p.String())
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("got  %s\nwant %s", g, tt.want)
			}
		})
	}
}

func TestExportPolicy(t *testing.T) {
	ibgp, keep := neighborSets([]Peer{
		{Addr: netip.MustParseAddr("10.0.0.2"), ASN: 64512},
		{Addr: netip.MustParseAddr("10.0.0.254"), ASN: 65001, KeepOriginalNextHop: true},
	}, 64512)
	if !slices.Equal(ibgp, []string{"10.0.0.2/32", placeholder}) || !slices.Equal(keep, []string{"10.0.0.254/32", placeholder}) {
		t.Errorf("neighbor sets: ibgp %v keep %v", ibgp, keep)
	}
	p := exportPolicy()
	if len(p.Statements) != 3 || p.Statements[0].Conditions.RouteType.String() != "ROUTE_TYPE_LOCAL" {
		t.Errorf("policy: %v", p)
	}
	for _, st := range p.Statements {
		if st.Conditions.RouteType.String() == "ROUTE_TYPE_EXTERNAL" {
			t.Errorf("statement %s accepts external routes", st.Name)
		}
	}
}

func TestWithCommunities(t *testing.T) {
	pp := netip.MustParsePrefix
	rules := []PrefixCommunities{
		{pp("10.65.0.0/16"), Communities{Standard: []uint32{65001<<16 | 100}}},
		{pp("10.65.1.0/24"), Communities{Standard: []uint32{65001<<16 | 100, 65001<<16 | 200}, Large: []LargeCommunity{{65001, 1, 2}}}},
		{pp("192.0.2.7/32"), Communities{Large: []LargeCommunity{{4200000000, 0, 7}, {65001, 1, 2}}}},
	}
	for _, tt := range []struct {
		name   string
		prefix string
		want   string
	}{
		{"no rule covers it", "10.66.0.0/26", ""},
		{"inside one CIDR", "10.65.0.0/26", "(65001,100)"},
		{"the CIDR itself", "10.65.0.0/16", "(65001,100)"},
		{"inside two CIDRs: merged, no duplicates", "10.65.1.64/26", "(65001,100) (65001,200) (65001,1,2)"},
		{"wider than a CIDR: not covered", "10.64.0.0/15", ""},
		{"a host route equal to a /32 rule, large sorted", "192.0.2.7/32", "(65001,1,2) (4200000000,0,7)"},
		{"a host route next to it", "192.0.2.8/32", ""},
		{"IPv6 never inside an IPv4 CIDR", "::a41:100/120", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := WithCommunities([]netip.Prefix{pp(tt.prefix)}, rules)
			if len(got) != 1 || got[0].Prefix != pp(tt.prefix) || got[0].Communities.String() != tt.want {
				t.Errorf("WithCommunities(%s) = %+v, want communities %q", tt.prefix, got, tt.want)
			}
		})
	}
	// More rules than the merge cache keys (64): merged all the same.
	var many []PrefixCommunities
	for i := range 70 {
		many = append(many, PrefixCommunities{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16),
			Communities{Standard: []uint32{uint32(i)}}})
	}
	many = append(many, PrefixCommunities{pp("10.69.0.0/24"), Communities{Large: []LargeCommunity{{1, 2, 3}}}})
	if got := WithCommunities([]netip.Prefix{pp("10.69.0.0/26"), pp("10.69.1.0/26"), pp("10.2.0.0/26")}, many); len(got) != 3 ||
		got[0].Communities.String() != "(0,69) (1,2,3)" || got[1].Communities.String() != "(0,69)" || got[2].Communities.String() != "(0,2)" {
		t.Errorf("71 rules: %+v", got)
	}
	if got := WithCommunities([]netip.Prefix{pp("10.65.1.0/26"), pp("10.65.0.0/26")}, nil); len(got) != 2 ||
		got[0].Prefix != pp("10.65.1.0/26") || !got[0].Communities.IsZero() || !got[1].Communities.IsZero() {
		t.Errorf("without rules: %+v", got)
	}
}

// BenchmarkWithCommunities measures attaching communities to a node's advertisements: 64
// blocks, 2,000 borrowed addresses and 3 Service CIDRs, under 10 prefixAdvertisements
// entries (3 covering the pool, one of them per half, 7 elsewhere), beside
// DesiredAdvertisements of the same input, which computes those prefixes, as the
// baseline. It reports both per call and their ratio.
func BenchmarkWithCommunities(b *testing.B) {
	pp := netip.MustParsePrefix
	in := AdvertInput{Pools: []*api.IPPool{pool("10.65.0.0/16", false)},
		Services: ServiceCIDRs{ClusterIPs: []netip.Prefix{pp("10.96.0.0/12")}, ExternalIPs: []netip.Prefix{pp("198.51.100.0/24")},
			LoadBalancerIPs: []netip.Prefix{pp("203.0.113.0/24")}}}
	for i := range 64 {
		in.Blocks = append(in.Blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, byte(i), 0}), 26))
	}
	for i := range 2000 {
		in.Addrs = append(in.Addrs, netip.AddrFrom4([4]byte{10, 65, byte(100 + i/250), byte(i % 250)}))
	}
	rules := []PrefixCommunities{
		{pp("10.65.0.0/16"), Communities{Standard: []uint32{65001<<16 | 100}}},
		{pp("10.65.0.0/17"), Communities{Standard: []uint32{65001<<16 | 200}, Large: []LargeCommunity{{65001, 1, 2}}}},
		{pp("10.65.128.0/17"), Communities{Standard: []uint32{65001<<16 | 300}}},
	}
	for i := range 7 {
		rules = append(rules, PrefixCommunities{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i), 0, 0}), 16),
			Communities{Standard: []uint32{65001<<16 | uint32(i)}}})
	}
	var desired, comms time.Duration
	var n int
	for b.Loop() {
		start := time.Now()
		prefixes := DesiredAdvertisements(in)
		mid := time.Now()
		out := WithCommunities(prefixes, rules)
		comms += time.Since(mid)
		desired += mid.Sub(start)
		n = len(out)
	}
	if want := 64 + 2000 + 3; n != want {
		b.Fatalf("%d advertisements, want %d", n, want)
	}
	ops := float64(b.N)
	b.ReportMetric(float64(desired.Nanoseconds())/ops, "desired-ns/op")
	b.ReportMetric(float64(comms.Nanoseconds())/ops, "communities-ns/op")
	b.ReportMetric(float64(comms)/float64(desired), "communities/desired")
}
