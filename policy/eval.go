package policy

import (
	"fmt"
	"net/netip"

	"github.com/tabby-net/tabby/api"
)

// IANA protocol numbers the evaluator needs.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

// Packet is the first packet of a flow, as policy sees it.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16 // TCP, UDP, SCTP
	ICMPType         int    // ICMP, ICMPv6
	ICMPCode         int
}

func (p Packet) hasPorts() bool {
	return p.Protocol == ProtoTCP || p.Protocol == ProtoUDP || p.Protocol == ProtoSCTP
}

func (p Packet) isICMP() bool { return p.Protocol == ProtoICMP || p.Protocol == ProtoICMPv6 }

// Verdict is the decision on a flow: the source endpoint's egress and the destination
// endpoint's ingress must both allow it. A side with no endpoint (an address outside the
// cluster's workloads) has no Decision and does not restrict the flow.
type Verdict struct {
	Allowed bool
	Egress  *Decision // nil when the source is not a workload endpoint
	Ingress *Decision // nil when the destination is not a workload endpoint
}

// Decision is how one endpoint's policy decided in one direction.
type Decision struct {
	Endpoint string // "namespace/name"
	Ingress  bool
	Allowed  bool
	// Policy decided (with Rule, its index in the policy's compiled rules, and Origin),
	// or, with Rule -1, ended its tier without a rule matching (the tier's defaultAction
	// Deny). Empty when a profile or the default decided.
	Policy *Policy
	// Tier is the tier of Policy: the one that decided ("" when a profile or the default
	// did).
	Tier    string
	Profile string
	Rule    int
	Origin  string
	Reason  string
	Logged  []string // rules with action Log that matched on the way, "policy rule"
}

func (d *Decision) String() string {
	dir := "egress"
	if d.Ingress {
		dir = "ingress"
	}
	verdict := "denied"
	if d.Allowed {
		verdict = "allowed"
	}
	return fmt.Sprintf("%s of %s: %s: %s", dir, d.Endpoint, verdict, d.Reason)
}

// Evaluate decides a flow from the model alone: the oracle that the dataplane must agree
// with. Calico's semantics: the tiers' policies that apply to an endpoint in a direction
// are evaluated in order, tier by tier (Tier order); a rule's Allow or Deny ends
// evaluation, Log records and goes on, Pass skips the rest of the tier; a tier with
// applying policies where no rule decided or passed ends in its defaultAction: Deny, or
// Pass to the next tier. With no applying policy, or every tier passed, the
// endpoint's profiles decide: their rules in order, deny when profiles with rules in
// that direction exist but none matched, allow when there are none.
func (m *Model) Evaluate(p Packet) Verdict {
	v := Verdict{Allowed: true}
	if src := m.EndpointByAddr(p.Src); src != nil {
		v.Egress = m.decide(src, p, false)
		v.Allowed = v.Allowed && v.Egress.Allowed
	}
	if dst := m.EndpointByAddr(p.Dst); dst != nil {
		v.Ingress = m.decide(dst, p, true)
		v.Allowed = v.Allowed && v.Ingress.Allowed
	}
	return v
}

// Decide evaluates one endpoint's policy in one direction.
func (m *Model) Decide(e *Endpoint, p Packet, ingress bool) *Decision {
	return m.decide(e, p, ingress)
}

func (m *Model) decide(e *Endpoint, p Packet, ingress bool) *Decision {
	d := &Decision{Endpoint: e.Key(), Ingress: ingress, Rule: -1}
	pols := m.PoliciesFor(e, ingress)
	for i := 0; i < len(pols); {
		tier := pols[i].Tier
		j := i
		for j < len(pols) && pols[j].Tier == tier {
			j++
		}
		passed := false
	tierLoop:
		for _, pol := range pols[i:j] {
			rules := pol.EgressRules
			if ingress {
				rules = pol.IngressRules
			}
			for ri := range rules {
				r := &rules[ri]
				if !m.ruleMatches(r, p) {
					continue
				}
				switch r.Action {
				case api.ActionLog:
					d.Logged = append(d.Logged, fmt.Sprintf("%s %s", pol, r.Origin))
				case api.ActionAllow, api.ActionDeny:
					d.Allowed = r.Action == api.ActionAllow
					d.Policy, d.Tier, d.Rule, d.Origin = pol, tier, ri, r.Origin
					d.Reason = fmt.Sprintf("tier %s: %s %s (%s)", tier, pol, r.Origin, r.Action)
					return d
				case api.ActionPass:
					passed = true
					d.Logged = append(d.Logged, fmt.Sprintf("%s %s passed", pol, r.Origin))
					break tierLoop
				}
			}
		}
		if !passed && m.TierOf(tier).Pass() {
			d.Logged = append(d.Logged, fmt.Sprintf("tier %s: no rule decided; its defaultAction Pass passed", tier))
		} else if !passed {
			last := pols[j-1]
			d.Policy, d.Tier = last, tier
			d.Reason = fmt.Sprintf("tier %s: no rule allowed it (default deny: the tier applies and its defaultAction is Deny; last policy: %s)", tier, last)
			return d
		}
		i = j
	}
	return m.decideProfiles(d, e, p, ingress, len(pols) > 0)
}

