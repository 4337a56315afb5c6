package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	addr4 = netip.MustParseAddr("10.244.0.5")
	addr6 = netip.MustParseAddr("fd00::5")
)

func TestGateways(t *testing.T) {
	// Calico's: the link-local address the kernel derives (EUI-64) from ee:ee:ee:ee:ee:ee.
	if want := netip.MustParseAddr("fe80::ecee:eeff:feee:eeee"); gatewayV6 != want {
		t.Errorf("gatewayV6 = %s, want %s", gatewayV6, want)
	}
	if gatewayV4.String() != "169.254.1.1" {
		t.Errorf("gatewayV4 = %s", gatewayV4)
	}
}

func TestHostSysctls(t *testing.T) {
	paths := func(addrs ...netip.Addr) []string {
		var out []string
		for _, s := range hostSysctls("tabbyx", addrs) {
			if s.Interface != "tabbyx" {
				t.Errorf("%s is not the interface's", s)
			}
			out = append(out, s.String())
		}
		return out
	}
	v4 := []string{
		"net/ipv4/conf/tabbyx/forwarding=1",
		"net/ipv4/conf/tabbyx/proxy_arp=1",
		"net/ipv4/neigh/tabbyx/proxy_delay=0",
	}
	v6 := []string{
		"net/ipv6/conf/tabbyx/accept_dad=0",
		"net/ipv6/conf/tabbyx/disable_ipv6=0",
		"net/ipv6/conf/tabbyx/forwarding=1",
		"net/ipv6/conf/tabbyx/proxy_ndp=1",
	}
	if got := paths(addr4); !slices.Equal(got, v4) {
		t.Errorf("IPv4: %v", got)
	}
	if got := paths(addr6); !slices.Equal(got, v6) {
		t.Errorf("IPv6: %v", got)
	}
	if got := paths(addr6, addr4); !slices.Equal(got, append(slices.Clone(v4), v6...)) {
		t.Errorf("dual stack: %v", got)
	}
}

func TestContainerRoutes(t *testing.T) {
	got := containerRoutes([]netip.Addr{addr6, addr4})
	var s []string
	for _, r := range got {
		s = append(s, r.String())
	}
	want := []string{"169.254.1.1/32 scope link", "0.0.0.0/0 via 169.254.1.1", "::/0 via fe80::ecee:eeff:feee:eeee"}
	if !slices.Equal(s, want) {
		t.Errorf("routes %v, want %v", s, want)
	}
}

// intact is what inspect reads back of a dual-stack attachment ADD made.
func intact(a *attachment) *observed {
	o := &observed{
		Container:       endState{Exists: true, Veth: true, Up: true, Index: 2, Peer: 7, MAC: "02:00:00:00:00:01", MTU: 1500},
		Host:            endState{Exists: true, Veth: true, Up: true, Index: 7, Peer: 2, MAC: "ee:ee:ee:ee:ee:ee", MTU: 1500},
		ContainerAddrs:  []netip.Prefix{netip.MustParsePrefix("10.244.0.5/32"), netip.MustParsePrefix("fd00::5/128")},
		ContainerRoutes: append(containerRoutes(a.Addrs), route{Dst: netip.MustParsePrefix("10.96.0.0/12"), GW: gatewayV4}),
		HostAddrs:       []netip.Prefix{netip.PrefixFrom(gatewayV6, 64)},
		HostRoutes:      []netip.Prefix{netip.MustParsePrefix("10.244.0.5/32"), netip.MustParsePrefix("fd00::5/128")},
		Sysctls:         map[string]string{},
	}
	for _, s := range hostSysctls(a.HostVeth, a.Addrs) {
		o.Sysctls[s.Path] = s.Value
	}
	return o
}

func TestDifferences(t *testing.T) {
	a := &attachment{NetNS: "/run/netns/w", IfName: "eth0", HostVeth: "tabbyx", Addrs: []netip.Addr{addr4, addr6}, MTU: 1500}
	if d := a.differences(intact(a)); len(d) != 0 {
		t.Errorf("intact attachment (with a route a chained plugin added): %v", d)
	}
	if d := a.missingHostRoutes(intact(a)); len(d) != 0 {
		t.Errorf("host routes present: %v", d)
	}
	for _, c := range []struct {
		name   string
		damage func(o *observed)
		want   string
	}{
		{"no container end", func(o *observed) { o.Container = endState{} }, "the container has no interface eth0"},
		{"no host end", func(o *observed) { o.Host = endState{} }, "the host has no interface tabbyx"},
		{"other peer", func(o *observed) { o.Host.Peer = 9 }, "not the two ends of one veth"},
		{"not a veth", func(o *observed) { o.Container.Veth = false }, "not the two ends of one veth"},
		{"down", func(o *observed) { o.Container.Up = false }, "eth0 in the container is down"},
		{"host down", func(o *observed) { o.Host.Up = false }, "tabbyx on the host is down"},
		{"mtu", func(o *observed) { o.Container.MTU = 9000 }, "eth0 has MTU 9000, want 1500"},
		{"mac", func(o *observed) { o.Host.MAC = "02:00:00:00:00:09" }, "tabbyx has MAC 02:00:00:00:00:09, want ee:ee:ee:ee:ee:ee"},
		{"address gone", func(o *observed) { o.ContainerAddrs = o.ContainerAddrs[1:] }, "eth0 lacks address 10.244.0.5/32"},
		{"extra address", func(o *observed) {
			o.ContainerAddrs = append(o.ContainerAddrs, netip.MustParsePrefix("10.0.0.9/24"))
		}, "eth0 has address 10.0.0.9/24, which is not the workload's"},
		{"route gone", func(o *observed) { o.ContainerRoutes = slices.Delete(o.ContainerRoutes, 1, 2) }, "the container lacks route 0.0.0.0/0 via 169.254.1.1 dev eth0"},
		{"host address", func(o *observed) {
			o.HostAddrs = append(o.HostAddrs, netip.MustParsePrefix("10.0.0.1/24"))
		}, "tabbyx on the host has address 10.0.0.1/24"},
		{"no link-local", func(o *observed) { o.HostAddrs = nil }, "lacks link-local address fe80::ecee:eeff:feee:eeee"},
		{"sysctl", func(o *observed) { o.Sysctls["net/ipv4/conf/tabbyx/proxy_arp"] = "0" }, `sysctl net/ipv4/conf/tabbyx/proxy_arp is "0", want "1"`},
	} {
		o := intact(a)
		c.damage(o)
		if d := a.differences(o); !slices.ContainsFunc(d, func(s string) bool { return strings.Contains(s, c.want) }) {
			t.Errorf("%s: differences %q do not say %q", c.name, d, c.want)
		}
	}
	o := intact(a)
	o.HostRoutes = o.HostRoutes[:1]
	if d := a.missingHostRoutes(o); len(d) != 1 || !strings.Contains(d[0], "no route to fd00::5/128 through tabbyx (protocol 116)") {
		t.Errorf("missing host route: %v", d)
	}
}
