package api

import (
	"fmt"
	"net/netip"
	"regexp"
)

// WorkloadEndpoint is one network interface of a workload, attached to a node.
type WorkloadEndpoint struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec is Calico's WorkloadEndpoint spec. IPNetworks hold single
// addresses ("10.65.0.5/32"), as Calico's do.
type WorkloadEndpointSpec struct {
	Orchestrator       string                 `json:"orchestrator,omitempty"`
	Workload           string                 `json:"workload,omitempty"`
	Node               string                 `json:"node,omitempty"`
	ContainerID        string                 `json:"containerID,omitempty"`
	Pod                string                 `json:"pod,omitempty"`
	Endpoint           string                 `json:"endpoint,omitempty"`
	ServiceAccountName string                 `json:"serviceAccountName,omitempty"`
	IPNetworks         []string               `json:"ipNetworks,omitempty"`
	IPNATs             []IPNAT                `json:"ipNATs,omitempty"`
	Profiles           []string               `json:"profiles,omitempty"`
	InterfaceName      string                 `json:"interfaceName,omitempty"`
	MAC                string                 `json:"mac,omitempty"`
	Ports              []WorkloadEndpointPort `json:"ports,omitempty"`
}

// IPNAT maps an external address 1:1 onto one of the endpoint's addresses.
type IPNAT struct {
	InternalIP string `json:"internalIP"`
	ExternalIP string `json:"externalIP"`
}

// WorkloadEndpointPort is a named port that policy rules may refer to, or a host port
// mapping.
type WorkloadEndpointPort struct {
	Name     string   `json:"name,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
	Port     uint16   `json:"port"`
	HostPort uint16   `json:"hostPort,omitempty"`
	HostIP   string   `json:"hostIP,omitempty"`
}

func init() {
	register(&Kind{
		Name: "WorkloadEndpoint", APIVersion: VersionCalico, Plural: "workloadendpoints", Singular: "workloadendpoint",
		Aliases: []string{"wep", "weps"}, Namespaced: true,
		New: func() Resource {
			return &WorkloadEndpoint{TypeMeta: TypeMeta{Kind: "WorkloadEndpoint", APIVersion: VersionCalico}}
		},
	})
}

// Addrs parses IPNetworks into the endpoint's addresses.
func (s *WorkloadEndpointSpec) Addrs() ([]netip.Addr, error) {
	ps, err := ParseNets(s.IPNetworks)
	if err != nil {
		return nil, fmt.Errorf("ipNetworks: %w", err)
	}
	addrs := make([]netip.Addr, len(ps))
	for i, p := range ps {
		if !p.IsSingleIP() {
			return nil, fmt.Errorf("ipNetworks: %s holds more than one address", p)
		}
		addrs[i] = p.Addr()
	}
	return addrs, nil
}

func (w *WorkloadEndpoint) setDefaults() {
	for i := range w.Spec.Ports {
		if w.Spec.Ports[i].Protocol == "" {
			w.Spec.Ports[i].Protocol = ProtocolTCP
		}
	}
}

var (
	containerIDRE = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	// interfaceNameRE is Linux's limit (15 bytes) with the characters Calico allows.
	interfaceNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
)

func (w *WorkloadEndpoint) validate(errs *FieldErrors) {
	s := &w.Spec
	checkSubdomain(errs, "spec.node", s.Node)
	for _, f := range []struct{ field, value string }{
		{"spec.orchestrator", s.Orchestrator},
		{"spec.workload", s.Workload},
		{"spec.pod", s.Pod},
		{"spec.endpoint", s.Endpoint},
		{"spec.serviceAccountName", s.ServiceAccountName},
	} {
		if f.value != "" {
			checkSubdomain(errs, f.field, f.value)
		}
	}
	if s.ContainerID != "" && !containerIDRE.MatchString(s.ContainerID) {
		errs.add("spec.containerID", s.ContainerID, "%q is not a valid container ID (alphanumerics and '-')", s.ContainerID)
	}
	if checkRequired(errs, "spec.interfaceName", s.InterfaceName) && !interfaceNameRE.MatchString(s.InterfaceName) {
		errs.add("spec.interfaceName", s.InterfaceName, "%q is not a valid interface name (at most 15 alphanumerics, '_', '.' or '-')", s.InterfaceName)
	}
	if s.MAC != "" {
		checkMAC(errs, "spec.mac", s.MAC)
	}
	var own []netip.Prefix
	for i, n := range s.IPNetworks {
		f := index("spec.ipNetworks", i)
		if p, ok := checkNet(errs, f, n); ok {
			if !p.IsSingleIP() {
				errs.add(f, n, "%s holds more than one address; a workload's networks are /32 or /128", p)
			}
			own = append(own, p)
		}
	}
	for i, nat := range s.IPNATs {
		f := index("spec.ipNATs", i)
		in, inOK := checkAddr(errs, f+".internalIP", nat.InternalIP, anyFamily)
		ext, extOK := checkAddr(errs, f+".externalIP", nat.ExternalIP, anyFamily)
		if inOK && extOK && in.Is4() != ext.Is4() {
			errs.add(f+".externalIP", nat.ExternalIP, "%s and internalIP %s are of different IP versions", ext, in)
		}
		if inOK && !prefixesContain(own, in) {
			errs.add(f+".internalIP", nat.InternalIP, "%s is not one of the endpoint's ipNetworks", in)
		}
	}
	for i, name := range s.Profiles {
		checkSubdomain(errs, index("spec.profiles", i), name)
	}
	for i, p := range s.Ports {
		f := index("spec.ports", i)
		if p.Name != "" {
			checkPortName(errs, f+".name", p.Name)
		} else if p.HostPort == 0 {
			errs.add(f+".name", "", "required unless hostPort is set")
		}
		if checkProtocol(errs, f+".protocol", p.Protocol) && !p.Protocol.SupportsPorts() {
			errs.add(f+".protocol", string(p.Protocol), "%s has no ports; use TCP, UDP or SCTP", p.Protocol)
		}
		if p.Port == 0 {
			errs.add(f+".port", 0, "port 0 is out of range 1-65535")
		}
		if p.HostIP != "" {
			checkAddr(errs, f+".hostIP", p.HostIP, anyFamily)
		}
	}
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
