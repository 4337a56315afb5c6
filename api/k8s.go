package api

import (
	"fmt"
	"net/netip"
)

// The Kubernetes kinds tabby accepts, in the shapes (and with the defaults) of the
// Kubernetes API, limited to the fields tabby implements.

// Namespace groups namespaced resources; its labels feed namespaceSelectors.
type Namespace struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NamespaceSpec    `json:"spec,omitempty"`
	Status     *NamespaceStatus `json:"status,omitempty"`
}

// NamespaceSpec is Kubernetes' Namespace spec.
type NamespaceSpec struct {
	Finalizers []string `json:"finalizers,omitempty"`
}

// NamespaceStatus is what `kubectl get -o yaml` shows of a namespace's state.
type NamespaceStatus struct {
	Phase string `json:"phase,omitempty"`
}

// Service is a virtual address (or node port) load-balanced over the endpoints its
// selector picks.
type Service struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ServiceSpec    `json:"spec"`
	Status     *ServiceStatus `json:"status,omitempty"`
}

// ServiceSpec is Kubernetes' Service spec. ClusterIP "None" makes a headless service.
type ServiceSpec struct {
	Type                  ServiceType            `json:"type,omitempty"`
	ClusterIP             string                 `json:"clusterIP,omitempty"`
	ClusterIPs            []string               `json:"clusterIPs,omitempty"`
	Ports                 []ServicePort          `json:"ports,omitempty"`
	Selector              map[string]string      `json:"selector,omitempty"`
	SessionAffinity       SessionAffinity        `json:"sessionAffinity,omitempty"`
	SessionAffinityConfig *SessionAffinityConfig `json:"sessionAffinityConfig,omitempty"`
	ExternalIPs           []string               `json:"externalIPs,omitempty"`
	ExternalName          string                 `json:"externalName,omitempty"`
	ExternalTrafficPolicy TrafficPolicy          `json:"externalTrafficPolicy,omitempty"`
	InternalTrafficPolicy TrafficPolicy          `json:"internalTrafficPolicy,omitempty"`
	IPFamilies            []IPFamily             `json:"ipFamilies,omitempty"`
	IPFamilyPolicy        IPFamilyPolicy         `json:"ipFamilyPolicy,omitempty"`
	LoadBalancerIP        string                 `json:"loadBalancerIP,omitempty"`
	// HealthCheckNodePort is the TCP port every node answers on for a LoadBalancer
	// Service with externalTrafficPolicy Local: 200 when it has a local ready endpoint,
	// else 503. Allocated from the node port range when unset.
	HealthCheckNodePort int32 `json:"healthCheckNodePort,omitempty"`
}

// NeedsHealthCheckNodePort says whether s gets a healthCheckNodePort: type LoadBalancer
// with externalTrafficPolicy Local, as in Kubernetes.
func (s *Service) NeedsHealthCheckNodePort() bool {
	return s.Spec.Type == ServiceTypeLoadBalancer && s.Spec.ExternalTrafficPolicy == TrafficPolicyLocal
}

// ServicePort is one port of a Service. TargetPort is a number or a container port name.
type ServicePort struct {
	Name       string       `json:"name,omitempty"`
	Protocol   PortProtocol `json:"protocol,omitempty"`
	Port       int32        `json:"port"`
	TargetPort IntOrString  `json:"targetPort,omitempty"`
	NodePort   int32        `json:"nodePort,omitempty"`
}

// SessionAffinityConfig holds ClientIP affinity's timeout.
type SessionAffinityConfig struct {
	ClientIP *ClientIPConfig `json:"clientIP,omitempty"`
}

// ClientIPConfig is ClientIP affinity's settings.
type ClientIPConfig struct {
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
}

// ServiceStatus is a Service's observed state.
type ServiceStatus struct {
	LoadBalancer LoadBalancerStatus `json:"loadBalancer,omitempty"`
}

// LoadBalancerStatus lists the addresses a load balancer gave the Service.
type LoadBalancerStatus struct {
	Ingress []LoadBalancerIngress `json:"ingress,omitempty"`
}

