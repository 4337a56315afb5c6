package felix

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// have builds a kernel route as fromNetlink would see it.
func have(r Route) kernelRoute { return kernelRoute{Route: r} }

func TestPlanRoutes(t *testing.T) {
	a5, a6 := dev("10.65.0.5/32", "tabbya"), dev("10.65.0.6/32", "tabbyb")
	block := blackhole("10.65.0.0/26")
	odd := have(a5)
	odd.Odd = true
	otherMetric := have(a5)
	otherMetric.OtherMetric = true

	// ops are written as "kind route" for adds and replaces, "delete have[i]" for deletes.
	tests := []struct {
		name string
		have []kernelRoute
		want []Route
		ops  []string
	}{
		{name: "nothing"},
		{
			name: "from empty",
			want: []Route{block, a5},
			ops:  []string{"add blackhole 10.65.0.0/26", "add 10.65.0.5/32 dev tabbya"},
		},
		{
			name: "in sync",
			have: []kernelRoute{have(a5), have(block)},
			want: []Route{block, a5},
		},
		{
			name: "stale route deleted after the adds",
			have: []kernelRoute{have(a6), have(a5)},
			want: []Route{block, a5},
			ops:  []string{"add blackhole 10.65.0.0/26", "delete have[0]"},
		},
		{
			name: "different interface or type is replaced in place",
			have: []kernelRoute{have(dev("10.65.0.5/32", "tabbyold")), have(blackhole("10.65.0.6/32"))},
			want: []Route{a5, a6},
			ops:  []string{"replace 10.65.0.5/32 dev tabbya", "replace 10.65.0.6/32 dev tabbyb"},
		},
		{
			name: "odd attributes are replaced",
			have: []kernelRoute{odd},
			want: []Route{a5},
			ops:  []string{"replace 10.65.0.5/32 dev tabbya"},
		},
		{
			name: "another metric is not our slot: add ours, delete it",
			have: []kernelRoute{otherMetric},
			want: []Route{a5},
			ops:  []string{"add 10.65.0.5/32 dev tabbya", "delete have[0]"},
		},
		{
			name: "exact match kept, duplicates of the destination deleted",
			have: []kernelRoute{otherMetric, odd, have(a5)},
			want: []Route{a5},
			ops:  []string{"delete have[0]", "delete have[1]"},
		},
		{
			name: "a repeated desired destination is written once",
			want: []Route{a5, dev("10.65.0.5/32", "tabbyz")},
			ops:  []string{"add 10.65.0.5/32 dev tabbya"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, op := range planRoutes(tt.have, tt.want, false) {
				if op.kind == opDelete {
					got = append(got, "delete have["+string(rune('0'+op.have))+"]")
				} else {
					got = append(got, op.kind.String()+" "+op.route.String())
				}
			}
			if !reflect.DeepEqual(got, tt.ops) {
				t.Errorf("ops:\n got %s\nwant %s", strings.Join(got, "; "), strings.Join(tt.ops, "; "))
			}
		})
	}
}

func TestFromNetlink(t *testing.T) {
	links := linkTable{byIndex: map[int]string{7: "tabbya"}}
	ipnet := func(s string) *net.IPNet { return prefixToIPNet(netip.MustParsePrefix(s)) }
	tests := []struct {
		name        string
		nr          netlink.Route
		route       Route
		odd, metric bool
	}{
		{
			name:  "IPv4 workload route",
			nr:    netlink.Route{Dst: ipnet("10.65.0.5/32"), LinkIndex: 7, Scope: netlink.SCOPE_LINK, Type: unix.RTN_UNICAST},
			route: dev("10.65.0.5/32", "tabbya"),
		},
		{
			name:  "IPv6 workload route has the kernel's default metric and universe scope",
			nr:    netlink.Route{Dst: ipnet("fd00::5/128"), LinkIndex: 7, Priority: 1024, Type: unix.RTN_UNICAST},
			route: dev("fd00::5/128", "tabbya"),
		},
		{
			name:  "IPv6 blackhole names lo, which does not matter",
			nr:    netlink.Route{Dst: ipnet("fd00::/122"), LinkIndex: 1, Priority: 1024, Type: unix.RTN_BLACKHOLE},
			route: blackhole("fd00::/122"),
		},
		{
			name:  "unknown interface",
			nr:    netlink.Route{Dst: ipnet("10.65.0.5/32"), LinkIndex: 9, Scope: netlink.SCOPE_LINK, Type: unix.RTN_UNICAST},
			route: dev("10.65.0.5/32", ""), odd: true,
		},
		{
			name:  "gateway",
			nr:    netlink.Route{Dst: ipnet("10.65.0.5/32"), LinkIndex: 7, Gw: net.ParseIP("10.0.0.1"), Type: unix.RTN_UNICAST},
			route: via("10.65.0.5/32", "10.0.0.1", "tabbya", false),
		},
		{
			name:  "onlink gateway",
			nr:    netlink.Route{Dst: ipnet("10.65.1.0/26"), LinkIndex: 7, Gw: net.ParseIP("10.0.0.1"), Flags: int(netlink.FLAG_ONLINK), Type: unix.RTN_UNICAST},
			route: via("10.65.1.0/26", "10.0.0.1", "tabbya", true),
		},
		{
			name:  "gateway with link scope is not ours",
			nr:    netlink.Route{Dst: ipnet("10.65.1.0/26"), LinkIndex: 7, Gw: net.ParseIP("10.0.0.1"), Scope: netlink.SCOPE_LINK, Type: unix.RTN_UNICAST},
			route: via("10.65.1.0/26", "10.0.0.1", "tabbya", false), odd: true,
		},
		{
			name:  "IPv4 metric",
			nr:    netlink.Route{Dst: ipnet("10.65.0.5/32"), LinkIndex: 7, Scope: netlink.SCOPE_LINK, Priority: 5, Type: unix.RTN_UNICAST},
			route: dev("10.65.0.5/32", "tabbya"), metric: true,
		},
		{
			name:  "unreachable is not ours to express",
			nr:    netlink.Route{Dst: ipnet("10.65.0.0/26"), Type: unix.RTN_UNREACHABLE},
			route: Route{Dst: netip.MustParsePrefix("10.65.0.0/26")}, odd: true,
		},
		{
			name:  "default route",
			nr:    netlink.Route{Family: unix.AF_INET6, LinkIndex: 7, Priority: 1024, Type: unix.RTN_UNICAST},
			route: dev("::/0", "tabbya"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fromNetlink(tt.nr, links)
			if k.Route != tt.route || k.Odd != tt.odd || k.OtherMetric != tt.metric {
				t.Errorf("got %v odd=%v otherMetric=%v, want %v odd=%v otherMetric=%v",
					k.Route, k.Odd, k.OtherMetric, tt.route, tt.odd, tt.metric)
			}
		})
	}
}
