package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// HostEndpoint is a host interface (or every one, Interface "*"; or, Interface "", each
// one that holds one of Addrs) with its effective labels: its own over its profiles'
// labelsToApply.
type HostEndpoint struct {
	Name      string
	Node      string
	Interface string
	Addrs     []netip.Addr // expectedIPs: what rule selectors matching it match
	Labels    map[string]string
	Profiles  []string
}

// AllInterfaces says whether the endpoint covers every interface of its host but
// workloads' (interfaceName "*").
func (h *HostEndpoint) AllInterfaces() bool { return h.Interface == api.AllInterfaces }

// Stage is where a host endpoint's policy acts, as in Calico: untracked (doNotTrack, raw
// table, before connection tracking), preDNAT (mangle PREROUTING, ingress only), normal
// (filter INPUT and OUTPUT: traffic to and from the host itself) and forward (normal
// policies with applyOnForward, filter FORWARD: traffic routed through the interface).
type Stage int

// Stages, in the order a packet meets them.
const (
	StageUntracked Stage = iota
	StagePreDNAT
	StageNormal
	StageForward
)

func (s Stage) String() string {
	return [...]string{"untracked", "preDNAT", "normal", "forward"}[s]
}

// AppliesToHost says whether policy p selects host endpoint h (in either direction) at
// stage s. Only global policies without a namespaceSelector (or serviceAccountSelector: a
// host endpoint has no service account) select host endpoints; only
// they may be doNotTrack or preDNAT, which select nothing else.
func (p *Policy) AppliesToHost(h *HostEndpoint, s Stage) bool {
	if p.ServiceAccountSelector != nil || p.Kind != KindGlobalNetworkPolicy || p.NamespaceSelector != nil {
		return false
	}
	switch s {
	case StageUntracked:
		if !p.DoNotTrack {
			return false
		}
	case StagePreDNAT:
		if !p.PreDNAT {
			return false
		}
	case StageNormal, StageForward:
		if p.DoNotTrack || p.PreDNAT || s == StageForward && !p.ApplyOnForward {
			return false
		}
	}
	return p.Selector.Evaluate(h.Labels)
}

// HostPoliciesFor lists the policies that apply to h at stage s in one direction, in
// evaluation order.
func (m *Model) HostPoliciesFor(h *HostEndpoint, s Stage, ingress bool) []*Policy {
	var out []*Policy
	for _, p := range m.Policies {
		if (ingress && !p.Ingress) || (!ingress && !p.Egress) {
			continue
		}
		if p.AppliesToHost(h, s) {
			out = append(out, p)
		}
	}
	return out
}

// HostEndpointsOf lists node's host endpoints that felix enforces, given the node's
// interfaces (not workloads' nor lo) with their addresses: one per interface, as Calico
// resolves them. An endpoint naming an interface takes it, present or not; one without
// interfaceName takes each interface that holds one of its expectedIPs, as a copy with
// Interface set to it; of several for one interface, the first by name wins. The first
// "*" one comes last, for the interfaces no other took.
func (m *Model) HostEndpointsOf(node string, ifaces map[string][]netip.Addr) []*HostEndpoint {
	var out []*HostEndpoint
	var all *HostEndpoint
	taken := map[string]bool{}
	names := slices.Sorted(maps.Keys(ifaces))
	for _, h := range m.HostEndpoints { // by name
		switch {
		case h.Node != node:
		case h.AllInterfaces():
			if all == nil {
				all = h
			}
		case h.Interface != "":
			if !taken[h.Interface] {
				taken[h.Interface] = true
				out = append(out, h)
			}
		default:
			for _, name := range names {
				if taken[name] || !slices.ContainsFunc(ifaces[name], func(a netip.Addr) bool { return slices.Contains(h.Addrs, a.Unmap()) }) {
					continue
				}
				taken[name] = true
				c := *h
				c.Interface = name
				out = append(out, &c)
			}
		}
	}
	if all != nil {
		out = append(out, all)
	}
	return out
}

// FindsInterfaceByAddr says whether node has a host endpoint without interfaceName,
// which HostEndpointsOf resolves by the node's interfaces' addresses.
func (m *Model) FindsInterfaceByAddr(node string) bool {
	return slices.ContainsFunc(m.HostEndpoints, func(h *HostEndpoint) bool { return h.Node == node && h.Interface == "" })
}

