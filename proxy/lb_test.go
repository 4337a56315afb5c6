package proxy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

func clusterSvc(ns, name, vip string, ports ...api.ServicePort) *api.Service {
	s := svc(ns, name, map[string]string{"app": name}, ports...)
	s.Spec.Type, s.Spec.ClusterIP = api.ServiceTypeClusterIP, vip
	return s
}

func ep(node string, ready bool, ports map[string]uint16, as ...string) Endpoint {
	return Endpoint{Addrs: addrs(as...), Node: node, Ready: ready, Ports: ports}
}

func be(addr string, port uint16) Backend {
	return Backend{Addr: addrs(addr)[0], Port: port}
}

func TestDesired(t *testing.T) {
	web := api.ServicePort{Name: "http", Protocol: "TCP", Port: 80}
	dns := api.ServicePort{Name: "dns", Protocol: "UDP", Port: 53}
	http := map[string]uint16{"http": 8080}
	timeout := int32(60)
	tests := []struct {
		name string
		in   []ServiceInput
		want []PortLB
	}{{
		name: "ready endpoints with the target port, sorted; not-ready and portless left out",
		in: []ServiceInput{{Service: clusterSvc("shop", "web", "10.96.0.10", web), Endpoints: []Endpoint{
			ep("node2", true, http, "10.65.0.9"),
			ep("node1", true, http, "10.65.0.2", "fd00::2"),
			ep("node1", false, http, "10.65.0.3"),
			ep("node1", true, map[string]uint16{}, "10.65.0.4"),
		}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10"),
			Backends:  []Backend{be("10.65.0.2", 8080), be("10.65.0.9", 8080), be("fd00::2", 8080)},
		}},
	}, {
		name: "no ready endpoint: a frontend without backends (reject)",
		in:   []ServiceInput{{Service: clusterSvc("kube", "dns", "10.96.0.53", dns), Endpoints: []Endpoint{ep("node1", false, map[string]uint16{"dns": 53}, "10.65.0.5")}}},
		want: []PortLB{{Key: PortKey{"kube", "dns", "dns", "UDP", false}, Protocol: "UDP", Port: 53, Frontends: addrs("10.96.0.53")}},
	}, {
		name: "headless, ExternalName and unallocated Services balance nothing",
		in: []ServiceInput{
			{Service: clusterSvc("a", "headless", "None", web)},
			{Service: func() *api.Service {
				s := clusterSvc("a", "ext", "", web)
				s.Spec.Type, s.Spec.ExternalName = api.ServiceTypeExternalName, "example.com"
				return s
			}()},
			{Service: clusterSvc("a", "pending", "", web)},
		},
	}, {
		name: "external and load-balancer IPs join the cluster IPs; ClientIP affinity with its timeout",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", web)
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
			s.Spec.ExternalIPs = []string{"192.0.2.7", "192.0.2.1"}
			s.Status = &api.ServiceStatus{LoadBalancer: api.LoadBalancerStatus{Ingress: []api.LoadBalancerIngress{{IP: "192.0.2.1"}, {Hostname: "lb.example"}}}}
			s.Spec.SessionAffinity = api.SessionAffinityClientIP
			s.Spec.SessionAffinityConfig = &api.SessionAffinityConfig{ClientIP: &api.ClientIPConfig{TimeoutSeconds: &timeout}}
			return s
		}(), Endpoints: []Endpoint{ep("node1", true, http, "10.65.0.2")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10", "fd00:96::10", "192.0.2.1", "192.0.2.7"),
			Backends:  []Backend{be("10.65.0.2", 8080)}, Affinity: 60 * time.Second,
		}},
	}, {
		name: "internalTrafficPolicy Local: cluster IPs keep this node's endpoints, external IPs all",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", web)
			s.Spec.InternalTrafficPolicy = api.TrafficPolicyLocal
			s.Spec.ExternalIPs = []string{"192.0.2.7"}
			return s
		}(), Endpoints: []Endpoint{ep("node1", true, http, "10.65.0.2"), ep("node2", true, http, "10.65.1.2")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10"), Backends: []Backend{be("10.65.0.2", 8080)},
		}, {
			Key: PortKey{"shop", "web", "http", "TCP", true}, Protocol: "TCP", Port: 80,
			Frontends: addrs("192.0.2.7"), Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.2", 8080)},
		}},
	}, {
		name: "internalTrafficPolicy Local without a local endpoint rejects",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", web)
			s.Spec.InternalTrafficPolicy = api.TrafficPolicyLocal
			return s
		}(), Endpoints: []Endpoint{ep("node2", true, http, "10.65.1.2")}}},
		want: []PortLB{{Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80, Frontends: addrs("10.96.0.10")}},
	}, {
		name: "NodePort, externalTrafficPolicy Cluster: the nodePort beside the cluster and external IPs",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", api.ServicePort{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080})
			s.Spec.Type, s.Spec.ExternalTrafficPolicy = api.ServiceTypeNodePort, api.TrafficPolicyCluster
			s.Spec.ExternalIPs = []string{"192.0.2.7"}
			return s
		}(), Endpoints: []Endpoint{ep("node1", true, http, "10.65.0.2"), ep("node2", true, http, "10.65.1.2")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10", "192.0.2.7"), Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.2", 8080)},
			NodePort: 30080, NodePortFamilies: [2]bool{true, false},
		}},
	}, {
		name: "a ClusterIP Service's stale nodePort is not served",
		in: []ServiceInput{{Service: clusterSvc("shop", "web", "10.96.0.10", api.ServicePort{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}),
			Endpoints: []Endpoint{ep("node1", true, http, "10.65.0.2")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10"), Backends: []Backend{be("10.65.0.2", 8080)},
		}},
	}, {
		name: "LoadBalancer, externalTrafficPolicy Local: external IPs and nodePort apart, with the local endpoints",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", api.ServicePort{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080})
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
			s.Spec.Type, s.Spec.ExternalTrafficPolicy = api.ServiceTypeLoadBalancer, api.TrafficPolicyLocal
			s.Status = &api.ServiceStatus{LoadBalancer: api.LoadBalancerStatus{Ingress: []api.LoadBalancerIngress{{IP: "192.0.2.1"}}}}
			return s
		}(), Endpoints: []Endpoint{ep("node1", true, http, "10.65.0.2"), ep("node2", true, http, "10.65.1.2"), ep("node1", false, http, "10.65.0.3")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10", "fd00:96::10"), Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.2", 8080)},
		}, {
			Key: PortKey{"shop", "web", "http", "TCP", true}, Protocol: "TCP", Port: 80,
			Frontends: addrs("192.0.2.1"), Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.2", 8080)},
			NodePort: 30080, NodePortFamilies: [2]bool{true, true},
			ExternalLocal: true, LocalBackends: []Backend{be("10.65.0.2", 8080)},
		}},
	}, {
		name: "NodePort, externalTrafficPolicy Local without a local endpoint: no local backend (dropped)",
		in: []ServiceInput{{Service: func() *api.Service {
			s := clusterSvc("shop", "web", "10.96.0.10", api.ServicePort{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080})
			s.Spec.Type, s.Spec.ExternalTrafficPolicy = api.ServiceTypeNodePort, api.TrafficPolicyLocal
			return s
		}(), Endpoints: []Endpoint{ep("node2", true, http, "10.65.1.2")}}},
		want: []PortLB{{
			Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
			Frontends: addrs("10.96.0.10"), Backends: []Backend{be("10.65.1.2", 8080)},
		}, {
			Key: PortKey{"shop", "web", "http", "TCP", true}, Protocol: "TCP", Port: 80,
			Backends: []Backend{be("10.65.1.2", 8080)}, NodePort: 30080, NodePortFamilies: [2]bool{true, false},
			ExternalLocal: true,
		}},
	}, {
		name: "ports of several Services sorted by namespace, name, port",
		in: []ServiceInput{
			{Service: clusterSvc("z", "a", "10.96.0.3", web)},
			{Service: clusterSvc("a", "b", "10.96.0.2", web, dns)},
		},
		want: []PortLB{
			{Key: PortKey{"a", "b", "dns", "UDP", false}, Protocol: "UDP", Port: 53, Frontends: addrs("10.96.0.2")},
			{Key: PortKey{"a", "b", "http", "TCP", false}, Protocol: "TCP", Port: 80, Frontends: addrs("10.96.0.2")},
			{Key: PortKey{"z", "a", "http", "TCP", false}, Protocol: "TCP", Port: 80, Frontends: addrs("10.96.0.3")},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Desired("node1", tt.in)
			if !reflect.DeepEqual(got.Ports, tt.want) {
				t.Errorf("Desired =\n%+v\nwant\n%+v", got.Ports, tt.want)
			}
		})
	}
}

