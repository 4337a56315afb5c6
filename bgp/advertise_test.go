package bgp

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func pool(cidr string, noExport bool) *api.IPPool {
	return &api.IPPool{Spec: api.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
}

func TestDesiredAdvertisements(t *testing.T) {
	pp := netip.MustParsePrefix
	got := DesiredAdvertisements(AdvertInput{
		Pools:  []*api.IPPool{pool("10.65.0.0/16", false), pool("10.66.0.0/16", true)},
		Blocks: []netip.Prefix{pp("10.65.1.0/26"), pp("10.66.0.0/26"), pp("10.99.0.0/26")},
		Addrs: []netip.Addr{
			netip.MustParseAddr("10.65.1.5"),  // in our block
			netip.MustParseAddr("10.65.2.7"),  // borrowed
			netip.MustParseAddr("10.66.1.1"),  // borrowed from a pool without export
			netip.MustParseAddr("192.0.2.10"), // in no pool
		},
		ServiceCIDRs: []netip.Prefix{pp("10.96.0.0/12")},
	})
	want := []netip.Prefix{pp("10.65.1.0/26"), pp("10.65.2.7/32"), pp("10.96.0.0/12")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
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
