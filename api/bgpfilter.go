package api

import (
	"fmt"
	"net/netip"
)

// BGPFilter is Calico's BGPFilter: import and export rules for the BGP sessions of the
// BGPPeers that name it in spec.filters.
type BGPFilter struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BGPFilterSpec `json:"spec"`
}

// BGPFilterSpec holds the rules per direction and family; within a list the first rule
// that matches a route decides, and a route no rule matches goes on to tabby's own
// import (accept) and export (own routes out) rules.
type BGPFilterSpec struct {
	ExportV4 []BGPFilterRule `json:"exportV4,omitempty"`
	ImportV4 []BGPFilterRule `json:"importV4,omitempty"`
	ExportV6 []BGPFilterRule `json:"exportV6,omitempty"`
	ImportV6 []BGPFilterRule `json:"importV6,omitempty"`
}

// BGPFilterRule matches routes by prefix: with MatchOperator Equal the route's prefix is
// CIDR, In it lies within CIDR (CIDR itself included), NotEqual and NotIn the opposites.
// A rule without CIDR and MatchOperator matches every route of its family. Source
// RemotePeers (export rules only) limits the rule to routes learned from peers, leaving
// the node's own; Interface is Calico's match on a route's interface, which tabby does not
// implement (refused).
type BGPFilterRule struct {
	CIDR          string                 `json:"cidr,omitempty"`
	MatchOperator BGPFilterMatchOperator `json:"matchOperator,omitempty"`
	Action        BGPFilterAction        `json:"action"`
	Source        BGPFilterMatchSource   `json:"source,omitempty"`
	Interface     string                 `json:"interface,omitempty"`
}

// BGPFilterMatchOperator compares a route's prefix with a rule's CIDR.
type BGPFilterMatchOperator string

// Match operators, as Calico names them.
const (
	MatchOperatorEqual    BGPFilterMatchOperator = "Equal"
	MatchOperatorNotEqual BGPFilterMatchOperator = "NotEqual"
	MatchOperatorIn       BGPFilterMatchOperator = "In"
	MatchOperatorNotIn    BGPFilterMatchOperator = "NotIn"
)

// BGPFilterAction is what a matching rule does with a route.
type BGPFilterAction string

// Filter actions, as Calico names them.
const (
	FilterActionAccept BGPFilterAction = "Accept"
	FilterActionReject BGPFilterAction = "Reject"
)

// BGPFilterMatchSource limits an export rule to routes of one origin.
type BGPFilterMatchSource string

// FilterSourceRemotePeers: routes learned from BGP peers, not the node's own.
const FilterSourceRemotePeers BGPFilterMatchSource = "RemotePeers"

func init() {
	register(&Kind{
		Name: "BGPFilter", APIVersion: VersionCalico, Plural: "bgpfilters", Singular: "bgpfilter",
		New: func() Resource { return &BGPFilter{TypeMeta: TypeMeta{Kind: "BGPFilter", APIVersion: VersionCalico}} },
	})
}

func (f *BGPFilter) validate(errs *FieldErrors) {
	for _, l := range []struct {
		field  string
		rules  []BGPFilterRule
		v6     bool
		export bool
	}{
		{"spec.exportV4", f.Spec.ExportV4, false, true},
		{"spec.importV4", f.Spec.ImportV4, false, false},
		{"spec.exportV6", f.Spec.ExportV6, true, true},
		{"spec.importV6", f.Spec.ImportV6, true, false},
	} {
		for i, r := range l.rules {
			r.validate(errs, fmt.Sprintf("%s[%d]", l.field, i), l.v6, l.export)
		}
	}
}

func (r BGPFilterRule) validate(errs *FieldErrors, field string, v6, export bool) {
	if r.Action == "" {
		errs.add(field+".action", "", "required: Accept or Reject")
	}
	checkEnum(errs, field+".action", r.Action, FilterActionAccept, FilterActionReject)
	checkEnum(errs, field+".matchOperator", r.MatchOperator, MatchOperatorEqual, MatchOperatorNotEqual, MatchOperatorIn, MatchOperatorNotIn)
	switch {
	case r.CIDR == "" && r.MatchOperator != "":
		errs.add(field+".cidr", "", "required when matchOperator is set")
	case r.CIDR != "" && r.MatchOperator == "":
		errs.add(field+".matchOperator", "", "required when cidr is set")
	case r.CIDR != "":
		if p, err := ParseNet(r.CIDR); err != nil {
			errs.add(field+".cidr", r.CIDR, "%v", err)
		} else if p.Addr().Is6() != v6 {
			errs.add(field+".cidr", r.CIDR, "%s is not an %s network", r.CIDR, map[bool]string{false: "IPv4", true: "IPv6"}[v6])
		}
	}
	if checkEnum(errs, field+".source", r.Source, FilterSourceRemotePeers) && r.Source != "" && !export {
		errs.add(field+".source", string(r.Source), "only export rules take a source")
	}
	if r.Interface != "" {
		errs.add(field+".interface", r.Interface, "%q: not implemented: tabby matches no routes by interface", r.Interface)
	}
}

// Prefix returns the rule's CIDR; invalid when the rule has none (it matches every route).
func (r BGPFilterRule) Prefix() netip.Prefix {
	p, _ := ParseNet(r.CIDR)
	return p
}
