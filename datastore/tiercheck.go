package datastore

import (
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
)

// TierInUseCheck is the write check that refuses to delete a Tier while policies name it,
// as Calico refuses: they would fall to the end of the evaluation order. Register it on
// the clients that delete tiers (tabbyctl does). It reads the NetworkPolicies and
// GlobalNetworkPolicies in the snapshot of the delete, so a policy written meanwhile makes
// the delete check again.
func TierInUseCheck() WriteCheck {
	prefixes := make([]string, len(tierPolicyKinds))
	for i, k := range tierPolicyKinds {
		prefixes[i], _ = listPrefix(k, "")
	}
	return WriteCheck{Kind: mustKindFor[*api.Tier](), Prefixes: prefixes, Check: func(old, new api.Resource, read map[string][]*mvccpb.KeyValue) error {
		if new != nil || old == nil {
			return nil
		}
		tier := old.GetObjectMeta().Name
		var users []string
		for i, kind := range tierPolicyKinds {
			for _, kv := range read[prefixes[i]] {
				r, err := decode(kind, kv)
				if err != nil {
					return fmt.Errorf("tier %q: cannot tell whether policies use it: %w", tier, err)
				}
				if policyTier(r) == tier {
					users = append(users, kind.Name+" "+strings.TrimPrefix(string(kv.Key), prefixes[i]))
				}
			}
		}
		if len(users) == 0 {
			return nil
		}
		if len(users) > 3 {
			users = append(users[:3], fmt.Sprintf("and %d more", len(users)-3))
		}
		return fmt.Errorf("tier %q is in use by %s; delete or move them first", tier, strings.Join(users, ", "))
	}}
}

// TierExistsCheck is the write check that refuses a policy (NetworkPolicy or
// GlobalNetworkPolicy) naming a tier that does not exist, as Calico refuses ("resource
// does not exist: Tier"): its rules would be evaluated in no tier's order. The default
// tier always exists. A tier written in the same transaction counts. Register it on the
// clients that write policies (tabbyctl does), with TierInUseCheck.
func TierExistsCheck(policyKind *api.Kind) WriteCheck {
	tiers, _ := listPrefix(mustKindFor[*api.Tier](), "")
	return WriteCheck{Kind: policyKind, Prefixes: []string{tiers}, Present: true, Check: func(_, new api.Resource, read map[string][]*mvccpb.KeyValue) error {
		if new == nil {
			return nil
		}
		tier := policyTier(new)
		if tier == api.DefaultTier || hasKey(read[tiers], tiers+tier) {
			return nil
		}
		return fmt.Errorf("tier %q does not exist: create the Tier first (or in the same manifest)", tier)
	}}
}

// TierChecks are TierInUseCheck and a TierExistsCheck for each policy kind.
func TierChecks() []WriteCheck {
	checks := []WriteCheck{TierInUseCheck()}
	for _, k := range tierPolicyKinds {
		checks = append(checks, TierExistsCheck(k))
	}
	return checks
}

var tierPolicyKinds = []*api.Kind{mustKindFor[*api.NetworkPolicy](), mustKindFor[*api.GlobalNetworkPolicy]()}

// policyTier is a stored policy's tier, the default tier when it names none.
func policyTier(r api.Resource) string {
	var t string
	switch p := r.(type) {
	case *api.NetworkPolicy:
		t = p.Spec.Tier
	case *api.GlobalNetworkPolicy:
		t = p.Spec.Tier
	}
	if t == "" {
		return api.DefaultTier
	}
	return t
}
