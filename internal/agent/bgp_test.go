package agent

import (
	"slices"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

func testService(name string, etp api.TrafficPolicy) *api.Service {
	s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	s.Namespace, s.Name = "shop", name
	s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.ClusterIP = api.ServiceTypeLoadBalancer, etp, "10.96.0.5"
	s.Spec.Selector = map[string]string{"app": name}
	s.Spec.Ports = []api.ServicePort{{Port: 80}}
	return s
}

func names(svcs []*api.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Name)
	}
	return out
}

// TestLocalServices: BGP's host routes are for the Services with externalTrafficPolicy
// Local and a ready endpoint on this node.
func TestLocalServices(t *testing.T) {
	local, cluster := api.TrafficPolicyLocal, api.TrafficPolicyCluster
	for _, tt := range []struct {
		name string
		etp  api.TrafficPolicy
		eps  []proxy.Endpoint
		want bool
	}{
		{"ready here", local, []proxy.Endpoint{{Node: "node2", Ready: true}, {Node: "node1", Ready: true}}, true},
		{"here but not ready (a failed health check, a terminating pod)", local, []proxy.Endpoint{{Node: "node1", Serving: true, Terminating: true}}, false},
		{"ready on another node only", local, []proxy.Endpoint{{Node: "node2", Ready: true}}, false},
		{"ready on no node named", local, []proxy.Endpoint{{Ready: true}}, false},
		{"no endpoints", local, nil, false},
		{"policy Cluster", cluster, []proxy.Endpoint{{Node: "node1", Ready: true}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := localServices("node1", []proxy.ServiceInput{{Service: testService("web", tt.etp), Endpoints: tt.eps}})
			if (len(got) == 1) != tt.want {
				t.Errorf("localServices = %v, want web: %v", names(got), tt.want)
			}
		})
	}
}

// TestBGPTakeDerivesServicesOnChange: the BGP subsystem derives its local Services again
// on a view that changes Services or their endpoints, and reuses them (no derivation
// through the shared serviceIndex) on a view that changes only what else it reads.
func TestBGPTakeDerivesServicesOnChange(t *testing.T) {
	web := wep("shop", "web-1", "node1", "tabbya", "10.244.0.1/32")
	web.Labels = map[string]string{"app": "web"}
	v1 := mustView(t, nil, testNode("node1", "172.31.1.10/24"), testService("web", api.TrafficPolicyLocal), web)
	a := &bgpSubsystem{node: "node1", role: RoleNode, services: &serviceIndex{}}
	if !a.take(nil, v1) || a.services.view != v1 || !slices.Equal(names(a.local), []string{"web"}) {
		t.Fatalf("first view: local %v, index of view %p (want %p)", names(a.local), a.services.view, v1)
	}
	next := func(prev *snapshot.View, rs ...api.Resource) *snapshot.View {
		t.Helper()
		v, err := prev.With(rs...)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v2 := next(v1, testNode("node2", "172.31.1.11/24"))
	if !a.take(v1, v2) || a.services.view != v1 || len(a.local) != 1 {
		t.Errorf("a new node: reconcile, keep the derived Services: index of view %p (want %p), local %v", a.services.view, v1, names(a.local))
	}
	moved := wep("shop", "web-1", "node2", "tabbya", "10.244.0.1/32")
	moved.Labels = web.Labels
	v3 := next(v2, moved)
	if !a.take(v2, v3) || a.services.view != v3 || len(a.local) != 0 {
		t.Errorf("the endpoint moved to node2: local %v, want none", names(a.local))
	}
	v4 := next(v3, testService("web", api.TrafficPolicyCluster))
	if !a.take(v3, v4) || a.services.view != v4 {
		t.Errorf("a Service change: not derived again")
	}
	v5 := next(v4, &api.NetworkPolicy{TypeMeta: api.TypeMeta{Kind: "NetworkPolicy", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "p"}})
	if a.take(v4, v5) || a.services.view != v4 {
		t.Errorf("a policy change: taken, or Services derived again")
	}
}
