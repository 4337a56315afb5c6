package felix

import (
	"net/netip"
	"reflect"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func dev(dst, iface string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Type: RouteUnicast, Interface: iface}
}

func blackhole(dst string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Type: RouteBlackhole}
}

func TestDesiredRoutes(t *testing.T) {
	tests := []struct {
		name     string
		state    LocalState
		want     []Route
		rejected []Rejection
	}{
		{name: "empty"},
		{
			name: "workloads and blocks, both families, sorted",
			state: LocalState{
				Workloads: []Workload{
					{Name: "ns/b", Interface: "tabbyb", Addrs: addrs("fd00::5", "10.65.0.9")},
					{Name: "ns/a", Interface: "tabbya", Addrs: addrs("10.65.0.5")},
				},
				Blocks: prefixes("fd00::/122", "10.65.0.0/26"),
			},
			want: []Route{
				blackhole("10.65.0.0/26"),
				dev("10.65.0.5/32", "tabbya"),
				dev("10.65.0.9/32", "tabbyb"),
				blackhole("fd00::/122"),
				dev("fd00::5/128", "tabbyb"),
			},
		},
		{
			name: "an address claimed twice goes to the first name; a repeat is not a conflict",
			state: LocalState{Workloads: []Workload{
				{Name: "ns/z", Interface: "tabbyz", Addrs: addrs("10.65.0.5")},
				{Name: "ns/a", Interface: "tabbya", Addrs: addrs("10.65.0.5", "10.65.0.5")},
			}},
			want:     []Route{dev("10.65.0.5/32", "tabbya")},
			rejected: []Rejection{{"ns/z", netip.MustParseAddr("10.65.0.5"), "address also claimed by ns/a, which is routed to"}},
		},
		{
			name: "a /32 block equal to a workload address routes to the workload",
			state: LocalState{
				Workloads: []Workload{{Name: "ns/a", Interface: "tabbya", Addrs: addrs("10.65.0.5")}},
				Blocks:    prefixes("10.65.0.5/32", "10.65.0.0/26", "10.65.0.0/26"),
			},
			want: []Route{blackhole("10.65.0.0/26"), dev("10.65.0.5/32", "tabbya")},
		},
		{
			name: "no interface, invalid and 4-in-6 addresses",
			state: LocalState{Workloads: []Workload{
				{Name: "ns/a", Addrs: addrs("10.65.0.5")},
				{Name: "ns/b", Interface: "tabbyb", Addrs: []netip.Addr{{}, netip.MustParseAddr("::ffff:10.65.0.6")}},
			}},
			want: []Route{dev("10.65.0.6/32", "tabbyb")},
			rejected: []Rejection{
				{"ns/a", netip.MustParseAddr("10.65.0.5"), "workload has no interface"},
				{"ns/b", netip.Addr{}, "invalid address"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rejected := DesiredRoutes(tt.state)
			if len(got) == 0 && len(tt.want) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes:\n got %v\nwant %v", got, tt.want)
			}
			if !reflect.DeepEqual(rejected, tt.rejected) {
				t.Errorf("rejected:\n got %v\nwant %v", rejected, tt.rejected)
			}
		})
	}
}

// The result must not depend on the order the agent happens to list workloads in.
func TestDesiredRoutesDeterministic(t *testing.T) {
	a := Workload{Name: "ns/a", Interface: "tabbya", Addrs: addrs("10.65.0.5", "10.65.0.6")}
	b := Workload{Name: "ns/b", Interface: "tabbyb", Addrs: addrs("10.65.0.6", "10.65.0.7")}
	r1, c1 := DesiredRoutes(LocalState{Workloads: []Workload{a, b}})
	r2, c2 := DesiredRoutes(LocalState{Workloads: []Workload{b, a}})
	if !reflect.DeepEqual(r1, r2) || !reflect.DeepEqual(c1, c2) {
		t.Errorf("order changed the result:\n%v %v\n%v %v", r1, c1, r2, c2)
	}
	if len(c1) != 1 || c1[0].Workload != "ns/b" {
		t.Errorf("conflicts = %v, want ns/b's 10.65.0.6 rejected", c1)
	}
}

func TestRouteString(t *testing.T) {
	for r, want := range map[Route]string{
		dev("10.65.0.5/32", "tabbya"): "10.65.0.5/32 dev tabbya",
		blackhole("fd00::/122"):       "blackhole fd00::/122",
	} {
		if got := r.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", r, got, want)
		}
	}
}

func TestDesiredSysctls(t *testing.T) {
	got := DesiredSysctls(LocalState{Workloads: []Workload{
		{Name: "ns/a", Interface: "tabbya", Addrs: addrs("10.65.0.5")},
		{Name: "ns/b", Interface: "tabbyb", Addrs: addrs("fd00::5")},
		{Name: "ns/c", Addrs: addrs("10.65.0.7")},
	}})
	want := []Sysctl{
		{"net/ipv4/conf/tabbya/proxy_arp", "1", "tabbya"},
		{"net/ipv4/ip_forward", "1", ""},
		{"net/ipv4/neigh/tabbya/proxy_delay", "0", "tabbya"},
		{"net/ipv6/conf/all/forwarding", "1", ""},
		{"net/ipv6/conf/tabbyb/disable_ipv6", "0", "tabbyb"},
		{"net/ipv6/conf/tabbyb/proxy_ndp", "1", "tabbyb"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	// IPv4 only: IPv6 forwarding stays as it is, since it changes how the host treats
	// router advertisements.
	got = DesiredSysctls(LocalState{Blocks: prefixes("10.65.0.0/26")})
	if want := []Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("IPv4 only: got %v, want %v", got, want)
	}
	got = DesiredSysctls(LocalState{Blocks: prefixes("fd00::/122")})
	if len(got) != 2 || got[1].Path != "net/ipv6/conf/all/forwarding" {
		t.Errorf("IPv6 block: got %v, want IPv6 forwarding too", got)
	}
}
