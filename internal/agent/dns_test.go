package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func TestDNSAddrs(t *testing.T) {
	configured := []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("10.96.0.10")}
	svc := func(ns, name string, ips ...string) *api.Service {
		s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
		s.Namespace, s.Name, s.Spec.ClusterIPs = ns, name, ips
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		s.Spec.Ports = []api.ServicePort{{Name: "dns", Protocol: "UDP", Port: 53}}
		return s
	}
	for _, tc := range []struct {
		name     string
		services []api.Resource
		want     []string
	}{
		{"no kube-dns", nil, []string{"10.96.0.10", "169.254.20.10"}},
		{"kube-dns on the configured address", []api.Resource{svc("kube-system", "kube-dns", "10.96.0.10")},
			[]string{"10.96.0.10", "169.254.20.10"}},
		{"kube-dns elsewhere", []api.Resource{svc("kube-system", "kube-dns", "10.97.0.53")},
			[]string{"10.96.0.10", "10.97.0.53", "169.254.20.10"}},
		{"dual-stack kube-dns: both its addresses", []api.Resource{svc("kube-system", "kube-dns", "10.97.0.53", "fd00:96::a")},
			[]string{"10.96.0.10", "10.97.0.53", "169.254.20.10", "fd00:96::a"}},
		{"IPv6-only kube-dns", []api.Resource{svc("kube-system", "kube-dns", "fd00:96::a")},
			[]string{"10.96.0.10", "169.254.20.10", "fd00:96::a"}},
		{"headless kube-dns", []api.Resource{svc("kube-system", "kube-dns", api.ClusterIPNone)},
			[]string{"10.96.0.10", "169.254.20.10"}},
		{"kube-dns in another namespace", []api.Resource{svc("default", "kube-dns", "10.97.0.53")},
			[]string{"10.96.0.10", "169.254.20.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dnsAddrs(configured, mustView(t, nil, tc.services...))
			var want []netip.Addr
			for _, s := range tc.want {
				want = append(want, netip.MustParseAddr(s))
			}
			if !slices.Equal(got, want) {
				t.Errorf("dnsAddrs = %v, want %v", got, want)
			}
		})
	}
}
