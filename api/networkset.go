package api

import (
	"fmt"
	"net/netip"
)

// GlobalNetworkSet is a named list of networks that policy selects by its labels.
type GlobalNetworkSet struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NetworkSetSpec `json:"spec"`
}

// NetworkSet is GlobalNetworkSet within one namespace.
type NetworkSet struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NetworkSetSpec `json:"spec"`
}

// NetworkSetSpec is the spec of Calico's NetworkSet and GlobalNetworkSet. A bare address
// in Nets stands for itself alone (/32 or /128).
type NetworkSetSpec struct {
	Nets []string `json:"nets,omitempty"`
}

func init() {
	register(&Kind{
		Name: "GlobalNetworkSet", APIVersion: VersionCalico, Plural: "globalnetworksets", Singular: "globalnetworkset",
		New: func() Resource {
			return &GlobalNetworkSet{TypeMeta: TypeMeta{Kind: "GlobalNetworkSet", APIVersion: VersionCalico}}
		},
	})
	register(&Kind{
		Name: "NetworkSet", APIVersion: VersionCalico, Plural: "networksets", Singular: "networkset",
		Aliases: []string{"netsets"}, Namespaced: true,
		New: func() Resource { return &NetworkSet{TypeMeta: TypeMeta{Kind: "NetworkSet", APIVersion: VersionCalico}} },
	})
}

// Prefixes parses Nets.
func (s *NetworkSetSpec) Prefixes() ([]netip.Prefix, error) {
	ps, err := ParseNets(s.Nets)
	if err != nil {
		return nil, fmt.Errorf("nets: %w", err)
	}
	return ps, nil
}

// namespaceLabel is the label Calico gives namespaced objects when it converts them; a
// user-set one would be ambiguous.
const namespaceLabel = "projectcalico.org/namespace"

func (s *NetworkSetSpec) validate(errs *FieldErrors, labels map[string]string) {
	checkNets(errs, "spec.nets", s.Nets)
	if _, ok := labels[namespaceLabel]; ok {
		errs.add(mapPath("metadata.labels", namespaceLabel), namespaceLabel, "%s is reserved", namespaceLabel)
	}
}

func (n *GlobalNetworkSet) validate(errs *FieldErrors) { n.Spec.validate(errs, n.Labels) }
func (n *NetworkSet) validate(errs *FieldErrors)       { n.Spec.validate(errs, n.Labels) }
