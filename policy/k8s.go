package policy

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// K8sPolicyPrefix starts the names Calico gives Kubernetes NetworkPolicies.
const K8sPolicyPrefix = "knp.default."

// LabelSelectorString converts a Kubernetes label selector to Calico's selector syntax:
// matchLabels and matchExpressions ANDed; the empty selector is all().
func LabelSelectorString(s *api.LabelSelector) string {
	if s == nil {
		return "all()"
	}
	var terms []string
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		terms = append(terms, fmt.Sprintf("%s == %s", k, quote(s.MatchLabels[k])))
	}
	for _, r := range s.MatchExpressions {
		switch r.Operator {
		case api.LabelSelectorOpIn, api.LabelSelectorOpNotIn:
			vals := make([]string, len(r.Values))
			for i, v := range r.Values {
				vals[i] = quote(v)
			}
			op := "in"
			if r.Operator == api.LabelSelectorOpNotIn {
				op = "not in"
			}
			terms = append(terms, fmt.Sprintf("%s %s {%s}", r.Key, op, strings.Join(vals, ", ")))
		case api.LabelSelectorOpExists:
			terms = append(terms, "has("+r.Key+")")
		case api.LabelSelectorOpDoesNotExist:
			terms = append(terms, "!has("+r.Key+")")
		}
	}
	if len(terms) == 0 {
		return "all()"
	}
	return strings.Join(terms, " && ")
}

func quote(v string) string {
	if strings.Contains(v, "'") {
		return `"` + v + `"`
	}
	return "'" + v + "'"
}

// TranslateK8s compiles a Kubernetes NetworkPolicy into the model with Kubernetes
// semantics, as Calico converts it: name knp.default.<name>, order 1000, Allow rules
// only (what no rule allows is denied, as for every policy that applies). A peer's
// podSelector and namespaceSelector together select pods matching both (AND); separate
// peers, and separate rules, are alternatives (OR). A podSelector alone selects pods of
// the policy's namespace; a namespaceSelector alone, every pod of the matching
// namespaces. ipBlock is nets minus except. Ports are grouped per protocol into one
// rule, numbers, ranges (port..endPort) and named ports alike.
func TranslateK8s(p *api.K8sNetworkPolicy) (*Policy, error) {
	s := &p.Spec
	sel, err := parseSel("spec.podSelector", LabelSelectorString(&s.PodSelector))
	if err != nil {
		return nil, err
	}
	types := s.PolicyTypes
	if len(types) == 0 {
		types = []api.PolicyType{api.PolicyTypeIngress}
		if len(s.Egress) > 0 {
			types = append(types, api.PolicyTypeEgress)
		}
	}
	cp := &Policy{
		Kind: KindK8sNetworkPolicy, Namespace: p.Namespace, Name: K8sPolicyPrefix + p.Name,
		Tier: api.DefaultTier, Order: K8sPolicyOrder, Selector: sel,
		Ingress: hasType(types, api.PolicyTypeIngress), Egress: hasType(types, api.PolicyTypeEgress),
	}
	for i, r := range s.Ingress {
		rules, err := k8sRules(fmt.Sprintf("ingress[%d]", i), "from", r.Ports, r.From, p.Namespace, true)
		if err != nil {
			return nil, err
		}
		cp.IngressRules = append(cp.IngressRules, rules...)
	}
	for i, r := range s.Egress {
		rules, err := k8sRules(fmt.Sprintf("egress[%d]", i), "to", r.Ports, r.To, p.Namespace, false)
		if err != nil {
			return nil, err
		}
		cp.EgressRules = append(cp.EgressRules, rules...)
	}
	return cp, nil
}

// k8sRules expands one Kubernetes rule into (peer × protocol) Allow rules.
func k8sRules(origin, peerField string, ports []api.K8sNetworkPolicyPort, peers []api.K8sNetworkPolicyPeer, namespace string, ingress bool) ([]Rule, error) {
	type protoPorts struct {
		proto uint8
		name  string
		ports []api.Port // nil: every port
		any   bool
	}
	var groups []*protoPorts
	for i, pp := range ports {
		proto := api.PortProtocolTCP
		if pp.Protocol != nil {
			proto = *pp.Protocol
		}
		n, ok := api.ParseProtocol(string(proto)).Number()
		if !ok {
			return nil, fmt.Errorf("%s.ports[%d].protocol: unknown protocol %q", origin, i, proto)
		}
		idx := slices.IndexFunc(groups, func(g *protoPorts) bool { return g.proto == n })
		if idx < 0 {
			groups = append(groups, &protoPorts{proto: n, name: string(proto)})
			idx = len(groups) - 1
		}
		g := groups[idx]
		switch {
		case pp.Port == nil:
			g.any = true
		case pp.Port.IsString():
			g.ports = append(g.ports, api.Port{PortName: pp.Port.StrVal})
		default:
			lo := uint16(pp.Port.IntVal)
			hi := lo
			if pp.EndPort != nil {
				hi = uint16(*pp.EndPort)
			}
			g.ports = append(g.ports, api.Port{MinPort: lo, MaxPort: hi})
		}
	}
	type peerMatch struct {
		origin string
		entity Entity
	}
	var pm []peerMatch
	if len(peers) == 0 {
		pm = append(pm, peerMatch{origin: origin})
	}
	for i, peer := range peers {
		o := fmt.Sprintf("%s.%s[%d]", origin, peerField, i)
		var e Entity
		switch {
		case peer.IPBlock != nil:
			nets, err := api.ParseNets([]string{peer.IPBlock.CIDR})
			if err != nil {
				return nil, fmt.Errorf("%s.ipBlock.cidr: %w", o, err)
			}
			except, err := api.ParseNets(peer.IPBlock.Except)
			if err != nil {
				return nil, fmt.Errorf("%s.ipBlock.except: %w", o, err)
			}
			e.Nets, e.NotNets = nets, except
		default:
			podSel, err := parseSel(o+".podSelector", LabelSelectorString(peer.PodSelector))
			if err != nil {
				return nil, err
			}
			if peer.NamespaceSelector == nil {
				e.Selector = newScope(podSel, nil, namespace, false, true, nil)
			} else {
				nsSel, err := parseSel(o+".namespaceSelector", LabelSelectorString(peer.NamespaceSelector))
				if err != nil {
					return nil, err
				}
				e.Selector = newScope(podSel, nsSel, "", false, true, nil)
			}
		}
		pm = append(pm, peerMatch{origin: o, entity: e})
	}
	var out []Rule
	for _, peer := range pm {
		if len(groups) == 0 {
			r := Rule{Origin: peer.origin, Action: api.ActionAllow}
			setPeer(&r, peer.entity, ingress)
			out = append(out, r)
			continue
		}
		for _, g := range groups {
			proto := g.proto
			r := Rule{Origin: peer.origin + ".ports(" + protoLabel(g.name, proto) + ")", Action: api.ActionAllow, Protocol: &proto}
			setPeer(&r, peer.entity, ingress)
			if !g.any {
				r.Dst.Ports = g.ports
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func protoLabel(name string, n uint8) string {
	if name != "" {
		return name
	}
	return strconv.Itoa(int(n))
}

func setPeer(r *Rule, e Entity, ingress bool) {
	if ingress {
		r.Src = e
	} else {
		r.Dst = e
	}
}
