package api

import "strings"

// Tier is Calico's ordered group of policies: policies are evaluated tier by tier, lowest
// order first, and a rule's Pass moves on to the next tier.
type Tier struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       TierSpec `json:"spec"`
}

// TierSpec is Calico's Tier spec. Order nil sorts after every number. DefaultAction is
// what happens to a packet when policies of the tier apply to its endpoint and none
// decided: Deny (the default) or Pass (on to the next tier).
type TierSpec struct {
	Order         *float64 `json:"order,omitempty"`
	DefaultAction Action   `json:"defaultAction,omitempty"`
}

// DefaultTierOrder is the order of the default tier, which always exists: it need not be
// stored, and when it is, its order is this one (as Calico's).
const DefaultTierOrder = 1_000_000

func init() {
	register(&Kind{
		Name: "Tier", APIVersion: VersionCalico, Plural: "tiers", Singular: "tier",
		New: func() Resource { return &Tier{TypeMeta: TypeMeta{Kind: "Tier", APIVersion: VersionCalico}} },
	})
}

func (t *Tier) setDefaults() {
	if t.Spec.DefaultAction == "" {
		t.Spec.DefaultAction = ActionDeny
	}
	if t.Name == DefaultTier && t.Spec.Order == nil {
		o := float64(DefaultTierOrder)
		t.Spec.Order = &o
	}
}

// Tier names are DNS-1123 labels: a policy's name may carry its tier's name before a dot.
func (t *Tier) checkName(errs *FieldErrors) { checkLabel(errs, "metadata.name", t.Name) }

func (t *Tier) validate(errs *FieldErrors) {
	checkEnum(errs, "spec.defaultAction", t.Spec.DefaultAction, ActionDeny, ActionPass)
	if t.Name == DefaultTier && (t.Spec.Order == nil || *t.Spec.Order != DefaultTierOrder) {
		errs.add("spec.order", t.Spec.Order, "the default tier's order is %d", DefaultTierOrder)
	}
}

// checkPolicyTier checks a policy's name against its tier (defaulted), as Calico does: a
// name with a "<tier>." prefix must name its own tier. A name without one is accepted in
// any tier, as Calico accepts from v3.32 (before, only in the default tier).
func checkPolicyTier(errs *FieldErrors, name, tier string) {
	prefix, _, ok := strings.Cut(name, ".")
	if ok && policyNameRE.MatchString(name) && tier != "" && prefix != tier {
		errs.add("metadata.name", name, "%q is prefixed with tier %q but the policy's spec.tier is %q", name, prefix, tier)
	}
}
