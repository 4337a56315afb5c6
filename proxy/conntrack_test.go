package proxy

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func TestStaleUDP(t *testing.T) {
	dns := func(ext bool, port uint16, fronts []string, bes ...Backend) PortLB {
		return PortLB{Key: PortKey{"kube", "dns", "dns", "UDP", ext}, Protocol: "UDP", Port: port, Frontends: addrs(fronts...), Backends: bes}
	}
	web := func(bes ...Backend) PortLB {
		return PortLB{Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80, Frontends: addrs("10.96.0.20"), Backends: bes}
	}
	vips := []string{"10.96.0.10", "fd00:96::10", "192.0.2.7"}
	a, b, c6 := be("10.65.0.2", 53), be("10.65.0.3", 53), be("fd00::3", 53)
	st := func(ports ...PortLB) *LBState { return &LBState{Ports: ports} }
	withNodePort := func(p PortLB, np uint16) PortLB {
		p.NodePort, p.NodePortFamilies = np, [2]bool{true, false}
		return p
	}
	flow := func(front string, port uint16, b Backend) StaleFlow {
		return StaleFlow{Frontend: addrs(front)[0], Port: port, Backend: b}
	}
	tests := []struct {
		name     string
		old, new *LBState
		want     []StaleFlow
	}{
		{"first apply: nothing known", nil, st(dns(false, 53, vips, a)), nil},
		{"no change", st(dns(false, 53, vips, a, b), web(a)), st(dns(false, 53, vips, a, b), web(a)), nil},
		{"a backend added", st(dns(false, 53, vips, a)), st(dns(false, 53, vips, a, b)), nil},
		{"TCP backends are left to the kernel", st(web(a, b)), st(web(a)), nil},
		{"a backend gone: every frontend of its family", st(dns(false, 53, vips, a, b, c6)), st(dns(false, 53, vips, a)), []StaleFlow{
			flow("10.96.0.10", 53, b), flow("192.0.2.7", 53, b), flow("fd00:96::10", 53, c6),
		}},
		{"the backend's port changed", st(dns(false, 53, vips[:1], a)), st(dns(false, 53, vips[:1], be("10.65.0.2", 5353))), []StaleFlow{
			flow("10.96.0.10", 53, a),
		}},
		{"the Service gone", st(dns(false, 53, vips[:1], a), web(a)), st(web(a)), []StaleFlow{flow("10.96.0.10", 53, a)}},
		{"the Service's port changed", st(dns(false, 53, vips[:1], a)), st(dns(false, 54, vips[:1], a)), []StaleFlow{flow("10.96.0.10", 53, a)}},
		{"a NodePort's backend gone: its node port too, in the families it has", st(withNodePort(dns(true, 53, vips[2:], a, b, c6), 30053)),
			st(withNodePort(dns(true, 53, vips[2:], a), 30053)), []StaleFlow{
				{Port: 30053, Backend: b}, flow("192.0.2.7", 53, b),
			}},
		{"the node port changed: every backend's old node port", st(withNodePort(dns(true, 53, vips[2:], a), 30053)),
			st(withNodePort(dns(true, 53, vips[2:], a), 30054)), []StaleFlow{{Port: 30053, Backend: a}}},
		{"external key of a Local Service on its own", st(dns(false, 53, vips[:1], a), dns(true, 53, vips[2:], a, b)),
			st(dns(false, 53, vips[:1], a), dns(true, 53, vips[2:], a)), []StaleFlow{flow("192.0.2.7", 53, b)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StaleUDP(tt.old, tt.new); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("StaleUDP =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestServingUDP: a flow DNATed from a UDP frontend or node port to a backend that is no
// longer behind it is stale; to one that is, or to anything the state does not serve
// over UDP (a TCP port, another address), it is not.
func TestServingUDP(t *testing.T) {
	st := &LBState{Ports: []PortLB{
		{Key: PortKey{Namespace: "shop", Name: "dns", Port: "dns"}, Protocol: api.PortProtocolUDP, Port: 53,
			Frontends: []netip.Addr{netip.MustParseAddr("10.96.0.53")}, Backends: []Backend{be("10.200.0.2", 5353)},
			NodePort: 30053, NodePortFamilies: [2]bool{true, false}},
		{Key: PortKey{Namespace: "shop", Name: "web", Port: "http"}, Protocol: api.PortProtocolTCP, Port: 80,
			Frontends: []netip.Addr{netip.MustParseAddr("10.96.0.80")}, Backends: []Backend{be("10.200.0.9", 8080)}},
	}}
	s := ServingUDP(st)
	for _, c := range []struct {
		dst   string
		b     Backend
		stale bool
	}{
		{"10.96.0.53:53", be("10.200.0.2", 5353), false},
		{"10.96.0.53:53", be("10.200.0.3", 5353), true},
		{"10.96.0.53:53", be("10.200.0.2", 5354), true},
		{"172.31.1.10:30053", be("10.200.0.3", 5353), true},
		{"172.31.1.10:30053", be("10.200.0.2", 5353), false},
		{"10.96.0.80:80", be("10.200.0.3", 8080), false},
		{"10.96.0.99:53", be("10.200.0.3", 5353), false},
	} {
		if got := s.Stale(netip.MustParseAddrPort(c.dst), c.b); got != c.stale {
			t.Errorf("Stale(%s, %s) = %v, want %v", c.dst, c.b, got, c.stale)
		}
	}
	if ServingUDP(nil).Stale(netip.MustParseAddrPort("10.96.0.53:53"), be("10.200.0.3", 5353)) {
		t.Error("an empty state judges a flow stale")
	}
}

// TestUDPServingFamilies: a family holds stale flows only where a UDP frontend of it, or
// a UDP node port (any address), is served; TCP ports count for neither.
func TestUDPServingFamilies(t *testing.T) {
	udp := func(front string, nodePort uint16) PortLB {
		return PortLB{Key: PortKey{Namespace: "shop", Name: front, Port: "dns"}, Protocol: api.PortProtocolUDP, Port: 53,
			Frontends: []netip.Addr{netip.MustParseAddr(front)}, Backends: []Backend{be("10.200.0.2", 5353)}, NodePort: nodePort}
	}
	tcp := PortLB{Key: PortKey{Namespace: "shop", Name: "web", Port: "http"}, Protocol: api.PortProtocolTCP, Port: 80,
		Frontends: []netip.Addr{netip.MustParseAddr("fd00:96::80")}, NodePort: 30080}
	for _, c := range []struct {
		name string
		st   *LBState
		want [2]bool
	}{
		{"nothing", nil, [2]bool{}},
		{"TCP only", &LBState{Ports: []PortLB{tcp}}, [2]bool{}},
		{"IPv4 frontend", &LBState{Ports: []PortLB{tcp, udp("10.96.0.53", 0)}}, [2]bool{true, false}},
		{"IPv6 frontend", &LBState{Ports: []PortLB{udp("fd00:96::53", 0)}}, [2]bool{false, true}},
		{"IPv4 frontend and node port", &LBState{Ports: []PortLB{udp("10.96.0.53", 30053)}}, [2]bool{true, true}},
	} {
		if got := ServingUDP(c.st).Families(); got != c.want {
			t.Errorf("%s: Families() = %v, want %v", c.name, got, c.want)
		}
	}
}
