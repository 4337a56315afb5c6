package api

import (
	"regexp"
	"slices"
	"strings"
)

// NetworkPolicy is Calico's namespaced policy: rules for the endpoints its selector picks
// in its namespace.
type NetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NetworkPolicySpec `json:"spec"`
}

// NetworkPolicySpec is Calico's NetworkPolicy spec. Order nil sorts after every number.
type NetworkPolicySpec struct {
	Tier                   string       `json:"tier,omitempty"`
	Order                  *float64     `json:"order,omitempty"`
	Selector               string       `json:"selector,omitempty"`
	ServiceAccountSelector string       `json:"serviceAccountSelector,omitempty"`
	Types                  []PolicyType `json:"types,omitempty"`
	Ingress                []Rule       `json:"ingress,omitempty"`
	Egress                 []Rule       `json:"egress,omitempty"`
}

// GlobalNetworkPolicy is Calico's cluster-wide policy.
type GlobalNetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       GlobalNetworkPolicySpec `json:"spec"`
}

// GlobalNetworkPolicySpec is Calico's GlobalNetworkPolicy spec.
type GlobalNetworkPolicySpec struct {
	Tier                   string       `json:"tier,omitempty"`
	Order                  *float64     `json:"order,omitempty"`
	Selector               string       `json:"selector,omitempty"`
	NamespaceSelector      string       `json:"namespaceSelector,omitempty"`
	ServiceAccountSelector string       `json:"serviceAccountSelector,omitempty"`
	Types                  []PolicyType `json:"types,omitempty"`
	Ingress                []Rule       `json:"ingress,omitempty"`
	Egress                 []Rule       `json:"egress,omitempty"`
	DoNotTrack             bool         `json:"doNotTrack,omitempty"`
	PreDNAT                bool         `json:"preDNAT,omitempty"`
	ApplyOnForward         bool         `json:"applyOnForward,omitempty"`
}

// PolicyType is the direction of traffic a policy applies to.
type PolicyType string

// Policy types, as Calico and Kubernetes name them.
const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// DefaultTier is the tier of a policy that names none.
const DefaultTier = "default"

// Rule is one match-and-action entry of a policy or profile.
type Rule struct {
	Action      Action        `json:"action"`
	IPVersion   *int          `json:"ipVersion,omitempty"`
	Protocol    *Protocol     `json:"protocol,omitempty"`
	NotProtocol *Protocol     `json:"notProtocol,omitempty"`
	ICMP        *ICMPFields   `json:"icmp,omitempty"`
	NotICMP     *ICMPFields   `json:"notICMP,omitempty"`
	Source      EntityRule    `json:"source,omitempty"`
	Destination EntityRule    `json:"destination,omitempty"`
	Metadata    *RuleMetadata `json:"metadata,omitempty"`
}

// Action is what a rule does with matching traffic.
type Action string

// Rule actions, as Calico names them.
const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
	ActionLog   Action = "Log"
	ActionPass  Action = "Pass"
)

// ICMPFields matches an ICMP type and, optionally, code.
type ICMPFields struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

// EntityRule matches one end (source or destination) of a connection.
type EntityRule struct {
	Nets              []string             `json:"nets,omitempty"`
	NotNets           []string             `json:"notNets,omitempty"`
	Selector          string               `json:"selector,omitempty"`
	NotSelector       string               `json:"notSelector,omitempty"`
	NamespaceSelector string               `json:"namespaceSelector,omitempty"`
	Ports             []Port               `json:"ports,omitempty"`
	NotPorts          []Port               `json:"notPorts,omitempty"`
	ServiceAccounts   *ServiceAccountMatch `json:"serviceAccounts,omitempty"`
	Services          *ServiceMatch        `json:"services,omitempty"`
}

// ServiceAccountMatch matches endpoints by service account name and/or labels.
type ServiceAccountMatch struct {
	Names    []string `json:"names,omitempty"`
	Selector string   `json:"selector,omitempty"`
}

// ServiceMatch matches the endpoints of a Service (and, as a destination, its ports).
type ServiceMatch struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// RuleMetadata carries annotations on a rule.
type RuleMetadata struct {
	Annotations map[string]string `json:"annotations,omitempty"`
}