// LoadBalancerIngress is one load balancer address.
type LoadBalancerIngress struct {
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// ServiceType is how a Service is exposed.
type ServiceType string

// Service types.
const (
	ServiceTypeClusterIP    ServiceType = "ClusterIP"
	ServiceTypeNodePort     ServiceType = "NodePort"
	ServiceTypeLoadBalancer ServiceType = "LoadBalancer"
	ServiceTypeExternalName ServiceType = "ExternalName"
)

// SessionAffinity says whether a client sticks to one endpoint.
type SessionAffinity string

// Session affinities.
const (
	SessionAffinityNone     SessionAffinity = "None"
	SessionAffinityClientIP SessionAffinity = "ClientIP"
)

// TrafficPolicy says whether traffic may go to endpoints on other nodes.
type TrafficPolicy string

// Traffic policies.
const (
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	TrafficPolicyLocal   TrafficPolicy = "Local"
)

// IPFamily is IPv4 or IPv6.
type IPFamily string

// IP families.
const (
	IPv4Family IPFamily = "IPv4"
	IPv6Family IPFamily = "IPv6"
)

// IPFamilyPolicy says how many IP families a Service gets.
type IPFamilyPolicy string

// IP family policies.
const (
	IPFamilyPolicySingleStack      IPFamilyPolicy = "SingleStack"
	IPFamilyPolicyPreferDualStack  IPFamilyPolicy = "PreferDualStack"
	IPFamilyPolicyRequireDualStack IPFamilyPolicy = "RequireDualStack"
)

// PortProtocol is a Kubernetes port's protocol: exactly TCP, UDP or SCTP.
type PortProtocol string

// Kubernetes port protocols.
const (
	PortProtocolTCP  PortProtocol = "TCP"
	PortProtocolUDP  PortProtocol = "UDP"
	PortProtocolSCTP PortProtocol = "SCTP"
)

// Service defaults and limits, as Kubernetes has them.
const (
	DefaultAffinityTimeoutSeconds = 10800
	maxAffinityTimeoutSeconds     = 86400
	// The default --service-node-port-range of kube-apiserver.
	NodePortMin = 30000
	NodePortMax = 32767
	// ClusterIPNone marks a headless Service.
	ClusterIPNone = "None"
	// DefaultServiceClusterIPRange is where cluster IPs come from when the BGPConfiguration
	// "default" lists no serviceClusterIPs: kubeadm's default --service-cidr.
	DefaultServiceClusterIPRange = "10.96.0.0/12"
)

// Endpoints lists the addresses behind the Service of the same name.
type Endpoints struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Subsets    []EndpointSubset `json:"subsets,omitempty"`
}

// EndpointSubset is a set of addresses that share a set of ports.
type EndpointSubset struct {
	Addresses         []EndpointAddress `json:"addresses,omitempty"`
	NotReadyAddresses []EndpointAddress `json:"notReadyAddresses,omitempty"`
	Ports             []EndpointPort    `json:"ports,omitempty"`
}

// EndpointAddress is one endpoint.
type EndpointAddress struct {
	IP        string           `json:"ip"`
	Hostname  string           `json:"hostname,omitempty"`
	NodeName  string           `json:"nodeName,omitempty"`
	TargetRef *ObjectReference `json:"targetRef,omitempty"`
}

