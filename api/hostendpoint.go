package api

import (
	"fmt"
	"net/netip"
)

// HostEndpoint is one of a host's own interfaces (or all of them, interfaceName "*"), so
// that policy can protect the host as it protects workloads.
type HostEndpoint struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       HostEndpointSpec `json:"spec"`
}

// HostEndpointSpec is Calico's HostEndpoint spec, without named ports.
type HostEndpointSpec struct {
	// Node is the host whose interface this is.
	Node string `json:"node"`
	// InterfaceName is the interface policy is enforced on; "*" is every interface of
	// the host but workloads'. Empty, as in Calico, it is each interface of the node
	// that holds one of ExpectedIPs (then required).
	InterfaceName string `json:"interfaceName,omitempty"`
	// ExpectedIPs are the interface's addresses: what rule selectors matching this
	// endpoint match.
	ExpectedIPs []string `json:"expectedIPs,omitempty"`
	Profiles    []string `json:"profiles,omitempty"`
}

// AllInterfaces is the InterfaceName of a host endpoint covering every host interface.
const AllInterfaces = "*"

func init() {
	register(&Kind{
		Name: "HostEndpoint", APIVersion: VersionCalico, Plural: "hostendpoints", Singular: "hostendpoint",
		Aliases: []string{"hep", "heps"},
		New: func() Resource {
			return &HostEndpoint{TypeMeta: TypeMeta{Kind: "HostEndpoint", APIVersion: VersionCalico}}
		},
	})
}

// Addrs parses ExpectedIPs.
func (s *HostEndpointSpec) Addrs() ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(s.ExpectedIPs))
	for _, ip := range s.ExpectedIPs {
		a, err := parseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("expectedIPs: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

func (h *HostEndpoint) validate(errs *FieldErrors) {
	s := &h.Spec
	checkSubdomain(errs, "spec.node", s.Node)
	switch {
	case s.InterfaceName == "":
		if len(s.ExpectedIPs) == 0 {
			errs.add("spec.interfaceName", "", "required when expectedIPs is empty (a host endpoint names its interface, or the addresses that find it)")
		}
	case s.InterfaceName == AllInterfaces:
	case !interfaceNameRE.MatchString(s.InterfaceName):
		errs.add("spec.interfaceName", s.InterfaceName, "%q is not a valid interface name (\"*\", or at most 15 alphanumerics, '_', '.' or '-')", s.InterfaceName)
	}
	for i, ip := range s.ExpectedIPs {
		checkAddr(errs, index("spec.expectedIPs", i), ip, anyFamily)
	}
	for i, name := range s.Profiles {
		checkSubdomain(errs, index("spec.profiles", i), name)
	}
}