func (m *Model) decideProfiles(d *Decision, e *Endpoint, p Packet, ingress, passed bool) *Decision {
	withRules := 0
	for _, name := range e.Profiles {
		pr := m.Profiles[name]
		if pr == nil {
			continue
		}
		rules := pr.EgressRules
		if ingress {
			rules = pr.IngressRules
		}
		if len(rules) > 0 {
			withRules++
		}
		for ri := range rules {
			r := &rules[ri]
			if !m.ruleMatches(r, p) {
				continue
			}
			switch r.Action {
			case api.ActionLog:
				d.Logged = append(d.Logged, fmt.Sprintf("Profile %s %s", name, r.Origin))
				continue
			case api.ActionAllow, api.ActionDeny:
				d.Allowed = r.Action == api.ActionAllow
				d.Profile, d.Rule, d.Origin = name, ri, r.Origin
				d.Reason = fmt.Sprintf("Profile %s %s (%s)", name, r.Origin, r.Action)
				return d
			}
			break // Pass: on to the next profile
		}
	}
	why := "no policy applies"
	if passed {
		why = "every tier passed"
	}
	if withRules > 0 {
		d.Reason = why + "; no profile rule matched: denied"
		return d
	}
	d.Allowed = true
	d.Reason = why + "; no profile rules: allowed by default"
	return d
}

// ruleMatches says whether a rule matches a packet.
func (m *Model) ruleMatches(r *Rule, p Packet) bool {
	if r.IPVersion == 4 && !p.Src.Is4() || r.IPVersion == 6 && p.Src.Is4() {
		return false
	}
	if r.Protocol != nil && *r.Protocol != p.Protocol {
		return false
	}
	if r.NotProtocol != nil && *r.NotProtocol == p.Protocol {
		return false
	}
	if r.ICMP != nil && !(p.isICMP() && icmpMatches(r.ICMP, p)) {
		return false
	}
	if r.NotICMP != nil && p.isICMP() && icmpMatches(r.NotICMP, p) {
		return false
	}
	return m.entityMatches(&r.Src, p, p.Src, p.SrcPort, false) && m.entityMatches(&r.Dst, p, p.Dst, p.DstPort, true)
}

func icmpMatches(f *api.ICMPFields, p Packet) bool {
	if f.Type != nil && *f.Type != p.ICMPType {
		return false
	}
	if f.Code != nil && *f.Code != p.ICMPCode {
		return false
	}
	return true
}

func (m *Model) entityMatches(e *Entity, p Packet, addr netip.Addr, port uint16, dst bool) bool {
	if e.Service != nil && !m.serviceHas(*e.Service, addr, p.Protocol, port, dst) {
		return false
	}
	if len(e.Nets) > 0 && !prefixesContain(e.Nets, addr) {
		return false
	}
	if prefixesContain(e.NotNets, addr) {
		return false
	}
	if e.Selector != nil && !m.scopeHasAddr(e.Selector, addr) {
		return false
	}
	if e.NotSelector != nil && m.scopeHasAddr(e.NotSelector, addr) {
		return false
	}
	if len(e.Ports) > 0 && !(p.hasPorts() && m.portsMatch(e, e.Ports, p, addr, port)) {
		return false
	}
	if len(e.NotPorts) > 0 && p.hasPorts() && m.portsMatch(e, e.NotPorts, p, addr, port) {
		return false
	}
	return true
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// scopeHasAddr says whether an address belongs to an object in the scope: the endpoint
// holding it, or a network set with a net containing it.
func (m *Model) scopeHasAddr(s *Scope, a netip.Addr) bool {
	if e := m.EndpointByAddr(a); e != nil && s.MatchesEndpoint(m, e) {
		return true
	}
	for _, n := range m.NetworkSets {
		if prefixesContain(n.Nets, a) && s.MatchesNetworkSet(m, n) {
			return true
		}
	}
	return false
}

// portsMatch: a number or range contains the port, or a named port of the endpoint at
// addr (which the entity's selector, if any, also matches) has that name, the packet's
// protocol and the port.
func (m *Model) portsMatch(e *Entity, ports []api.Port, p Packet, addr netip.Addr, port uint16) bool {
	for _, pp := range ports {
		if pp.PortName == "" {
			if pp.MinPort <= port && port <= pp.MaxPort {
				return true
			}
			continue
		}
		ep := m.EndpointByAddr(addr)
		if ep == nil {
			continue
		}
		for _, np := range ep.Ports {
			n, _ := np.Protocol.Number()
			if np.Name == pp.PortName && n == p.Protocol && np.Port == port {
				return true
			}
		}
	}
	return false
}

// NamedPortMembers lists "addr,proto:port" of every endpoint in scope (every endpoint
// when scope is nil) with a port of that name and protocol: the members of a named port's
// ipset.
func (m *Model) NamedPortMembers(scope *Scope, name string, proto uint8) []NamedPortMember {
	var out []NamedPortMember
	for _, e := range m.Endpoints {
		if scope != nil && !scope.MatchesEndpoint(m, e) {
			continue
		}
		for _, np := range e.Ports {
			n, _ := np.Protocol.Number()
			if np.Name != name || n != proto {
				continue
			}
			for _, a := range e.Addrs {
				out = append(out, NamedPortMember{Addr: a, Protocol: proto, Port: np.Port})
			}
		}
	}
	return out
}

// NamedPortMember is one (address, protocol, port) of a named port.
type NamedPortMember struct {
	Addr     netip.Addr
	Protocol uint8
	Port     uint16
}
