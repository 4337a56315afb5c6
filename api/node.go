package api

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"reflect"
)

// Node is a host running tabby-node: its BGP identity and its tunnel addresses.
type Node struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec    `json:"spec"`
	Status     *NodeStatus `json:"status,omitempty"`
}

// NodeStatus is what a node's agent reports of itself, as Calico's.
type NodeStatus struct {
	// WireguardPublicKey is the node's WireGuard public key (base64), published once its
	// wireguard.tabby device is up; the other nodes then encrypt to it.
	WireguardPublicKey string `json:"wireguardPublicKey,omitempty"`
}

// AnnotationWorkloadMTU is the Node annotation in which a node's agent records the MTU its
// workloads get: the underlay interface's, less the header of the tunnel a pool uses (20
// for IPIP, 50 for VXLAN, 70 for VXLAN over IPv6). tabby-cni uses it when its
// configuration sets no mtu.
const AnnotationWorkloadMTU = "tabby.io/workload-mtu"

// NodeSpec is Calico's Node spec.
type NodeSpec struct {
	BGP                 *NodeBGPSpec `json:"bgp,omitempty"`
	IPv4VXLANTunnelAddr string       `json:"ipv4VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddr  string       `json:"vxlanTunnelMACAddr,omitempty"`
	// IPv6VXLANTunnelAddr and VXLANTunnelMACAddrV6 are the VTEP of vxlan-v6.tabby, the
	// device of IPv6 pools with a vxlanMode (VXLAN over the IPv6 underlay), as Calico's.
	IPv6VXLANTunnelAddr  string             `json:"ipv6VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddrV6 string             `json:"vxlanTunnelMACAddrV6,omitempty"`
	OrchRefs             []OrchRef          `json:"orchRefs,omitempty"`
	Wireguard            *NodeWireguardSpec `json:"wireguard,omitempty"`
}

// NodeWireguardSpec is the address of the node's wireguard.tabby, from IPAM (handle
// wireguard-tunnel-addr-<node>), as Calico's: the source of the node's own traffic to
// other nodes' workloads through it.
type NodeWireguardSpec struct {
	InterfaceIPv4Address string `json:"interfaceIPv4Address,omitempty"`
}

// NodeBGPSpec is a node's BGP identity. IPv4Address and IPv6Address carry the node's
// address and its subnet's prefix length ("10.0.0.1/24"), as Calico writes them.
type NodeBGPSpec struct {
	ASNumber                *ASNumber `json:"asNumber,omitempty"`
	IPv4Address             string    `json:"ipv4Address,omitempty"`
	IPv6Address             string    `json:"ipv6Address,omitempty"`
	IPv4IPIPTunnelAddr      string    `json:"ipv4IPIPTunnelAddr,omitempty"`
	RouteReflectorClusterID string    `json:"routeReflectorClusterID,omitempty"`
}

// OrchRef ties the node to its name in an orchestrator.
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

func init() {
	register(&Kind{
		Name: "Node", APIVersion: VersionCalico, Plural: "nodes", Singular: "node",
		Aliases: []string{"no", "nos"},
		New:     func() Resource { return &Node{TypeMeta: TypeMeta{Kind: "Node", APIVersion: VersionCalico}} },
	})
}

// IPv4Prefix returns the node's IPv4 address with its subnet's length, host bits kept (a
// bare address is taken as /32). The prefix is invalid (!IsValid) when the node has none.
func (s *NodeBGPSpec) IPv4Prefix() (netip.Prefix, error) {
	return parseInterfacePrefix(s.IPv4Address)
}

// IPv6Prefix is IPv4Prefix for the node's IPv6 address.
func (s *NodeBGPSpec) IPv6Prefix() (netip.Prefix, error) {
	return parseInterfacePrefix(s.IPv6Address)
}

// parseInterfacePrefix parses an address/length pair whose host bits are the point.
func parseInterfacePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := parseAddrPrefix(s)
	if err != nil {
		return p, fmt.Errorf("node address: %w", err)
	}
	return p, nil
}

func (n *Node) validate(errs *FieldErrors) {
	s := &n.Spec
	if b := s.BGP; b != nil {
		if reflect.ValueOf(*b).IsZero() {
			errs.add("spec.bgp", nil, "empty; omit it for a node without BGP")
		}
		checkASNumber(errs, "spec.bgp.asNumber", b.ASNumber)
		checkInterfaceAddr(errs, "spec.bgp.ipv4Address", b.IPv4Address, ipv4Only)
		checkInterfaceAddr(errs, "spec.bgp.ipv6Address", b.IPv6Address, ipv6Only)
		if b.IPv4IPIPTunnelAddr != "" {
			checkAddr(errs, "spec.bgp.ipv4IPIPTunnelAddr", b.IPv4IPIPTunnelAddr, ipv4Only)
		}
		// A cluster ID is a 32-bit number written as an IPv4 address, as in BIRD and Calico.
		if b.RouteReflectorClusterID != "" {
			checkAddr(errs, "spec.bgp.routeReflectorClusterID", b.RouteReflectorClusterID, ipv4Only)
		}
	}
	if s.IPv4VXLANTunnelAddr != "" {
		checkAddr(errs, "spec.ipv4VXLANTunnelAddr", s.IPv4VXLANTunnelAddr, ipv4Only)
	}
	if s.VXLANTunnelMACAddr != "" {
		checkMAC(errs, "spec.vxlanTunnelMACAddr", s.VXLANTunnelMACAddr)
	}
	if s.IPv6VXLANTunnelAddr != "" {
		checkAddr(errs, "spec.ipv6VXLANTunnelAddr", s.IPv6VXLANTunnelAddr, ipv6Only)
	}
	if s.VXLANTunnelMACAddrV6 != "" {
		checkMAC(errs, "spec.vxlanTunnelMACAddrV6", s.VXLANTunnelMACAddrV6)
	}
	for i, r := range s.OrchRefs {
		checkRequired(errs, index("spec.orchRefs", i)+".orchestrator", r.Orchestrator)
	}
	if w := s.Wireguard; w != nil && w.InterfaceIPv4Address != "" {
		checkAddr(errs, "spec.wireguard.interfaceIPv4Address", w.InterfaceIPv4Address, ipv4Only)
	}
	if st := n.Status; st != nil && st.WireguardPublicKey != "" {
		if k, err := base64.StdEncoding.DecodeString(st.WireguardPublicKey); err != nil || len(k) != 32 {
			errs.add("status.wireguardPublicKey", st.WireguardPublicKey, "%q is not a WireGuard key (32 bytes in base64)", st.WireguardPublicKey)
		}
	}
}

// checkInterfaceAddr checks an "address/length" field of the given family.
func checkInterfaceAddr(errs *FieldErrors, field, s string, family int) {
	p, err := parseInterfacePrefix(s)
	switch {
	case err != nil:
		errs.add(field, s, "%q is not an address with optional prefix length, like \"10.0.0.1/24\"", s)
	case !p.IsValid():
	case family == ipv4Only && !p.Addr().Is4():
		errs.add(field, s, "%q is not an IPv4 address", s)
	case family == ipv6Only && !p.Addr().Is6():
		errs.add(field, s, "%q is not an IPv6 address", s)
	}
}