func init() {
	register(&Kind{
		Name: "NetworkPolicy", APIVersion: VersionCalico, Plural: "networkpolicies", Singular: "networkpolicy",
		Aliases: []string{"policy", "policies", "np", "pol", "pols"}, Namespaced: true,
		New: func() Resource {
			return &NetworkPolicy{TypeMeta: TypeMeta{Kind: "NetworkPolicy", APIVersion: VersionCalico}}
		},
	})
	register(&Kind{
		Name: "GlobalNetworkPolicy", APIVersion: VersionCalico, Plural: "globalnetworkpolicies", Singular: "globalnetworkpolicy",
		Aliases: []string{"gnp", "gnps"},
		New: func() Resource {
			return &GlobalNetworkPolicy{TypeMeta: TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: VersionCalico}}
		},
	})
}

// defaultPolicyTypes is Calico's rule for a policy that lists no types: Egress alone when
// it has only egress rules, both when it has both, otherwise Ingress.
func defaultPolicyTypes(ingress, egress []Rule) []PolicyType {
	switch {
	case len(egress) == 0:
		return []PolicyType{PolicyTypeIngress}
	case len(ingress) == 0:
		return []PolicyType{PolicyTypeEgress}
	}
	return []PolicyType{PolicyTypeIngress, PolicyTypeEgress}
}

func (p *NetworkPolicy) setDefaults() {
	if p.Spec.Tier == "" {
		p.Spec.Tier = DefaultTier
	}
	if len(p.Spec.Types) == 0 {
		p.Spec.Types = defaultPolicyTypes(p.Spec.Ingress, p.Spec.Egress)
	}
}

func (p *GlobalNetworkPolicy) setDefaults() {
	if p.Spec.Tier == "" {
		p.Spec.Tier = DefaultTier
	}
	if len(p.Spec.Types) == 0 {
		p.Spec.Types = defaultPolicyTypes(p.Spec.Ingress, p.Spec.Egress)
	}
}

// policyNameRE is Calico's rule for policy names: a DNS-1123 label, optionally after a
// "<tier>." prefix.
var policyNameRE = regexp.MustCompile(`^(` + labelFmt + `\.)?` + labelFmt + `$`)

func checkPolicyName(errs *FieldErrors, name string) {
	switch {
	case !checkRequired(errs, "metadata.name", name):
	case len(name) > 253:
		errs.add("metadata.name", name, "%q is longer than 253 characters", name)
	case !policyNameRE.MatchString(name):
		errs.add("metadata.name", name, "%q is not a valid policy name (a DNS-1123 label: lower case alphanumerics and '-', optionally prefixed by \"<tier>.\")", name)
	}
}

func (p *NetworkPolicy) checkName(errs *FieldErrors) {
	checkPolicyName(errs, p.Name)
	checkPolicyTier(errs, p.Name, p.Spec.Tier)
}

func (p *GlobalNetworkPolicy) checkName(errs *FieldErrors) {
	checkPolicyName(errs, p.Name)
	checkPolicyTier(errs, p.Name, p.Spec.Tier)
}

func (p *NetworkPolicy) validate(errs *FieldErrors) {
	s := &p.Spec
	validatePolicyCommon(errs, s.Tier, s.Selector, s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)
}

func (p *GlobalNetworkPolicy) validate(errs *FieldErrors) {
	s := &p.Spec
	validatePolicyCommon(errs, s.Tier, s.Selector, s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)
	checkSelector(errs, "spec.namespaceSelector", s.NamespaceSelector, false)
	if s.DoNotTrack && s.PreDNAT {
		errs.add("spec.preDNAT", true, "preDNAT and doNotTrack cannot both be true")
	}
	if s.PreDNAT && len(s.Egress) > 0 {
		errs.add("spec.egress", nil, "a preDNAT policy cannot have egress rules")
	}
	if s.PreDNAT && slices.Contains(s.Types, PolicyTypeEgress) {
		errs.add("spec.types", nil, "a preDNAT policy cannot have type Egress")
	}
	if (s.DoNotTrack || s.PreDNAT) && !s.ApplyOnForward {
		errs.add("spec.applyOnForward", false, "must be true when doNotTrack or preDNAT is")
	}
	for i, r := range s.Ingress {
		if m := r.Source.Services; m != nil && m.Namespace == "" {
			errs.add(index("spec.ingress", i)+".source.services.namespace", "", "required in a global policy")
		}
	}
	for i, r := range s.Egress {
		if m := r.Destination.Services; m != nil && m.Namespace == "" {
			errs.add(index("spec.egress", i)+".destination.services.namespace", "", "required in a global policy")
		}
	}
}

