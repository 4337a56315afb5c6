package api

// Profile is a set of rules and labels that endpoints refer to by name (Calico's older
// mechanism, still used for per-namespace defaults).
type Profile struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ProfileSpec `json:"spec"`
}

// ProfileSpec is Calico's Profile spec.
type ProfileSpec struct {
	Ingress       []Rule            `json:"ingress,omitempty"`
	Egress        []Rule            `json:"egress,omitempty"`
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

func init() {
	register(&Kind{
		Name: "Profile", APIVersion: VersionCalico, Plural: "profiles", Singular: "profile",
		Aliases: []string{"pro", "pros"},
		New:     func() Resource { return &Profile{TypeMeta: TypeMeta{Kind: "Profile", APIVersion: VersionCalico}} },
	})
}

func (p *Profile) validate(errs *FieldErrors) {
	for i := range p.Spec.Ingress {
		validateRule(errs, index("spec.ingress", i), &p.Spec.Ingress[i])
	}
	for i := range p.Spec.Egress {
		validateRule(errs, index("spec.egress", i), &p.Spec.Egress[i])
	}
	checkLabels(errs, "spec.labelsToApply", p.Spec.LabelsToApply)
}