// HostEndpointByAddr finds the host endpoint whose expectedIPs hold a: one naming an
// interface before a "*" one.
func (m *Model) HostEndpointByAddr(a netip.Addr) *HostEndpoint {
	a = a.Unmap()
	var all *HostEndpoint
	for _, h := range m.HostEndpoints {
		if !slices.Contains(h.Addrs, a) {
			continue
		}
		if !h.AllInterfaces() {
			return h
		}
		if all == nil {
			all = h
		}
	}
	return all
}

// MatchesHostEndpoint says whether host endpoint h is in the scope: it is a global object,
// and not a pod (Kubernetes peers do not select it).
func (s *Scope) MatchesHostEndpoint(m *Model, h *HostEndpoint) bool {
	return s.matchesObject(m, "", h.Labels, false)
}

// DefaultAllowProfile is Calico's built-in profile that allows everything both ways,
// which automatic host endpoints carry; a Profile of that name replaces it.
const DefaultAllowProfile = "projectcalico-default-allow"

func buildHostEndpoints(m *Model, heps []*api.HostEndpoint) []error {
	if m.Profiles[DefaultAllowProfile] == nil {
		allow := func(origin string) []Rule { return []Rule{{Origin: origin, Action: api.ActionAllow}} }
		m.Profiles[DefaultAllowProfile] = &Profile{Name: DefaultAllowProfile, IngressRules: allow("ingress[0]"), EgressRules: allow("egress[0]")}
	}
	var errs []error
	for _, h := range heps {
		addrs, err := h.Spec.Addrs()
		if err != nil {
			errs = append(errs, fmt.Errorf("host endpoint %s: %w", h.Name, err))
			continue
		}
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		labels := m.profileLabels(h.Spec.Profiles)
		maps.Copy(labels, h.Labels)
		m.HostEndpoints = append(m.HostEndpoints, &HostEndpoint{
			Name: h.Name, Node: h.Spec.Node, Interface: h.Spec.InterfaceName, Addrs: addrs,
			Labels: labels, Profiles: h.Spec.Profiles,
		})
	}
	slices.SortFunc(m.HostEndpoints, func(a, b *HostEndpoint) int { return strings.Compare(a.Name, b.Name) })
	return errs
}

// evaluateHosts adds to v the decisions of the host endpoints holding p's addresses:
// the source host's egress and the destination host's ingress, each skipped when the
// other side is a workload of that same host (a workload and its own host do not meet
// host endpoint policy).
func (m *Model) evaluateHosts(v *Verdict, p Packet) {
	srcWL, dstWL := m.EndpointByAddr(p.Src), m.EndpointByAddr(p.Dst)
	if h := m.HostEndpointByAddr(p.Src); h != nil && srcWL == nil && (dstWL == nil || dstWL.Node != h.Node) {
		v.HostEgress = m.DecideHost(h, p, false)
		v.Allowed = v.Allowed && v.HostEgress.Allowed
	}
	if h := m.HostEndpointByAddr(p.Dst); h != nil && dstWL == nil && (srcWL == nil || srcWL.Node != h.Node) {
		v.HostIngress = m.DecideHost(h, p, true)
		v.Allowed = v.Allowed && v.HostIngress.Allowed
	}
}

// DecideHost evaluates host endpoint h's policy for a packet to (ingress) or from the
// host itself, as Calico does: untracked policies first, then (ingress) preDNAT ones,
// each deciding only when a rule allows or denies (an allow skips the later stages);
// then the normal policies, tier by tier with the end-of-tier deny, then h's profiles;
// and what none of them allowed is denied (a host endpoint's default). Failsafe ports,
// which felix accepts before any of this, are not part of the model.
func (m *Model) DecideHost(h *HostEndpoint, p Packet, ingress bool) *Decision {
	d := &Decision{Endpoint: h.Name, Host: true, Ingress: ingress, Rule: -1}
	stages := []Stage{StageUntracked, StagePreDNAT}
	if !ingress {
		stages = stages[:1]
	}
	for _, s := range stages {
		if m.decideTiers(d, m.HostPoliciesFor(h, s, ingress), p, ingress, false) {
			d.Reason = s.String() + " " + d.Reason
			return d
		}
	}
	pols := m.HostPoliciesFor(h, StageNormal, ingress)
	if m.decideTiers(d, pols, p, ingress, true) {
		return d
	}
	m.decideProfiles(d, h.Profiles, p, ingress, len(pols) > 0)
	if d.Allowed && d.Profile == "" {
		d.Allowed = false
		d.Reason = strings.TrimSuffix(d.Reason, "allowed by default") + "denied (a host endpoint's default)"
	}
	return d
}
