package proxy

import (
	"reflect"
	"testing"
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
