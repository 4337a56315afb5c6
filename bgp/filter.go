package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	gobgpapi "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	"github.com/tabby-net/tabby/api"
)

// FilterRule is one BGPFilter rule as the speaker applies it to a peer's routes.
type FilterRule struct {
	// Prefix and Op match the route's prefix; without a Prefix the rule matches every route
	// of its family.
	Prefix netip.Prefix
	Op     api.BGPFilterMatchOperator
	V6     bool
	Accept bool
	// RemoteOnly (source RemotePeers) leaves the node's own routes out of the match.
	RemoteOnly bool
}

// PeerFilters are the rules of one peer's BGPFilters, in the order of its BGPPeer's
// filters and, within a filter, as written: the first that matches a route decides.
type PeerFilters struct {
	Import, Export []FilterRule
}

// DesiredFilters returns the filter rules of each peer that a BGPPeer with filters
// configured, and the problems met: a filter named that does not exist is left out.
func DesiredFilters(peers []Peer, bgpPeers []*api.BGPPeer, filters []*api.BGPFilter) (map[netip.Addr]PeerFilters, []string) {
	byName := map[string]*api.BGPFilter{}
	for _, f := range filters {
		byName[f.Name] = f
	}
	spec := map[string]*api.BGPPeerSpec{}
	for _, bp := range bgpPeers {
		spec["BGPPeer "+bp.Name] = &bp.Spec
	}
	var problems []string
	missing := map[string]bool{}
	out := map[netip.Addr]PeerFilters{}
	for _, p := range peers {
		s := spec[p.Source]
		if s == nil || len(s.Filters) == 0 {
			continue
		}
		var pf PeerFilters
		for _, name := range s.Filters {
			f := byName[name]
			if f == nil {
				if !missing[p.Source+name] {
					missing[p.Source+name] = true
					problems = append(problems, fmt.Sprintf("%s: filter %q: no such BGPFilter", p.Source, name))
				}
				continue
			}
			pf.Export = appendRules(pf.Export, f.Spec.ExportV4, false)
			pf.Export = appendRules(pf.Export, f.Spec.ExportV6, true)
			pf.Import = appendRules(pf.Import, f.Spec.ImportV4, false)
			pf.Import = appendRules(pf.Import, f.Spec.ImportV6, true)
		}
		out[p.Addr] = pf
	}
	return out, problems
}

func appendRules(out []FilterRule, rules []api.BGPFilterRule, v6 bool) []FilterRule {
	for _, r := range rules {
		out = append(out, FilterRule{Prefix: r.Prefix(), Op: r.MatchOperator, V6: v6,
			Accept: r.Action == api.FilterActionAccept, RemoteOnly: r.Source == api.FilterSourceRemotePeers})
	}
	return out
}

// Names of the filter policies; each generation of them gets a new number, so that the
// new policy is in place before the old one goes.
const (
	filterImportPolicy = "tabby-filters-import"
	filterExportPolicy = "tabby-filters-export"
)

// filterPolicy is one generation of GoBGP objects for the filters in one direction.
type filterPolicy struct {
	policy *gobgpapi.Policy
	sets   []*gobgpapi.DefinedSet
}

// filterPolicies translates each peer's rules into two GoBGP policies (import, export) of
// generation gen, nil for a direction without rules. Every peer gets a neighbor set of its
// own, and every rule a statement (two for RemoteOnly: routes from iBGP and eBGP peers)
// conditioned on that set, the rule's family and prefix set, so that one global policy
// keeps each peer's order of rules.
func filterPolicies(filters map[netip.Addr]PeerFilters, gen int) (imp, exp *filterPolicy) {
	addrs := slices.SortedFunc(maps.Keys(filters), netip.Addr.Compare)
	build := func(name string, rules func(PeerFilters) []FilterRule, dir string) *filterPolicy {
		fp := &filterPolicy{policy: &gobgpapi.Policy{Name: fmt.Sprintf("%s-%d", name, gen)}}
		for _, a := range addrs {
			rs := rules(filters[a])
			if len(rs) == 0 {
				continue
			}
			bits := 32
			if a.Is6() {
				bits = 128
			}
			nset := fmt.Sprintf("tabby-f%d-%s-%s", gen, dir, a)
			fp.sets = append(fp.sets, &gobgpapi.DefinedSet{DefinedType: gobgpapi.DefinedType_NEIGHBOR, Name: nset,
				List: []string{netip.PrefixFrom(a, bits).String()}})
			for i, r := range rs {
				family := familyV4
				if r.V6 {
					family = &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP6, Safi: gobgpapi.Family_SAFI_UNICAST}
				}
				cond := &gobgpapi.Conditions{
					NeighborSet: &gobgpapi.MatchSet{Type: gobgpapi.MatchSet_ANY, Name: nset},
					AfiSafiIn:   []*gobgpapi.Family{family},
				}
				if r.Prefix.IsValid() {
					pset := fmt.Sprintf("%s-%d", nset, i)
					maxLen := r.Prefix.Bits()
					if r.Op == api.MatchOperatorIn || r.Op == api.MatchOperatorNotIn {
						maxLen = r.Prefix.Addr().BitLen()
					}
					fp.sets = append(fp.sets, &gobgpapi.DefinedSet{DefinedType: gobgpapi.DefinedType_PREFIX, Name: pset,
						Prefixes: []*gobgpapi.Prefix{{IpPrefix: r.Prefix.String(), MaskLengthMin: uint32(r.Prefix.Bits()), MaskLengthMax: uint32(maxLen)}}})
					match := gobgpapi.MatchSet_ANY
					if r.Op == api.MatchOperatorNotEqual || r.Op == api.MatchOperatorNotIn {
						match = gobgpapi.MatchSet_INVERT
					}
					cond.PrefixSet = &gobgpapi.MatchSet{Type: match, Name: pset}
				}
				action := gobgpapi.RouteAction_REJECT
				if r.Accept {
					action = gobgpapi.RouteAction_ACCEPT
				}
				types := []gobgpapi.Conditions_RouteType{gobgpapi.Conditions_ROUTE_TYPE_NONE}
				if r.RemoteOnly {
					types = []gobgpapi.Conditions_RouteType{gobgpapi.Conditions_ROUTE_TYPE_INTERNAL, gobgpapi.Conditions_ROUTE_TYPE_EXTERNAL}
				}
				for j, t := range types {
					c := proto.Clone(cond).(*gobgpapi.Conditions)
					c.RouteType = t
					fp.policy.Statements = append(fp.policy.Statements, &gobgpapi.Statement{
						Name:       fmt.Sprintf("%s-%d-%d", nset, i, j),
						Conditions: c,
						Actions:    &gobgpapi.Actions{RouteAction: action},
					})
				}
			}
		}
		if len(fp.policy.Statements) == 0 {
			return nil
		}
		return fp
	}
	imp = build(filterImportPolicy, func(f PeerFilters) []FilterRule { return f.Import }, "i")
	exp = build(filterExportPolicy, func(f PeerFilters) []FilterRule { return f.Export }, "e")
	return imp, exp
}

