package policy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy/selector"
	"github.com/tabby-net/tabby/proxy"
)

// Labels every endpoint carries besides its own, as Calico gives them.
const (
	LabelNamespace    = "projectcalico.org/namespace"
	LabelOrchestrator = "projectcalico.org/orchestrator"
	// Namespaces carry their own name as a label, as Kubernetes and Calico add them.
	LabelK8sNamespaceName    = "kubernetes.io/metadata.name"
	LabelCalicoNamespaceName = "projectcalico.org/name"
)

// K8sPolicyOrder is the order Calico gives Kubernetes NetworkPolicies.
const K8sPolicyOrder = 1000

// Input is every resource the model is built from, as read from the datastore.
type Input struct {
	Endpoints             []*api.WorkloadEndpoint
	NetworkPolicies       []*api.NetworkPolicy
	GlobalNetworkPolicies []*api.GlobalNetworkPolicy
	K8sNetworkPolicies    []*api.K8sNetworkPolicy
	Profiles              []*api.Profile
	Namespaces            []*api.Namespace
	NetworkSets           []*api.NetworkSet
	GlobalNetworkSets     []*api.GlobalNetworkSet
	Tiers                 []*api.Tier
	// Services are the Services with their endpoints as the Service proxy derives them,
	// for rules' services matches. When nil, Build derives them from the resources of
	// ServiceKinds given to Add; the agent gives those it derived already.
	Services []proxy.ServiceInput
	services serviceResources
}

// Model is the policy state of a cluster, compiled: parsed selectors, resolved labels,
// policies in evaluation order. Immutable once built.
type Model struct {
	Endpoints   []*Endpoint // by key
	NetworkSets []*NetworkSet
	Policies    []*Policy // in evaluation order: tier, then order, then name
	Profiles    map[string]*Profile
	Namespaces  map[string]map[string]string // name → labels (with the name labels)
	Tiers       map[string]*Tier             // by name, those Tier resources define (see TierOf)
	Services    map[string]*Service          // by "namespace/name" (see ServiceOf)

	byAddr map[netip.Addr]*Endpoint
}

// Endpoint is a workload endpoint with its effective labels.
type Endpoint struct {
	Namespace, Name string
	Node            string
	Interface       string
	Addrs           []netip.Addr
	Labels          map[string]string // own labels over its profiles' labelsToApply, plus Calico's
	Profiles        []string
	Ports           []api.WorkloadEndpointPort
}

// Key is "namespace/name".
func (e *Endpoint) Key() string { return e.Namespace + "/" + e.Name }

// NetworkSet is a NetworkSet (Namespace set) or GlobalNetworkSet.
type NetworkSet struct {
	Namespace, Name string
	Labels          map[string]string
	Nets            []netip.Prefix
}

// PolicyKind says which resource a Policy came from.
type PolicyKind string

// Policy kinds.
const (
	KindNetworkPolicy       PolicyKind = "NetworkPolicy"
	KindGlobalNetworkPolicy PolicyKind = "GlobalNetworkPolicy"
	KindK8sNetworkPolicy    PolicyKind = "KubernetesNetworkPolicy"
)

// Policy is a compiled NetworkPolicy, GlobalNetworkPolicy or Kubernetes NetworkPolicy.
type Policy struct {
	Kind      PolicyKind
	Namespace string // "" for a global policy
	Name      string // for Kubernetes policies, Calico's "knp.default.<name>"
	Tier      string
	Order     float64 // +Inf when unset
	Selector  *selector.Selector
	// NamespaceSelector restricts a global policy to endpoints of matching namespaces; nil
	// is every namespace.
	NamespaceSelector *selector.Selector
	// ServiceAccountSelector restricts the policy to endpoints whose service account's
	// labels it matches (serviceAccountLabels); nil is every endpoint.
	ServiceAccountSelector *selector.Selector
	Ingress, Egress        bool // the policy's types
	IngressRules           []Rule
	EgressRules            []Rule
}