// TestLBCacheMatchesDesired replays random changes of a few Services, each a new object
// or the one before, with its endpoints new or the same slice, as the agent's views share
// what did not change. LBCache must give what Desired gives from nothing at every step,
// including when the node changes.
func TestLBCacheMatchesDesired(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	http := map[string]uint16{"http": 8080}
	service := func(i, net int) *api.Service {
		s := clusterSvc("ns", fmt.Sprintf("s%d", i), fmt.Sprintf("10.96.%d.%d", net, i), api.ServicePort{Name: "http", Protocol: "TCP", Port: 80})
		if i < 2 {
			s.Spec.InternalTrafficPolicy = api.TrafficPolicyLocal // its ports depend on the node
		}
		return s
	}
	in := make([]ServiceInput, 5)
	for i := range in {
		in[i] = ServiceInput{Service: service(i, 0)}
	}
	var c LBCache
	for step := range 300 {
		next := slices.Clone(in)
		for i := range next {
			switch rng.IntN(6) {
			case 0: // a new Service object, another cluster IP
				next[i].Service = service(i, rng.IntN(3))
			case 1: // new endpoints
				var eps []Endpoint
				for j := range rng.IntN(4) {
					eps = append(eps, ep(fmt.Sprintf("node%d", 1+rng.IntN(2)), rng.IntN(4) > 0, http, fmt.Sprintf("10.65.%d.%d", i, j)))
				}
				next[i].Endpoints = eps
			}
		}
		rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
		in = next
		node := fmt.Sprintf("node%d", 1+step/100)
		if got, want := c.Desired(node, in), Desired(node, in); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: LBCache\n%+v\nDesired\n%+v", step, got, want)
		}
	}
}