// SetFilters makes the speaker apply filters, each peer's BGPFilter rules, before its own
// import (accept everything) and export (the node's own routes, iBGP as BGP allows) rules.
// The peers whose rules changed are soft-reset, so the change applies to the routes already
// exchanged: GoBGP runs its import policy again over what it kept from the peer, and sends
// the peer its routes again through the export policy.
func (s *Speaker) SetFilters(ctx context.Context, filters map[netip.Addr]PeerFilters) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if equalFilters(s.filters, filters) {
		return nil
	}
	gen := s.filterGen + 1
	imp, exp := filterPolicies(filters, gen)
	for _, fp := range []*filterPolicy{imp, exp} {
		if fp == nil {
			continue
		}
		for _, set := range fp.sets {
			if err := s.srv.AddDefinedSet(ctx, &gobgpapi.AddDefinedSetRequest{DefinedSet: set}); err != nil {
				return fmt.Errorf("BGP filters: defined set %s: %w", set.Name, err)
			}
		}
		if err := s.srv.AddPolicy(ctx, &gobgpapi.AddPolicyRequest{Policy: fp.policy}); err != nil {
			return fmt.Errorf("BGP filters: policy %s: %w", fp.policy.Name, err)
		}
	}
	var impNames, expNames []*gobgpapi.Policy
	if imp != nil {
		impNames = []*gobgpapi.Policy{{Name: imp.policy.Name}}
	}
	if exp != nil {
		expNames = []*gobgpapi.Policy{{Name: exp.policy.Name}}
	}
	expNames = append(expNames, &gobgpapi.Policy{Name: exportPolicyName})
	for _, a := range []*gobgpapi.PolicyAssignment{
		{Name: "global", Direction: gobgpapi.PolicyDirection_IMPORT, Policies: impNames, DefaultAction: gobgpapi.RouteAction_ACCEPT},
		{Name: "global", Direction: gobgpapi.PolicyDirection_EXPORT, Policies: expNames, DefaultAction: gobgpapi.RouteAction_REJECT},
	} {
		if err := s.srv.SetPolicyAssignment(ctx, &gobgpapi.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("BGP filters: %s policy assignment: %w", strings.ToLower(a.Direction.String()), err)
		}
	}
	// The previous generation goes once nothing refers to it.
	var errs []error
	for _, fp := range s.filterPolicies {
		if err := s.srv.DeletePolicy(ctx, &gobgpapi.DeletePolicyRequest{Policy: fp.policy, PreserveStatements: false, All: true}); err != nil {
			errs = append(errs, fmt.Errorf("BGP filters: delete policy %s: %w", fp.policy.Name, err))
		}
		for _, set := range fp.sets {
			if err := s.srv.DeleteDefinedSet(ctx, &gobgpapi.DeleteDefinedSetRequest{DefinedSet: set, All: true}); err != nil {
				errs = append(errs, fmt.Errorf("BGP filters: delete defined set %s: %w", set.Name, err))
			}
		}
	}
	s.filterPolicies = nil
	for _, fp := range []*filterPolicy{imp, exp} {
		if fp != nil {
			s.filterPolicies = append(s.filterPolicies, fp)
		}
	}
	changed := map[netip.Addr]bool{}
	for a, f := range filters {
		if old, ok := s.filters[a]; !ok || !equalPeerFilters(old, f) {
			changed[a] = true
		}
	}
	for a := range s.filters {
		if _, ok := filters[a]; !ok {
			changed[a] = true
		}
	}
	s.filters, s.filterGen = filters, gen
	for a := range changed {
		if !s.up[a] {
			continue // its session applies the policy when it comes up
		}
		if err := s.srv.ResetPeer(ctx, &gobgpapi.ResetPeerRequest{Address: a.String(), Soft: true,
			Direction: gobgpapi.ResetPeerRequest_BOTH}); err != nil {
			errs = append(errs, fmt.Errorf("BGP filters: soft reset of %s: %w", a, err))
		}
	}
	s.log.Info("BGP filters applied", "peers", len(filters), "changed", len(changed))
	return errors.Join(errs...)
}

func equalPeerFilters(a, b PeerFilters) bool {
	return slices.Equal(a.Import, b.Import) && slices.Equal(a.Export, b.Export)
}

func equalFilters(a, b map[netip.Addr]PeerFilters) bool {
	return maps.EqualFunc(a, b, equalPeerFilters)
}