// validatePolicyCommon checks what NetworkPolicy and GlobalNetworkPolicy share.
func validatePolicyCommon(errs *FieldErrors, tier, sel, saSel string, types []PolicyType, ingress, egress []Rule) {
	if tier != "" {
		checkLabel(errs, "spec.tier", tier)
	}
	checkSelector(errs, "spec.selector", sel, false)
	checkSelector(errs, "spec.serviceAccountSelector", saSel, false)
	checkPolicyTypes(errs, "spec.types", types, len(ingress) > 0, len(egress) > 0)
	for i := range ingress {
		f := index("spec.ingress", i)
		validateRule(errs, f, &ingress[i])
		if ingress[i].Destination.Services != nil {
			errs.add(f+".destination.services", nil, "not allowed in an ingress rule's destination")
		}
	}
	for i := range egress {
		f := index("spec.egress", i)
		validateRule(errs, f, &egress[i])
		if egress[i].Source.Services != nil {
			errs.add(f+".source.services", nil, "not allowed in an egress rule's source")
		}
	}
}

// checkPolicyTypes checks a types list, Calico's or Kubernetes' policyTypes: known values,
// no repeats, and no rules that the listed types would leave unused.
func checkPolicyTypes(errs *FieldErrors, field string, types []PolicyType, hasIngress, hasEgress bool) {
	seen := map[PolicyType]bool{}
	for i, t := range types {
		f := index(field, i)
		if t == "" {
			errs.add(f, "", "empty type; one of Ingress, Egress")
		} else if checkEnum(errs, f, t, PolicyTypeIngress, PolicyTypeEgress) && seen[t] {
			errs.add(f, string(t), "%q is listed twice", t)
		}
		seen[t] = true
	}
	if len(types) == 0 {
		return
	}
	if hasIngress && !seen[PolicyTypeIngress] {
		errs.add(field, nil, "ingress rules are given but types does not include Ingress, so they would be ignored")
	}
	if hasEgress && !seen[PolicyTypeEgress] {
		errs.add(field, nil, "egress rules are given but types does not include Egress, so they would be ignored")
	}
}

// IANA numbers of the two ICMPs.
const (
	icmpV4Number = 1
	icmpV6Number = 58
)

// checkProtocol reports an empty protocol, an unknown name and protocol number 0.
func checkProtocol(errs *FieldErrors, field string, p Protocol) bool {
	n, ok := p.Number()
	switch {
	case p == "":
		errs.add(field, "", "required")
	case !ok:
		errs.add(field, string(p), "%q is not one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", string(p))
	case n == 0:
		errs.add(field, string(p), "protocol number 0 is not valid; use 1-255")
	default:
		return true
	}
	return false
}

func validateRule(errs *FieldErrors, path string, r *Rule) {
	if r.Action == "" {
		errs.add(path+".action", "", "required: one of Allow, Deny, Log, Pass")
	} else {
		checkEnum(errs, path+".action", r.Action, ActionAllow, ActionDeny, ActionLog, ActionPass)
	}
	if v := r.IPVersion; v != nil && *v != 4 && *v != 6 {
		errs.add(path+".ipVersion", *v, "%d is not 4 or 6", *v)
	}
	protoOK := r.Protocol != nil && checkProtocol(errs, path+".protocol", *r.Protocol)
	if r.NotProtocol != nil {
		checkProtocol(errs, path+".notProtocol", *r.NotProtocol)
	}
	var protoNum uint8
	if protoOK {
		protoNum, _ = r.Protocol.Number()
	}
	if v := r.IPVersion; v != nil {
		switch {
		case protoNum == icmpV4Number && *v != 4:
			errs.add(path+".ipVersion", *v, "must be 4 with protocol ICMP")
		case protoNum == icmpV6Number && *v != 6:
			errs.add(path+".ipVersion", *v, "must be 6 with protocol ICMPv6")
		}
	}
	isICMP := protoNum == icmpV4Number || protoNum == icmpV6Number
	for _, ic := range []struct {
		field  string
		fields *ICMPFields
	}{{path + ".icmp", r.ICMP}, {path + ".notICMP", r.NotICMP}} {
		if ic.fields == nil {
			continue
		}
		if protoOK && !isICMP {
			errs.add(ic.field, nil, "needs protocol ICMP or ICMPv6, not %s", *r.Protocol)
		} else if r.Protocol == nil {
			errs.add(ic.field, nil, "needs protocol ICMP or ICMPv6")
		}
		checkICMP(errs, ic.field, ic.fields)
	}

	// Ports only exist for some protocols; Calico rejects them otherwise. An invalid
	// protocol has been reported already.
	portsOK := (r.Protocol != nil && !protoOK) || (protoOK && r.Protocol.SupportsPorts())
	var seenV4, seenV6 bool
	for _, e := range []struct {
		field string
		rule  *EntityRule
	}{{path + ".source", &r.Source}, {path + ".destination", &r.Destination}} {
		v4, v6 := validateEntityRule(errs, e.field, e.rule, portsOK)
		seenV4, seenV6 = seenV4 || v4, seenV6 || v6
	}
	if seenV4 && seenV6 {
		errs.add(path, nil, "the rule mixes IPv4 and IPv6 networks; split it by ipVersion")
	}
	if v := r.IPVersion; v != nil && ((*v == 4 && seenV6) || (*v == 6 && seenV4)) {
		errs.add(path+".ipVersion", *v, "is %d but the rule's networks are of the other IP version", *v)
	}
	if r.Metadata != nil {
		checkAnnotations(errs, path+".metadata.annotations", r.Metadata.Annotations)
	}
}

