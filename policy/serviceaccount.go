package policy

import (
	"slices"
	"strings"

	"github.com/tabby-net/tabby/policy/selector"
)

// Labels of an endpoint that carry its service account, as Calico gives them: the name,
// and the service account's own labels under a prefix (Calico applies them through a
// profile ksa.<namespace>.<name>; tabby reads them from the endpoint's labels, its own
// or its profiles' labelsToApply).
const (
	LabelServiceAccount       = "projectcalico.org/serviceaccount"
	ServiceAccountLabelPrefix = "pcsa."
)

// ServiceAccountMatch is a rule's serviceAccounts match, compiled: endpoints whose service
// account is one of Names (any when empty) and whose service account's labels Selector
// matches (any when nil).
type ServiceAccountMatch struct {
	Names    []string // sorted, no repeats
	Selector *selector.Selector
}

func newServiceAccountMatch(names []string, sel *selector.Selector) *ServiceAccountMatch {
	n := slices.Clone(names)
	slices.Sort(n)
	return &ServiceAccountMatch{Names: slices.Compact(n), Selector: sel}
}

// key is the match's part of a Scope's Key.
func (s *ServiceAccountMatch) key() string {
	k := " serviceaccounts"
	if len(s.Names) > 0 {
		k += " {" + strings.Join(s.Names, ",") + "}"
	}
	if s.Selector != nil {
		k += " " + s.Selector.String()
	}
	return k
}

// matches says whether an endpoint with labels is in the match.
func (s *ServiceAccountMatch) matches(labels map[string]string) bool {
	if len(s.Names) > 0 {
		name, ok := labels[LabelServiceAccount]
		if _, found := slices.BinarySearch(s.Names, name); !ok || !found {
			return false
		}
	}
	return s.Selector == nil || s.Selector.EvaluateLabels(serviceAccountLabels(labels))
}

// serviceAccountLabels are the labels of an endpoint's service account, as a
// serviceAccountSelector sees them: the endpoint's labels under ServiceAccountLabelPrefix,
// and projectcalico.org/name, the service account's name (as Calico labels it).
type serviceAccountLabels map[string]string

func (l serviceAccountLabels) Get(key string) (string, bool) {
	if key == LabelCalicoNamespaceName {
		v, ok := l[LabelServiceAccount]
		return v, ok
	}
	v, ok := l[ServiceAccountLabelPrefix+key]
	return v, ok
}