// ObjectReference points at the object (usually a Pod) behind an endpoint.
type ObjectReference struct {
	Kind            string `json:"kind,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// EndpointPort is one port of an endpoint subset.
type EndpointPort struct {
	Name     string       `json:"name,omitempty"`
	Port     int32        `json:"port"`
	Protocol PortProtocol `json:"protocol,omitempty"`
}

// K8sNetworkPolicy is Kubernetes' NetworkPolicy (networking.k8s.io/v1). Its Go name
// differs because Calico's NetworkPolicy owns the name; its CLI names are
// k8snetworkpolicy/k8snetworkpolicies/knp.
type K8sNetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       K8sNetworkPolicySpec `json:"spec"`
}

// K8sNetworkPolicySpec is Kubernetes' NetworkPolicy spec.
type K8sNetworkPolicySpec struct {
	PodSelector LabelSelector                 `json:"podSelector"`
	Ingress     []K8sNetworkPolicyIngressRule `json:"ingress,omitempty"`
	Egress      []K8sNetworkPolicyEgressRule  `json:"egress,omitempty"`
	PolicyTypes []PolicyType                  `json:"policyTypes,omitempty"`
}

// K8sNetworkPolicyIngressRule allows traffic from any of From to any of Ports; an empty
// list matches everything.
type K8sNetworkPolicyIngressRule struct {
	Ports []K8sNetworkPolicyPort `json:"ports,omitempty"`
	From  []K8sNetworkPolicyPeer `json:"from,omitempty"`
}

// K8sNetworkPolicyEgressRule allows traffic to any of To on any of Ports.
type K8sNetworkPolicyEgressRule struct {
	Ports []K8sNetworkPolicyPort `json:"ports,omitempty"`
	To    []K8sNetworkPolicyPeer `json:"to,omitempty"`
}

// K8sNetworkPolicyPeer is pods (by pod and/or namespace labels) or an IP block.
type K8sNetworkPolicyPeer struct {
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock       `json:"ipBlock,omitempty"`
}

// IPBlock is a CIDR minus some sub-ranges.
type IPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// K8sNetworkPolicyPort is a port (number or name) or a numeric range Port..EndPort; a nil
// Port means every port of the protocol.
type K8sNetworkPolicyPort struct {
	Protocol *PortProtocol `json:"protocol,omitempty"`
	Port     *IntOrString  `json:"port,omitempty"`
	EndPort  *int32        `json:"endPort,omitempty"`
}

// LabelSelector is Kubernetes' label selector; the empty selector matches everything.
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one matchExpressions entry.
type LabelSelectorRequirement struct {
	Key      string                `json:"key"`
	Operator LabelSelectorOperator `json:"operator"`
	Values   []string              `json:"values,omitempty"`
}

// LabelSelectorOperator relates a label to a set of values.
type LabelSelectorOperator string

// Label selector operators.
const (
	LabelSelectorOpIn           LabelSelectorOperator = "In"
	LabelSelectorOpNotIn        LabelSelectorOperator = "NotIn"
	LabelSelectorOpExists       LabelSelectorOperator = "Exists"
	LabelSelectorOpDoesNotExist LabelSelectorOperator = "DoesNotExist"
)

func init() {
	register(&Kind{
		Name: "Namespace", APIVersion: VersionCore, Plural: "namespaces", Singular: "namespace",
		Aliases: []string{"ns"},
		New:     func() Resource { return &Namespace{TypeMeta: TypeMeta{Kind: "Namespace", APIVersion: VersionCore}} },
	})
	register(&Kind{
		Name: "Service", APIVersion: VersionCore, Plural: "services", Singular: "service",
		Aliases: []string{"svc"}, Namespaced: true,
		New: func() Resource { return &Service{TypeMeta: TypeMeta{Kind: "Service", APIVersion: VersionCore}} },
	})
	register(&Kind{
		Name: "Endpoints", APIVersion: VersionCore, Plural: "endpoints", Singular: "endpoints",
		Aliases: []string{"ep"}, Namespaced: true,
		New: func() Resource { return &Endpoints{TypeMeta: TypeMeta{Kind: "Endpoints", APIVersion: VersionCore}} },
	})
	register(&Kind{
		Name: "NetworkPolicy", APIVersion: VersionNetworking, Plural: "k8snetworkpolicies", Singular: "k8snetworkpolicy",
		Aliases: []string{"knp"}, Namespaced: true,
		New: func() Resource {
			return &K8sNetworkPolicy{TypeMeta: TypeMeta{Kind: "NetworkPolicy", APIVersion: VersionNetworking}}
		},
	})
}

// Namespace names are DNS-1123 labels in Kubernetes.
func (n *Namespace) checkName(errs *FieldErrors) { checkLabel(errs, "metadata.name", n.Name) }

func (n *Namespace) validate(errs *FieldErrors) {
	for i, f := range n.Spec.Finalizers {
		checkQualifiedName(errs, index("spec.finalizers", i), f)
	}
}

// Service names are DNS-1035 labels in Kubernetes: they become DNS names.
func (s *Service) checkName(errs *FieldErrors) { checkDNS1035Label(errs, "metadata.name", s.Name) }

// IsHeadless says whether the Service has no virtual address.
func (s *Service) IsHeadless() bool { return s.Spec.ClusterIP == ClusterIPNone }

// ClusterAddrs parses the Service's virtual addresses (clusterIPs, or clusterIP when
// clusterIPs is empty); none for a headless or ExternalName Service.
func (s *Service) ClusterAddrs() ([]netip.Addr, error) {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var addrs []netip.Addr
	for _, ip := range ips {
		if ip == ClusterIPNone {
			continue
		}
		a, err := parseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s clusterIPs: %w", s.Namespace, s.Name, err)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// ExternalAddrs parses spec.externalIPs, in their order; one that does not parse is
// skipped (validation refuses it).
func (s *Service) ExternalAddrs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range s.Spec.ExternalIPs {
		if a, err := parseAddr(ip); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// LoadBalancerAddrs parses the IPs of status.loadBalancer.ingress, in their order; one
// that does not parse is skipped (validation refuses it), and so is a hostname entry.
func (s *Service) LoadBalancerAddrs() []netip.Addr {
	if s.Status == nil {
		return nil
	}
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := parseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (s *Service) setDefaults() {
	sp := &s.Spec
	if sp.Type == "" {
		sp.Type = ServiceTypeClusterIP
	}
	if sp.SessionAffinity == "" {
		sp.SessionAffinity = SessionAffinityNone
	}
	if sp.SessionAffinity == SessionAffinityClientIP {
		if sp.SessionAffinityConfig == nil {
			sp.SessionAffinityConfig = &SessionAffinityConfig{}
		}
		if sp.SessionAffinityConfig.ClientIP == nil {
			sp.SessionAffinityConfig.ClientIP = &ClientIPConfig{}
		}
		if sp.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			t := int32(DefaultAffinityTimeoutSeconds)
			sp.SessionAffinityConfig.ClientIP.TimeoutSeconds = &t
		}
	}
	if sp.Type != ServiceTypeExternalName {
		if sp.InternalTrafficPolicy == "" {
			sp.InternalTrafficPolicy = TrafficPolicyCluster
		}
		if (sp.Type == ServiceTypeNodePort || sp.Type == ServiceTypeLoadBalancer) && sp.ExternalTrafficPolicy == "" {
			sp.ExternalTrafficPolicy = TrafficPolicyCluster
		}
	}
	for i := range sp.Ports {
		p := &sp.Ports[i]
		if p.Protocol == "" {
			p.Protocol = PortProtocolTCP
		}
		if !p.TargetPort.IsString() && p.TargetPort.IntVal == 0 {
			p.TargetPort = IntOrString{IntVal: p.Port}
		}
	}
}

func (s *Service) validate(errs *FieldErrors) {
	sp := &s.Spec
	checkEnum(errs, "spec.type", sp.Type, ServiceTypeClusterIP, ServiceTypeNodePort, ServiceTypeLoadBalancer, ServiceTypeExternalName)
	external := sp.Type == ServiceTypeExternalName
	if external {
		checkSubdomain(errs, "spec.externalName", sp.ExternalName)
		if sp.ClusterIP != "" {
			errs.add("spec.clusterIP", sp.ClusterIP, "must be empty for type ExternalName")
		}
	} else if sp.ExternalName != "" {
		errs.add("spec.externalName", sp.ExternalName, "only valid for type ExternalName")
	}
	s.validateClusterIPs(errs)
	if len(sp.Ports) == 0 && !external && !s.IsHeadless() {
		errs.add("spec.ports", nil, "required: a Service with a cluster IP needs at least one port")
	}
	names := map[string]bool{}
	nodePorts := sp.Type == ServiceTypeNodePort || sp.Type == ServiceTypeLoadBalancer
	for i, p := range sp.Ports {
		f := index("spec.ports", i)
		if p.Name == "" && len(sp.Ports) > 1 {
			errs.add(f+".name", "", "required when a Service has more than one port")
		} else if p.Name != "" {
			checkLabel(errs, f+".name", p.Name)
			if names[p.Name] {
				errs.add(f+".name", p.Name, "%q is used by another port", p.Name)
			}
			names[p.Name] = true
		}
		checkPortProtocol(errs, f+".protocol", p.Protocol)
		checkPortNumber(errs, f+".port", p.Port)
		checkTargetPort(errs, f+".targetPort", p.TargetPort)
		switch {
		case p.NodePort == 0:
		case !nodePorts:
			errs.add(f+".nodePort", p.NodePort, "only valid for type NodePort or LoadBalancer")
		case p.NodePort < NodePortMin || p.NodePort > NodePortMax:
			errs.add(f+".nodePort", p.NodePort, "%d is out of the node port range %d-%d", p.NodePort, NodePortMin, NodePortMax)
		}
	}
	checkLabels(errs, "spec.selector", sp.Selector)
	if checkEnum(errs, "spec.sessionAffinity", sp.SessionAffinity, SessionAffinityNone, SessionAffinityClientIP) {
		if c := sp.SessionAffinityConfig; c != nil {
			if sp.SessionAffinity != SessionAffinityClientIP {
				errs.add("spec.sessionAffinityConfig", nil, "only valid with sessionAffinity ClientIP")
			} else if c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				if t := *c.ClientIP.TimeoutSeconds; t < 1 || t > maxAffinityTimeoutSeconds {
					errs.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", t, "%d is out of range 1-%d", t, maxAffinityTimeoutSeconds)
				}
			}
		}
	}
	for i, ip := range sp.ExternalIPs {
		checkAddr(errs, index("spec.externalIPs", i), ip, anyFamily)
	}
	if checkEnum(errs, "spec.externalTrafficPolicy", sp.ExternalTrafficPolicy, TrafficPolicyCluster, TrafficPolicyLocal) &&
		sp.ExternalTrafficPolicy != "" && !nodePorts && len(sp.ExternalIPs) == 0 {
		errs.add("spec.externalTrafficPolicy", string(sp.ExternalTrafficPolicy), "only valid for type NodePort or LoadBalancer, or with externalIPs")
	}
	switch hc := sp.HealthCheckNodePort; {
	case hc == 0:
	case !s.NeedsHealthCheckNodePort():
		errs.add("spec.healthCheckNodePort", hc, "only valid for type LoadBalancer with externalTrafficPolicy Local")
	case hc < NodePortMin || hc > NodePortMax:
		errs.add("spec.healthCheckNodePort", hc, "%d is out of the node port range %d-%d", hc, NodePortMin, NodePortMax)
	}
	checkEnum(errs, "spec.internalTrafficPolicy", sp.InternalTrafficPolicy, TrafficPolicyCluster, TrafficPolicyLocal)
	s.healthCheck(errs)
	checkEnum(errs, "spec.ipFamilyPolicy", sp.IPFamilyPolicy, IPFamilyPolicySingleStack, IPFamilyPolicyPreferDualStack, IPFamilyPolicyRequireDualStack)
	families := map[IPFamily]bool{}
	for i, fam := range sp.IPFamilies {
		f := index("spec.ipFamilies", i)
		if fam == "" {
			errs.add(f, "", "empty family; one of IPv4, IPv6")
		} else if checkEnum(errs, f, fam, IPv4Family, IPv6Family) && families[fam] {
			errs.add(f, string(fam), "%q is listed twice", fam)
		}
		families[fam] = true
	}
	if sp.LoadBalancerIP != "" {
		if sp.Type != ServiceTypeLoadBalancer {
			errs.add("spec.loadBalancerIP", sp.LoadBalancerIP, "only valid for type LoadBalancer")
		}
		checkAddr(errs, "spec.loadBalancerIP", sp.LoadBalancerIP, anyFamily)
	}
	if st := s.Status; st != nil {
		for i, in := range st.LoadBalancer.Ingress {
			if in.IP != "" {
				checkAddr(errs, index("status.loadBalancer.ingress", i)+".ip", in.IP, anyFamily)
			}
		}
	}
}

// validateClusterIPs checks clusterIP and clusterIPs, which Kubernetes keeps in step:
// clusterIPs[0] is clusterIP, and a second entry is of the other family.
func (s *Service) validateClusterIPs(errs *FieldErrors) {
	sp := &s.Spec
	if sp.ClusterIP != "" && sp.ClusterIP != ClusterIPNone {
		checkAddr(errs, "spec.clusterIP", sp.ClusterIP, anyFamily)
	}
	if len(sp.ClusterIPs) == 0 {
		return
	}
	if sp.ClusterIP != "" && sp.ClusterIPs[0] != sp.ClusterIP {
		errs.add("spec.clusterIPs[0]", sp.ClusterIPs[0], "must equal spec.clusterIP %q", sp.ClusterIP)
	}
	if len(sp.ClusterIPs) > 2 {
		errs.add("spec.clusterIPs", nil, "at most two addresses, one per IP family")
	}
	var addrs []netip.Addr
	for i, ip := range sp.ClusterIPs {
		f := index("spec.clusterIPs", i)
		if ip == ClusterIPNone {
			if len(sp.ClusterIPs) > 1 {
				errs.add(f, ip, "\"None\" must be the only entry")
			}
			continue
		}
		if a, ok := checkAddr(errs, f, ip, anyFamily); ok {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 2 && addrs[0].Is4() == addrs[1].Is4() {
		errs.add("spec.clusterIPs[1]", sp.ClusterIPs[1], "must be of the other IP family than clusterIPs[0]")
	}
}

func checkPortProtocol(errs *FieldErrors, field string, p PortProtocol) {
	if p == "" {
		errs.add(field, "", "required: one of TCP, UDP, SCTP")
		return
	}
	checkEnum(errs, field, p, PortProtocolTCP, PortProtocolUDP, PortProtocolSCTP)
}

// checkTargetPort checks a port number or a container port name.
func checkTargetPort(errs *FieldErrors, field string, v IntOrString) {
	if v.IsString() {
		checkPortName(errs, field, v.StrVal)
	} else {
		checkPortNumber(errs, field, v.IntVal)
	}
}

func (e *Endpoints) setDefaults() {
	for i := range e.Subsets {
		for j := range e.Subsets[i].Ports {
			if e.Subsets[i].Ports[j].Protocol == "" {
				e.Subsets[i].Ports[j].Protocol = PortProtocolTCP
			}
		}
	}
}

func (e *Endpoints) validate(errs *FieldErrors) {
	for i, ss := range e.Subsets {
		f := index("subsets", i)
		for _, list := range []struct {
			field string
			addrs []EndpointAddress
		}{{f + ".addresses", ss.Addresses}, {f + ".notReadyAddresses", ss.NotReadyAddresses}} {
			for j, a := range list.addrs {
				af := index(list.field, j)
				if checkRequired(errs, af+".ip", a.IP) {
					checkAddr(errs, af+".ip", a.IP, anyFamily)
				}
				if a.Hostname != "" {
					checkLabel(errs, af+".hostname", a.Hostname)
				}
				if a.NodeName != "" {
					checkSubdomain(errs, af+".nodeName", a.NodeName)
				}
			}
		}
		names := map[string]bool{}
		for j, p := range ss.Ports {
			pf := index(f+".ports", j)
			if p.Name == "" && len(ss.Ports) > 1 {
				errs.add(pf+".name", "", "required when a subset has more than one port")
			} else if p.Name != "" {
				checkLabel(errs, pf+".name", p.Name)
				if names[p.Name] {
					errs.add(pf+".name", p.Name, "%q is used by another port", p.Name)
				}
				names[p.Name] = true
			}
			checkPortNumber(errs, pf+".port", p.Port)
			checkPortProtocol(errs, pf+".protocol", p.Protocol)
		}
	}
}

func (p *K8sNetworkPolicy) setDefaults() {
	s := &p.Spec
	if len(s.PolicyTypes) == 0 {
		// Kubernetes' rule: Ingress always, Egress when there are egress rules.
		s.PolicyTypes = []PolicyType{PolicyTypeIngress}
		if len(s.Egress) > 0 {
			s.PolicyTypes = append(s.PolicyTypes, PolicyTypeEgress)
		}
	}
	defaultPorts := func(ports []K8sNetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				tcp := PortProtocolTCP
				ports[i].Protocol = &tcp
			}
		}
	}
	for i := range s.Ingress {
		defaultPorts(s.Ingress[i].Ports)
	}
	for i := range s.Egress {
		defaultPorts(s.Egress[i].Ports)
	}
}

func (p *K8sNetworkPolicy) validate(errs *FieldErrors) {
	s := &p.Spec
	checkLabelSelector(errs, "spec.podSelector", &s.PodSelector)
	checkPolicyTypes(errs, "spec.policyTypes", s.PolicyTypes, len(s.Ingress) > 0, len(s.Egress) > 0)
	for i, r := range s.Ingress {
		f := index("spec.ingress", i)
		checkK8sPorts(errs, f+".ports", r.Ports)
		checkK8sPeers(errs, f+".from", r.From)
	}
	for i, r := range s.Egress {
		f := index("spec.egress", i)
		checkK8sPorts(errs, f+".ports", r.Ports)
		checkK8sPeers(errs, f+".to", r.To)
	}
}

func checkK8sPorts(errs *FieldErrors, field string, ports []K8sNetworkPolicyPort) {
	for i, p := range ports {
		f := index(field, i)
		if p.Protocol != nil {
			checkPortProtocol(errs, f+".protocol", *p.Protocol)
		}
		if p.Port != nil {
			checkTargetPort(errs, f+".port", *p.Port)
		}
		if p.EndPort == nil {
			continue
		}
		switch end := *p.EndPort; {
		case p.Port == nil || p.Port.IsString():
			errs.add(f+".endPort", end, "needs a numeric port")
		case end < p.Port.IntVal:
			errs.add(f+".endPort", end, "%d is less than port %d", end, p.Port.IntVal)
		default:
			checkPortNumber(errs, f+".endPort", end)
		}
	}
}

func checkK8sPeers(errs *FieldErrors, field string, peers []K8sNetworkPolicyPeer) {
	for i, peer := range peers {
		f := index(field, i)
		if peer.PodSelector != nil {
			checkLabelSelector(errs, f+".podSelector", peer.PodSelector)
		}
		if peer.NamespaceSelector != nil {
			checkLabelSelector(errs, f+".namespaceSelector", peer.NamespaceSelector)
		}
		b := peer.IPBlock
		switch {
		case b == nil && peer.PodSelector == nil && peer.NamespaceSelector == nil:
			errs.add(f, nil, "needs one of podSelector, namespaceSelector or ipBlock")
		case b == nil:
		case peer.PodSelector != nil || peer.NamespaceSelector != nil:
			errs.add(f+".ipBlock", nil, "cannot be combined with podSelector or namespaceSelector")
		default:
			checkIPBlock(errs, f+".ipBlock", b)
		}
	}
}

func checkIPBlock(errs *FieldErrors, field string, b *IPBlock) {
	if !checkRequired(errs, field+".cidr", b.CIDR) {
		return
	}
	cidr, ok := checkNet(errs, field+".cidr", b.CIDR)
	for i, e := range b.Except {
		f := index(field+".except", i)
		ex, exOK := checkNet(errs, f, e)
		if ok && exOK && (ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr())) {
			errs.add(f, e, "%s is not strictly inside cidr %s", ex, cidr)
		}
	}
}

func checkLabelSelector(errs *FieldErrors, field string, s *LabelSelector) {
	checkLabels(errs, field+".matchLabels", s.MatchLabels)
	for i, r := range s.MatchExpressions {
		f := index(field+".matchExpressions", i)
		if checkRequired(errs, f+".key", r.Key) {
			checkQualifiedName(errs, f+".key", r.Key)
		}
		switch r.Operator {
		case LabelSelectorOpIn, LabelSelectorOpNotIn:
			if len(r.Values) == 0 {
				errs.add(f+".values", nil, "required for operator %s", r.Operator)
			}
			for j, v := range r.Values {
				checkLabelValue(errs, index(f+".values", j), v)
			}
		case LabelSelectorOpExists, LabelSelectorOpDoesNotExist:
			if len(r.Values) > 0 {
				errs.add(f+".values", r.Values, "must be empty for operator %s", r.Operator)
			}
		case "":
			errs.add(f+".operator", "", "required: one of In, NotIn, Exists, DoesNotExist")
		default:
			checkEnum(errs, f+".operator", r.Operator, LabelSelectorOpIn, LabelSelectorOpNotIn, LabelSelectorOpExists, LabelSelectorOpDoesNotExist)
		}
	}
}