func checkICMP(errs *FieldErrors, field string, f *ICMPFields) {
	if f.Type != nil && (*f.Type < 0 || *f.Type > 254) {
		errs.add(field+".type", *f.Type, "ICMP type %d is out of range 0-254", *f.Type)
	}
	if f.Code != nil {
		if f.Type == nil {
			errs.add(field+".code", *f.Code, "an ICMP code needs an ICMP type")
		}
		if *f.Code < 0 || *f.Code > 255 {
			errs.add(field+".code", *f.Code, "ICMP code %d is out of range 0-255", *f.Code)
		}
	}
}

// validateEntityRule checks one end of a rule and says which IP families its nets hold.
func validateEntityRule(errs *FieldErrors, path string, e *EntityRule, portsOK bool) (v4, v6 bool) {
	a4, a6 := checkNets(errs, path+".nets", e.Nets)
	b4, b6 := checkNets(errs, path+".notNets", e.NotNets)
	checkSelector(errs, path+".selector", e.Selector, false)
	checkSelector(errs, path+".notSelector", e.NotSelector, false)
	checkSelector(errs, path+".namespaceSelector", e.NamespaceSelector, true)
	for _, ps := range []struct {
		field string
		ports []Port
	}{{path + ".ports", e.Ports}, {path + ".notPorts", e.NotPorts}} {
		if len(ps.ports) > 0 && !portsOK {
			errs.add(ps.field, nil, "ports need protocol tcp, udp or sctp")
		}
		for i, p := range ps.ports {
			checkPort(errs, index(ps.field, i), p)
		}
	}
	if sa := e.ServiceAccounts; sa != nil {
		for i, n := range sa.Names {
			checkSubdomain(errs, index(path+".serviceAccounts.names", i), n)
		}
		checkSelector(errs, path+".serviceAccounts.selector", sa.Selector, false)
	}
	if svc := e.Services; svc != nil {
		f := path + ".services"
		checkSubdomain(errs, f+".name", svc.Name)
		if svc.Namespace != "" {
			checkLabel(errs, f+".namespace", svc.Namespace)
		}
		// A service match stands for the service's endpoints: addresses and ports both.
		if e.Selector != "" || e.NotSelector != "" || e.NamespaceSelector != "" || e.ServiceAccounts != nil ||
			len(e.Nets) > 0 || len(e.NotNets) > 0 {
			errs.add(f, nil, "cannot be combined with nets, notNets, selector, notSelector, namespaceSelector or serviceAccounts")
		}
		if strings.HasSuffix(path, ".destination") && (len(e.Ports) > 0 || len(e.NotPorts) > 0) {
			errs.add(f, nil, "cannot be combined with ports or notPorts: the service's ports apply")
		}
	}
	return a4 || b4, a6 || b6
}

// checkPort checks a policy port: a range in order within 1-65535, or a valid name.
func checkPort(errs *FieldErrors, field string, p Port) {
	switch {
	case p.PortName != "":
		checkPortName(errs, field, p.PortName)
	case p.MinPort == 0:
		errs.add(field, p.String(), "port 0 is out of range 1-65535")
	case p.MinPort > p.MaxPort:
		errs.add(field, p.String(), "port range %s is reversed (first > last)", p)
	}
}