// Key names the policy uniquely: "namespace/name" or "name".
func (p *Policy) Key() string {
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// String is how messages name the policy: "NetworkPolicy x/allow-a".
func (p *Policy) String() string { return string(p.Kind) + " " + p.Key() }

// Profile is a compiled Profile.
type Profile struct {
	Name                      string
	IngressRules, EgressRules []Rule
	LabelsToApply             map[string]string
}

// Rule is a compiled rule.
type Rule struct {
	Origin      string // where in the resource: "ingress[0]", "ingress[1].from[0]"
	Action      api.Action
	IPVersion   int    // 0 for both
	Protocol    *uint8 // nil: any
	NotProtocol *uint8
	ICMP        *api.ICMPFields
	NotICMP     *api.ICMPFields
	Src, Dst    Entity
}

// Entity is one end of a rule.
type Entity struct {
	Nets, NotNets   []netip.Prefix
	Selector        *Scope // nil: any
	NotSelector     *Scope
	Ports, NotPorts []api.Port
	// Service is a services match: the Service's endpoints and, as a destination, their
	// ports of the Service's ports.
	Service *ServiceRef
}

// Scope is what a rule's selector matches: labelled objects (endpoints, network sets)
// in some namespaces. Two rules with equal Keys match the same objects.
type Scope struct {
	Selector *selector.Selector
	// Namespaces: when NamespaceSelector is nil, the objects of Namespace, or of every
	// namespace and the global ones when Namespace is "".
	Namespace         string
	NamespaceSelector *selector.Selector
	// Global: only non-namespaced objects (namespaceSelector global()).
	Global bool
	// EndpointsOnly leaves network sets out (Kubernetes peers select pods).
	EndpointsOnly bool
	// ServiceAccounts, when set, keeps only endpoints of those service accounts (and so
	// leaves network sets out).
	ServiceAccounts *ServiceAccountMatch
	Key             string
}

func newScope(sel, nsSel *selector.Selector, namespace string, global, endpointsOnly bool, sa *ServiceAccountMatch) *Scope {
	s := &Scope{Selector: sel, Namespace: namespace, NamespaceSelector: nsSel, Global: global,
		EndpointsOnly: endpointsOnly || sa != nil, ServiceAccounts: sa}
	var b strings.Builder
	b.WriteString(sel.String())
	switch {
	case global:
		b.WriteString(" in global()")
	case nsSel != nil:
		b.WriteString(" in namespaces " + nsSel.String())
	case namespace != "":
		b.WriteString(" in namespace " + namespace)
	}
	if s.EndpointsOnly {
		b.WriteString(" endpoints")
	}
	if sa != nil {
		b.WriteString(sa.key())
	}
	s.Key = b.String()
	return s
}

// matchesObject says whether an object (endpoint or network set) of namespace ns ("" for
// a global one) with labels is in the scope.
func (s *Scope) matchesObject(m *Model, ns string, labels map[string]string, isEndpoint bool) bool {
	if s.EndpointsOnly && !isEndpoint {
		return false
	}
	switch {
	case s.Global:
		if ns != "" {
			return false
		}
	case s.NamespaceSelector != nil:
		if ns == "" || !s.NamespaceSelector.Evaluate(m.Namespaces[ns]) {
			return false
		}
	case s.Namespace != "":
		if ns != s.Namespace {
			return false
		}
	}
	if s.ServiceAccounts != nil && !s.ServiceAccounts.matches(labels) {
		return false
	}
	return s.Selector.Evaluate(labels)
}

// MatchesEndpoint says whether endpoint e is in the scope.
func (s *Scope) MatchesEndpoint(m *Model, e *Endpoint) bool {
	return s.matchesObject(m, e.Namespace, e.Labels, true)
}

// MatchesNetworkSet says whether network set n is in the scope.
func (s *Scope) MatchesNetworkSet(m *Model, n *NetworkSet) bool {
	return s.matchesObject(m, n.Namespace, n.Labels, false)
}

// Members are the networks of the objects in the scope, sorted: every address of a
// matching endpoint (as a /32 or /128) and every net of a matching network set.
func (s *Scope) Members(m *Model) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range m.Endpoints {
		if s.MatchesEndpoint(m, e) {
			for _, a := range e.Addrs {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	for _, n := range m.NetworkSets {
		if s.MatchesNetworkSet(m, n) {
			out = append(out, n.Nets...)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// EndpointByAddr finds the endpoint holding an address.
func (m *Model) EndpointByAddr(a netip.Addr) *Endpoint { return m.byAddr[a.Unmap()] }

// EndpointByKey finds an endpoint by "namespace/name".
func (m *Model) EndpointByKey(key string) *Endpoint {
	i, ok := slices.BinarySearchFunc(m.Endpoints, key, func(e *Endpoint, k string) int { return strings.Compare(e.Key(), k) })
	if !ok {
		return nil
	}
	return m.Endpoints[i]
}

// Applies says whether policy p selects endpoint e (in either direction).
func (p *Policy) Applies(m *Model, e *Endpoint) bool {
	if p.ServiceAccountSelector != nil && !p.ServiceAccountSelector.EvaluateLabels(serviceAccountLabels(e.Labels)) {
		return false
	}
	if p.Namespace != "" && p.Namespace != e.Namespace {
		return false
	}
	if p.NamespaceSelector != nil && !p.NamespaceSelector.Evaluate(m.Namespaces[e.Namespace]) {
		return false
	}
	return p.Selector.Evaluate(e.Labels)
}

// PoliciesFor lists the policies that apply to e in one direction, in evaluation order.
func (m *Model) PoliciesFor(e *Endpoint, ingress bool) []*Policy {
	var out []*Policy
	for _, p := range m.Policies {
		if (ingress && !p.Ingress) || (!ingress && !p.Egress) {
			continue
		}
		if p.Applies(m, e) {
			out = append(out, p)
		}
	}
	return out
}

// Build compiles the input into a Model. Resources that cannot be compiled (they were
// validated when written, so this is rare) are left out and reported in the error, which
// joins one error per resource; the model is usable either way.
func Build(in Input) (*Model, error) {
	m := &Model{
		Profiles:   map[string]*Profile{},
		Namespaces: map[string]map[string]string{},
		Tiers:      map[string]*Tier{},
		Services:   map[string]*Service{},
		byAddr:     map[netip.Addr]*Endpoint{},
	}
	var errs []error
	for _, t := range in.Tiers {
		m.Tiers[t.Name] = compileTier(t)
	}
	services := in.Services
	if services == nil {
		services = in.services.derive(in.Endpoints)
	}
	for _, s := range services {
		m.Services[s.Service.Namespace+"/"+s.Service.Name] = compileService(s)
	}
	for _, ns := range in.Namespaces {
		l := maps.Clone(ns.Labels)
		if l == nil {
			l = map[string]string{}
		}
		l[LabelK8sNamespaceName] = ns.Name
		l[LabelCalicoNamespaceName] = ns.Name
		m.Namespaces[ns.Name] = l
	}
	nsLabels := func(ns string) {
		if _, ok := m.Namespaces[ns]; !ok {
			// A namespace with no Namespace resource still has its name labels.
			m.Namespaces[ns] = map[string]string{LabelK8sNamespaceName: ns, LabelCalicoNamespaceName: ns}
		}
	}
	for _, p := range in.Profiles {
		pr, err := compileProfile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("profile %s: %w", p.Name, err))
			continue
		}
		m.Profiles[p.Name] = pr
	}
	for _, w := range in.Endpoints {
		addrs, err := w.Spec.Addrs()
		if err != nil {
			errs = append(errs, fmt.Errorf("workload endpoint %s/%s: %w", w.Namespace, w.Name, err))
			continue
		}
		nsLabels(w.Namespace)
		labels := map[string]string{}
		for _, name := range w.Spec.Profiles {
			if pr := m.Profiles[name]; pr != nil {
				for k, v := range pr.LabelsToApply {
					if _, ok := labels[k]; !ok {
						labels[k] = v
					}
				}
			}
		}
		maps.Copy(labels, w.Labels)
		if _, ok := labels[LabelServiceAccount]; !ok && w.Spec.ServiceAccountName != "" {
			labels[LabelServiceAccount] = w.Spec.ServiceAccountName
		}
		labels[LabelNamespace] = w.Namespace
		if w.Spec.Orchestrator != "" {
			labels[LabelOrchestrator] = w.Spec.Orchestrator
		}
		e := &Endpoint{
			Namespace: w.Namespace, Name: w.Name, Node: w.Spec.Node, Interface: w.Spec.InterfaceName,
			Addrs: addrs, Labels: labels, Profiles: w.Spec.Profiles, Ports: w.Spec.Ports,
		}
		m.Endpoints = append(m.Endpoints, e)
	}
	slices.SortFunc(m.Endpoints, func(a, b *Endpoint) int { return strings.Compare(a.Key(), b.Key()) })
	for _, e := range m.Endpoints {
		for _, a := range e.Addrs {
			m.byAddr[a] = e
		}
	}
	addSet := func(ns, name string, labels map[string]string, spec *api.NetworkSetSpec) {
		nets, err := spec.Prefixes()
		if err != nil {
			errs = append(errs, fmt.Errorf("network set %s: %w", strings.TrimPrefix(ns+"/"+name, "/"), err))
			return
		}
		l := maps.Clone(labels)
		if ns != "" {
			if l == nil {
				l = map[string]string{}
			}
			l[LabelNamespace] = ns
			nsLabels(ns)
		}
		m.NetworkSets = append(m.NetworkSets, &NetworkSet{Namespace: ns, Name: name, Labels: l, Nets: nets})
	}
	for _, s := range in.GlobalNetworkSets {
		addSet("", s.Name, s.Labels, &s.Spec)
	}
	for _, s := range in.NetworkSets {
		addSet(s.Namespace, s.Name, s.Labels, &s.Spec)
	}
	for _, p := range in.NetworkPolicies {
		cp, err := compileNetworkPolicy(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("NetworkPolicy %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		m.Policies = append(m.Policies, cp)
	}
	for _, p := range in.GlobalNetworkPolicies {
		cp, err := compileGlobalNetworkPolicy(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("GlobalNetworkPolicy %s: %w", p.Name, err))
			continue
		}
		m.Policies = append(m.Policies, cp)
	}
	for _, p := range in.K8sNetworkPolicies {
		cp, err := TranslateK8s(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("Kubernetes NetworkPolicy %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		m.Policies = append(m.Policies, cp)
	}
	slices.SortStableFunc(m.Policies, m.comparePolicies)
	return m, errors.Join(errs...)
}

// comparePolicies is Calico's evaluation order: tiers (compareTiers), then order (lower
// first, unset last), then name; a namespaced policy's name is "namespace/name" here.
func (m *Model) comparePolicies(a, b *Policy) int {
	if c := m.compareTiers(a.Tier, b.Tier); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Order, b.Order); c != 0 {
		return c
	}
	return strings.Compare(a.Key(), b.Key())
}

func orderOf(o *float64) float64 {
	if o == nil {
		return math.Inf(1)
	}
	return *o
}

func parseSel(field, s string) (*selector.Selector, error) {
	sel, err := selector.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return sel, nil
}

// parseOptionalSel parses a selector that may be empty (nil).
func parseOptionalSel(field, s string) (*selector.Selector, error) {
	if s == "" {
		return nil, nil
	}
	return parseSel(field, s)
}

func hasType(types []api.PolicyType, t api.PolicyType) bool { return slices.Contains(types, t) }

func tierOf(t string) string {
	if t == "" {
		return api.DefaultTier
	}
	return t
}

func compileNetworkPolicy(p *api.NetworkPolicy) (*Policy, error) {
	s := &p.Spec
	sel, err := parseSel("spec.selector", s.Selector)
	if err != nil {
		return nil, err
	}
	types := s.Types
	if len(types) == 0 {
		types = defaultTypes(len(s.Ingress) > 0, len(s.Egress) > 0)
	}
	cp := &Policy{
		Kind: KindNetworkPolicy, Namespace: p.Namespace, Name: p.Name, Tier: tierOf(s.Tier),
		Order: orderOf(s.Order), Selector: sel,
		Ingress: hasType(types, api.PolicyTypeIngress), Egress: hasType(types, api.PolicyTypeEgress),
	}
	if cp.ServiceAccountSelector, err = parseOptionalSel("spec.serviceAccountSelector", s.ServiceAccountSelector); err != nil {
		return nil, err
	}
	if cp.IngressRules, err = compileRules("spec.ingress", s.Ingress, p.Namespace); err != nil {
		return nil, err
	}
	if cp.EgressRules, err = compileRules("spec.egress", s.Egress, p.Namespace); err != nil {
		return nil, err
	}
	return cp, nil
}

func compileGlobalNetworkPolicy(p *api.GlobalNetworkPolicy) (*Policy, error) {
	s := &p.Spec
	if s.DoNotTrack || s.PreDNAT {
		return nil, errors.New("doNotTrack and preDNAT policies apply to host endpoints, which tabby does not have")
	}
	sel, err := parseSel("spec.selector", s.Selector)
	if err != nil {
		return nil, err
	}
	var nsSel *selector.Selector
	if s.NamespaceSelector != "" {
		if nsSel, err = parseSel("spec.namespaceSelector", s.NamespaceSelector); err != nil {
			return nil, err
		}
	}
	types := s.Types
	if len(types) == 0 {
		types = defaultTypes(len(s.Ingress) > 0, len(s.Egress) > 0)
	}
	cp := &Policy{
		Kind: KindGlobalNetworkPolicy, Name: p.Name, Tier: tierOf(s.Tier), Order: orderOf(s.Order),
		Selector: sel, NamespaceSelector: nsSel,
		Ingress: hasType(types, api.PolicyTypeIngress), Egress: hasType(types, api.PolicyTypeEgress),
	}
	if cp.ServiceAccountSelector, err = parseOptionalSel("spec.serviceAccountSelector", s.ServiceAccountSelector); err != nil {
		return nil, err
	}
	if cp.IngressRules, err = compileRules("spec.ingress", s.Ingress, ""); err != nil {
		return nil, err
	}
	if cp.EgressRules, err = compileRules("spec.egress", s.Egress, ""); err != nil {
		return nil, err
	}
	return cp, nil
}

func defaultTypes(ingress, egress bool) []api.PolicyType {
	switch {
	case !egress:
		return []api.PolicyType{api.PolicyTypeIngress}
	case !ingress:
		return []api.PolicyType{api.PolicyTypeEgress}
	}
	return []api.PolicyType{api.PolicyTypeIngress, api.PolicyTypeEgress}
}

func compileProfile(p *api.Profile) (*Profile, error) {
	pr := &Profile{Name: p.Name, LabelsToApply: p.Spec.LabelsToApply}
	var err error
	// Profile rules are global in scope, as in Calico.
	if pr.IngressRules, err = compileRules("spec.ingress", p.Spec.Ingress, ""); err != nil {
		return nil, err
	}
	if pr.EgressRules, err = compileRules("spec.egress", p.Spec.Egress, ""); err != nil {
		return nil, err
	}
	return pr, nil
}

func compileRules(field string, rules []api.Rule, namespace string) ([]Rule, error) {
	out := make([]Rule, 0, len(rules))
	for i := range rules {
		f := fmt.Sprintf("%s[%d]", field, i)
		r, err := compileRule(f, &rules[i], namespace)
		if err != nil {
			return nil, err
		}
		r.Origin = strings.TrimPrefix(f, "spec.")
		out = append(out, r)
	}
	return out, nil
}

func protoNumber(field string, p *api.Protocol) (*uint8, error) {
	if p == nil {
		return nil, nil
	}
	n, ok := p.Number()
	if !ok {
		return nil, fmt.Errorf("%s: unknown protocol %q", field, string(*p))
	}
	return &n, nil
}

func compileRule(field string, r *api.Rule, namespace string) (Rule, error) {
	out := Rule{Action: r.Action, ICMP: r.ICMP, NotICMP: r.NotICMP}
	if r.IPVersion != nil {
		out.IPVersion = *r.IPVersion
	}
	var err error
	if out.Protocol, err = protoNumber(field+".protocol", r.Protocol); err != nil {
		return out, err
	}
	if out.NotProtocol, err = protoNumber(field+".notProtocol", r.NotProtocol); err != nil {
		return out, err
	}
	if out.Src, err = compileEntity(field+".source", &r.Source, namespace); err != nil {
		return out, err
	}
	if out.Dst, err = compileEntity(field+".destination", &r.Destination, namespace); err != nil {
		return out, err
	}
	return out, nil
}

func compileEntity(field string, e *api.EntityRule, namespace string) (Entity, error) {
	var out Entity
	var err error
	if out.Nets, err = api.ParseNets(e.Nets); err != nil {
		return out, fmt.Errorf("%s.nets: %w", field, err)
	}
	if out.NotNets, err = api.ParseNets(e.NotNets); err != nil {
		return out, fmt.Errorf("%s.notNets: %w", field, err)
	}
	out.Ports, out.NotPorts = e.Ports, e.NotPorts
	if svc := e.Services; svc != nil {
		ns := svc.Namespace
		if ns == "" {
			ns = namespace
		}
		out.Service = &ServiceRef{Namespace: ns, Name: svc.Name}
	}
	var sa *ServiceAccountMatch
	if e.ServiceAccounts != nil {
		saSel, err := parseOptionalSel(field+".serviceAccounts.selector", e.ServiceAccounts.Selector)
		if err != nil {
			return out, err
		}
		sa = newServiceAccountMatch(e.ServiceAccounts.Names, saSel)
	}
	var nsSel *selector.Selector
	global := false
	if e.NamespaceSelector != "" {
		if nsSel, err = parseSel(field+".namespaceSelector", e.NamespaceSelector); err != nil {
			return out, err
		}
		global = strings.TrimSpace(e.NamespaceSelector) == "global()"
	}
	// serviceAccounts restrict the selector, not the notSelector.
	scope := func(s string, sa *ServiceAccountMatch) (*Scope, error) {
		sel, err := parseSel(field, s)
		if err != nil {
			return nil, err
		}
		if global {
			return newScope(sel, nil, "", true, false, sa), nil
		}
		return newScope(sel, nsSel, namespace, false, false, sa), nil
	}
	switch {
	case e.Selector != "":
		if out.Selector, err = scope(e.Selector, sa); err != nil {
			return out, err
		}
	case e.NamespaceSelector != "" || sa != nil:
		// A namespaceSelector or serviceAccounts alone matches everything in those
		// namespaces (of those service accounts).
		if out.Selector, err = scope("all()", sa); err != nil {
			return out, err
		}
	}
	if e.NotSelector != "" {
		if out.NotSelector, err = scope(e.NotSelector, nil); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Add puts a resource into the input by its kind; other kinds are ignored, and Add says
// whether it took r.
func (in *Input) Add(r api.Resource) bool {
	switch r := r.(type) {
	case *api.WorkloadEndpoint:
		in.Endpoints = append(in.Endpoints, r)
	case *api.NetworkPolicy:
		in.NetworkPolicies = append(in.NetworkPolicies, r)
	case *api.GlobalNetworkPolicy:
		in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, r)
	case *api.K8sNetworkPolicy:
		in.K8sNetworkPolicies = append(in.K8sNetworkPolicies, r)
	case *api.Profile:
		in.Profiles = append(in.Profiles, r)
	case *api.Namespace:
		in.Namespaces = append(in.Namespaces, r)
	case *api.NetworkSet:
		in.NetworkSets = append(in.NetworkSets, r)
	case *api.GlobalNetworkSet:
		in.GlobalNetworkSets = append(in.GlobalNetworkSets, r)
	case *api.Tier:
		in.Tiers = append(in.Tiers, r)
	case *api.Service, *api.Endpoints, *api.EndpointSlice:
		in.services.add(r)
	default:
		return false
	}
	return true
}

// InputKinds are the plural names of the kinds Build reads, besides ServiceKinds.
var InputKinds = []string{
	"workloadendpoints", "networkpolicies", "globalnetworkpolicies", "k8snetworkpolicies",
	"profiles", "namespaces", "networksets", "globalnetworksets", "tiers",
}
