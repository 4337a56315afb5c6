package api

// VersionDiscovery is the API group and version of EndpointSlice.
const VersionDiscovery = "discovery.k8s.io/v1"

// LabelServiceName names the Service an EndpointSlice belongs to, as in Kubernetes.
const LabelServiceName = "kubernetes.io/service-name"

// EndpointSlice is Kubernetes' discovery.k8s.io/v1 EndpointSlice: a part of the endpoints
// of the Service its label kubernetes.io/service-name names. A Service without a selector
// takes its endpoints from its slices (all of them, merged), or else from its Endpoints.
type EndpointSlice struct {
	TypeMeta    `json:",inline"`
	ObjectMeta  `json:"metadata"`
	AddressType AddressType             `json:"addressType"`
	Endpoints   []EndpointSliceEndpoint `json:"endpoints,omitempty"`
	Ports       []EndpointSlicePort     `json:"ports,omitempty"`
}

// AddressType is the kind of address every endpoint of a slice has.
type AddressType string

// Address types. tabby refuses FQDN: it cannot route to a name.
const (
	AddressTypeIPv4 AddressType = "IPv4"
	AddressTypeIPv6 AddressType = "IPv6"
	AddressTypeFQDN AddressType = "FQDN"
)

// EndpointSliceEndpoint is one endpoint of a slice. Its addresses are fungible: like
// kube-proxy, tabby uses the first.
type EndpointSliceEndpoint struct {
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions,omitempty"`
	Hostname   string             `json:"hostname,omitempty"`
	NodeName   string             `json:"nodeName,omitempty"`
	Zone       string             `json:"zone,omitempty"`
	TargetRef  *ObjectReference   `json:"targetRef,omitempty"`
}

// EndpointConditions are an endpoint's state. Unset, ready and serving mean true and
// terminating false, as kube-proxy reads them.
type EndpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// IsReady, IsServing and IsTerminating read the conditions with their defaults.
func (c EndpointConditions) IsReady() bool       { return c.Ready == nil || *c.Ready }
func (c EndpointConditions) IsServing() bool     { return c.Serving == nil || *c.Serving }
func (c EndpointConditions) IsTerminating() bool { return c.Terminating != nil && *c.Terminating }

// EndpointSlicePort is one port every endpoint of the slice serves. Kubernetes lets an
// unset port mean "every port"; tabby cannot forward that and requires one.
type EndpointSlicePort struct {
	Name        string       `json:"name,omitempty"`
	Protocol    PortProtocol `json:"protocol,omitempty"`
	Port        int32        `json:"port,omitempty"`
	AppProtocol string       `json:"appProtocol,omitempty"`
}

// Kubernetes' limits on a slice.
const (
	maxSliceEndpoints = 1000
	maxSlicePorts     = 100
	maxSliceAddresses = 100
)

func init() {
	register(&Kind{
		Name: "EndpointSlice", APIVersion: VersionDiscovery, Plural: "endpointslices", Singular: "endpointslice",
		Aliases: []string{"epslice"}, Namespaced: true,
		New: func() Resource {
			return &EndpointSlice{TypeMeta: TypeMeta{Kind: "EndpointSlice", APIVersion: VersionDiscovery}}
		},
	})
}

// ServiceName is the Service the slice belongs to ("" when its label does not say).
func (s *EndpointSlice) ServiceName() string { return s.Labels[LabelServiceName] }

func (s *EndpointSlice) setDefaults() {
	for i := range s.Ports {
		if s.Ports[i].Protocol == "" {
			s.Ports[i].Protocol = PortProtocolTCP
		}
	}
}

func (s *EndpointSlice) validate(errs *FieldErrors) {
	family := anyFamily
	switch s.AddressType {
	case "":
		errs.add("addressType", "", "required: one of IPv4, IPv6")
	case AddressTypeIPv4:
		family = ipv4Only
	case AddressTypeIPv6:
		family = ipv6Only
	case AddressTypeFQDN:
		errs.add("addressType", string(s.AddressType), "FQDN is not supported: tabby routes to addresses, not names; use IPv4 or IPv6")
	default:
		errs.add("addressType", string(s.AddressType), "%q is not one of IPv4, IPv6", string(s.AddressType))
	}
	if svc, ok := s.Labels[LabelServiceName]; ok {
		checkDNS1035Label(errs, mapPath("metadata.labels", LabelServiceName), svc)
	}
	if n := len(s.Endpoints); n > maxSliceEndpoints {
		errs.add("endpoints", n, "%d endpoints; a slice holds at most %d", n, maxSliceEndpoints)
	}
	for i, ep := range s.Endpoints {
		f := index("endpoints", i)
		switch n := len(ep.Addresses); {
		case n == 0:
			errs.add(f+".addresses", nil, "required: at least one address")
		case n > maxSliceAddresses:
			errs.add(f+".addresses", n, "%d addresses; at most %d", n, maxSliceAddresses)
		}
		if s.AddressType != AddressTypeFQDN {
			for j, a := range ep.Addresses {
				checkAddr(errs, index(f+".addresses", j), a, family)
			}
		}
		if ep.Hostname != "" {
			checkLabel(errs, f+".hostname", ep.Hostname)
		}
		if ep.NodeName != "" {
			checkSubdomain(errs, f+".nodeName", ep.NodeName)
		}
		checkLabelValue(errs, f+".zone", ep.Zone)
	}
	if n := len(s.Ports); n > maxSlicePorts {
		errs.add("ports", n, "%d ports; a slice holds at most %d", n, maxSlicePorts)
	}
	names := map[string]bool{}
	for i, p := range s.Ports {
		f := index("ports", i)
		if p.Name != "" {
			checkLabel(errs, f+".name", p.Name)
		}
		if names[p.Name] {
			errs.add(f+".name", p.Name, "%q is used by another port", p.Name)
		}
		names[p.Name] = true
		checkPortProtocol(errs, f+".protocol", p.Protocol)
		if p.Port == 0 {
			errs.add(f+".port", int32(0), "required: tabby cannot forward every port of an endpoint")
		} else {
			checkPortNumber(errs, f+".port", p.Port)
		}
		if p.AppProtocol != "" {
			checkQualifiedName(errs, f+".appProtocol", p.AppProtocol)
		}
	}
}
