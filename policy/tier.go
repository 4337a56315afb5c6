package policy

import (
	"cmp"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// Tier is a compiled Tier: the order its policies are evaluated in among the tiers', and
// what happens at its end to a packet none of its applying policies decided.
type Tier struct {
	Name          string
	Order         float64 // +Inf when unset
	DefaultAction api.Action
	// Implicit is set for a tier no Tier resource defines: the default tier, or a tier a
	// policy names that does not exist (order unset, defaultAction Deny).
	Implicit bool
}

// Pass says whether the tier's default action passes to the next tier.
func (t *Tier) Pass() bool { return t.DefaultAction == api.ActionPass }

// TierOf returns the tier named name: its Tier resource, or the implicit tier of that
// name. The default tier always exists, with Calico's order 1,000,000 and defaultAction
// Deny unless a Tier resource named default says otherwise.
func (m *Model) TierOf(name string) *Tier {
	if t := m.Tiers[name]; t != nil {
		return t
	}
	if name == api.DefaultTier {
		return defaultTier
	}
	return &Tier{Name: name, Order: orderOf(nil), DefaultAction: api.ActionDeny, Implicit: true}
}

var defaultTier = &Tier{Name: api.DefaultTier, Order: api.DefaultTierOrder, DefaultAction: api.ActionDeny, Implicit: true}

func compileTier(t *api.Tier) *Tier {
	action := t.Spec.DefaultAction
	if action == "" {
		action = api.ActionDeny
	}
	return &Tier{Name: t.Name, Order: orderOf(t.Spec.Order), DefaultAction: action}
}

// compareTiers orders tiers as Calico does: by order (lower first, unset last), then by
// name.
func (m *Model) compareTiers(a, b string) int {
	if a == b {
		return 0
	}
	return cmp.Or(cmp.Compare(m.TierOf(a).Order, m.TierOf(b).Order), strings.Compare(a, b))
}
