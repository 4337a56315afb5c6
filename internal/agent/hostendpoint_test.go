package agent

import (
	"slices"
	"testing"

	"github.com/tabby-net/tabby/api"
)

func TestAutoHostEndpoint(t *testing.T) {
	n := &api.Node{
		ObjectMeta: api.ObjectMeta{Name: "node1", Labels: map[string]string{"role": "etcd"}},
		Spec: api.NodeSpec{
			BGP:                 &api.NodeBGPSpec{IPv4Address: "10.0.0.1/24", IPv6Address: "fd00::1/64", IPv4IPIPTunnelAddr: "10.244.0.1"},
			IPv4VXLANTunnelAddr: "10.244.0.1", // the same address twice: once in expectedIPs
			IPv6VXLANTunnelAddr: "fd00:10:244::",
		},
	}
	h := autoHostEndpoint(n)
	if h.Name != "node1-auto-hep" || h.Spec.Node != "node1" || h.Spec.InterfaceName != "*" {
		t.Errorf("name %s, node %s, interface %s", h.Name, h.Spec.Node, h.Spec.InterfaceName)
	}
	if want := []string{"10.0.0.1", "fd00::1", "10.244.0.1", "fd00:10:244::"}; !slices.Equal(h.Spec.ExpectedIPs, want) {
		t.Errorf("expectedIPs %v, want %v", h.Spec.ExpectedIPs, want)
	}
	if h.Labels["role"] != "etcd" || !slices.Equal(h.Spec.Profiles, []string{"projectcalico-default-allow"}) {
		t.Errorf("labels %v, profiles %v", h.Labels, h.Spec.Profiles)
	}
	n.Labels["role"] = "x"
	if h.Labels["role"] != "etcd" {
		t.Error("the endpoint shares the node's label map")
	}
	if err := api.Validate(h); err != nil {
		t.Errorf("the automatic host endpoint does not validate: %v", err)
	}
	if h := autoHostEndpoint(&api.Node{ObjectMeta: api.ObjectMeta{Name: "bare"}}); len(h.Spec.ExpectedIPs) != 0 || api.Validate(h) != nil {
		t.Errorf("a node without addresses: %+v", h.Spec)
	}
}
