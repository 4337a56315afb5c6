package api

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/policy/selector"
)

// FieldError is one problem with one field of a resource.
type FieldError struct {
	Field  string // path from the resource root: "spec.ingress[0].destination.ports"
	Value  any    // the offending value, for callers that want it
	Detail string // what is wrong, naming the value where that helps
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// FieldErrors lists every problem Validate found in one resource.
type FieldErrors []*FieldError

func (e FieldErrors) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Error()
	}
	return strings.Join(msgs, "; ")
}

// add records a problem; detail is a format string for args.
func (e *FieldErrors) add(field string, value any, detail string, args ...any) {
	*e = append(*e, &FieldError{Field: field, Value: value, Detail: fmt.Sprintf(detail, args...)})
}

// defaulter and validator are implemented by the resource types that have defaults or
// checks of their own.
type defaulter interface{ setDefaults() }
type validator interface{ validate(errs *FieldErrors) }

// nameChecker is implemented by kinds whose names follow a rule other than the
// DNS-1123 subdomain most kinds use.
type nameChecker interface{ checkName(errs *FieldErrors) }

// SetDefaults fills in the defaults Calico (or Kubernetes, for its kinds) documents for
// r's kind. It leaves an empty namespace empty: which namespace a manifest without one
// lands in is the caller's choice (tabbyctl's -n), as with kubectl.
func SetDefaults(r Resource) {
	if d, ok := r.(defaulter); ok {
		d.setDefaults()
	}
}

// Validate checks one resource on its own and returns nil or a FieldErrors listing every
// problem with its field path. It expects SetDefaults to have run (Decode does that).
func Validate(r Resource) error {
	var errs FieldErrors
	k, err := KindOf(r)
	if err != nil {
		errs.add("kind", r.GetTypeMeta().Kind, "%v", err)
		return errs
	}
	m := r.GetObjectMeta()
	if n, ok := r.(nameChecker); ok {
		n.checkName(&errs)
	} else {
		checkSubdomain(&errs, "metadata.name", m.Name)
	}
	switch {
	case k.Namespaced && m.Namespace == "":
		errs.add("metadata.namespace", "", "required: %s is namespaced", k.Name)
	case k.Namespaced:
		checkLabel(&errs, "metadata.namespace", m.Namespace)
	case m.Namespace != "":
		errs.add("metadata.namespace", m.Namespace, "must be empty: %s is not namespaced", k.Name)
	}
	checkLabels(&errs, "metadata.labels", m.Labels)
	checkAnnotations(&errs, "metadata.annotations", m.Annotations)
	if v, ok := r.(validator); ok {
		v.validate(&errs)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// ValidateIPPools checks invariants across a set of pools: no two pools' CIDRs overlap.
// Pools whose CIDR does not parse are skipped; Validate reports them.
func ValidateIPPools(pools []*IPPool) error {
	type parsed struct {
		pool   *IPPool
		prefix netip.Prefix
	}
	var ps []parsed
	for _, p := range pools {
		if prefix, err := p.Prefix(); err == nil {
			ps = append(ps, parsed{p, prefix})
		}
	}
	var errs []error
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			a, b := ps[i], ps[j]
			if a.prefix.Overlaps(b.prefix) {
				errs = append(errs, fmt.Errorf("IPPool %q (%s) overlaps IPPool %q (%s)",
					a.pool.Name, a.prefix, b.pool.Name, b.prefix))
			}
		}
	}
	return errors.Join(errs...)
}

// Field paths read as in the manifest: spec.ingress[0].source, metadata.labels["a/b"].

// index extends a path with a list index.
func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var plainKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// mapPath extends a path with a field name or map key, bracketing keys that would read
// as more path.
func mapPath(path, key string) string {
	if plainKeyRE.MatchString(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// Name and label rules, as Kubernetes defines them.

const (
	labelFmt         = `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
	qualifiedNameFmt = `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
)

var (
	dns1123LabelRE     = regexp.MustCompile(`^` + labelFmt + `$`)
	dns1123SubdomainRE = regexp.MustCompile(`^` + labelFmt + `(\.` + labelFmt + `)*$`)
	dns1035LabelRE     = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	qualifiedNameRE    = regexp.MustCompile(`^` + qualifiedNameFmt + `$`)
	ianaSvcNameRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	hasLetterRE        = regexp.MustCompile(`[a-z]`)
)

func isDNS1123Subdomain(s string) bool { return len(s) <= 253 && dns1123SubdomainRE.MatchString(s) }

func checkRequired(errs *FieldErrors, field, s string) bool {
	if s == "" {
		errs.add(field, s, "required")
		return false
	}
	return true
}

func checkSubdomain(errs *FieldErrors, field, s string) {
	switch {
	case !checkRequired(errs, field, s):
	case len(s) > 253:
		errs.add(field, s, "%q is longer than 253 characters", s)
	case !dns1123SubdomainRE.MatchString(s):
		errs.add(field, s, "%q is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')", s)
	}
}

func checkLabel(errs *FieldErrors, field, s string) {
	switch {
	case !checkRequired(errs, field, s):
	case len(s) > 63:
		errs.add(field, s, "%q is longer than 63 characters", s)
	case !dns1123LabelRE.MatchString(s):
		errs.add(field, s, "%q is not a valid DNS-1123 label (lower case alphanumerics and '-')", s)
	}
}

func checkDNS1035Label(errs *FieldErrors, field, s string) {
	switch {
	case !checkRequired(errs, field, s):
	case len(s) > 63:
		errs.add(field, s, "%q is longer than 63 characters", s)
	case !dns1035LabelRE.MatchString(s):
		errs.add(field, s, "%q is not a valid DNS-1035 label (lower case alphanumerics and '-', starting with a letter)", s)
	}
}

// checkPortName applies Kubernetes' IANA_SVC_NAME rule, which named ports follow.
func checkPortName(errs *FieldErrors, field, s string) {
	if len(s) > 15 || !ianaSvcNameRE.MatchString(s) || !hasLetterRE.MatchString(s) || strings.Contains(s, "--") {
		errs.add(field, s, "%q is not a valid port name (at most 15 lower case alphanumerics and '-', with a letter, no '--')", s)
	}
}

func isQualifiedName(k string) bool {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		if !isDNS1123Subdomain(prefix) {
			return false
		}
		name = n
	}
	return len(name) <= 63 && qualifiedNameRE.MatchString(name)
}

func checkQualifiedName(errs *FieldErrors, field, k string) {
	if !isQualifiedName(k) {
		errs.add(field, k, "%q is not a valid label key (an optional DNS subdomain and '/', then at most 63 alphanumerics, '-', '_' or '.')", k)
	}
}

func checkLabelValue(errs *FieldErrors, field, v string) {
	if v != "" && (len(v) > 63 || !qualifiedNameRE.MatchString(v)) {
		errs.add(field, v, "%q is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)", v)
	}
}

func checkLabels(errs *FieldErrors, field string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		checkQualifiedName(errs, mapPath(field, k), k)
		checkLabelValue(errs, mapPath(field, k), labels[k])
	}
}

func checkAnnotations(errs *FieldErrors, field string, annotations map[string]string) {
	for _, k := range sortedKeys(annotations) {
		// Kubernetes accepts upper case in annotation keys; the rest of the rule is a label key's.
		if !isQualifiedName(strings.ToLower(k)) {
			errs.add(mapPath(field, k), k, "%q is not a valid annotation key", k)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkEnum reports a value that is not one of allowed; the empty value is the caller's
// business (required, or defaulted).
func checkEnum[T ~string](errs *FieldErrors, field string, v T, allowed ...T) bool {
	if v == "" || slices.Contains(allowed, v) {
		return true
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	errs.add(field, string(v), "%q is not one of %s", string(v), strings.Join(names, ", "))
	return false
}

// checkSelector parses a Calico selector expression (the empty one is valid). global()
// selects non-namespaced endpoints, which only an entity rule's namespaceSelector may ask
// for (globalOK).
func checkSelector(errs *FieldErrors, field, s string, globalOK bool) {
	if s == "" {
		return
	}
	sel, err := selector.Parse(s)
	if err != nil {
		errs.add(field, s, "%v", err)
		return
	}
	if !globalOK && strings.Contains(sel.String(), "global()") {
		errs.add(field, s, "global() can only be used in a rule's namespaceSelector")
	}
}

// Addresses and networks. Manifests carry them as strings, as Calico's do; these helpers
// parse them with net/netip.

// parseAddr parses an IP address without a zone.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not a valid IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q must not have a zone", s)
	}
	return a, nil
}

// parseAddrPrefix parses a CIDR, or a bare address as a single-address network, keeping
// any host bits (callers decide whether those are an error).
func parseAddrPrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := parseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
	}
	return p, nil
}

// ParseNet parses a network as Calico's "nets" fields hold them: a CIDR without host
// bits set, or a bare address standing for itself alone (/32 or /128).
func ParseNet(s string) (netip.Prefix, error) {
	p, err := parseAddrPrefix(s)
	if err != nil {
		return p, err
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// ParseNets parses a list of networks with ParseNet.
func ParseNets(nets []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		p, err := ParseNet(n)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// checkNet reports a network that does not parse or has host bits set.
func checkNet(errs *FieldErrors, field, s string) (netip.Prefix, bool) {
	p, err := ParseNet(s)
	if err != nil {
		errs.add(field, s, "%v", err)
		return p, false
	}
	return p, true
}

// checkNets checks a list of networks and says which families it holds.
func checkNets(errs *FieldErrors, field string, nets []string) (v4, v6 bool) {
	for i, s := range nets {
		if p, ok := checkNet(errs, index(field, i), s); ok {
			v4 = v4 || p.Addr().Is4()
			v6 = v6 || p.Addr().Is6()
		}
	}
	return v4, v6
}

// Address families for checkAddr.
const (
	anyFamily = 0
	ipv4Only  = 4
	ipv6Only  = 6
)

// checkAddr reports an address that does not parse or is not of the wanted family.
func checkAddr(errs *FieldErrors, field, s string, family int) (netip.Addr, bool) {
	a, err := parseAddr(s)
	switch {
	case err != nil:
		errs.add(field, s, "%v", err)
		return a, false
	case family == ipv4Only && !a.Is4():
		errs.add(field, s, "%q is not an IPv4 address", s)
		return a, false
	case family == ipv6Only && !a.Is6():
		errs.add(field, s, "%q is not an IPv6 address", s)
		return a, false
	}
	return a, true
}

// checkMAC accepts a 48-bit MAC address, the only kind veth and VXLAN devices have.
func checkMAC(errs *FieldErrors, field, s string) {
	if hw, err := net.ParseMAC(s); err != nil || len(hw) != 6 {
		errs.add(field, s, "%q is not a valid MAC address (six bytes, like 66:6a:2b:00:00:01)", s)
	}
}

// checkASNumber reports an AS number of 0, which BGP reserves.
func checkASNumber(errs *FieldErrors, field string, a *ASNumber) {
	if a != nil && *a == 0 {
		errs.add(field, uint32(0), "AS number 0 is reserved; use 1-4294967295")
	}
}

// checkPortNumber reports a port outside 1-65535.
func checkPortNumber(errs *FieldErrors, field string, p int32) {
	if p < 1 || p > 65535 {
		errs.add(field, p, "port %d is out of range 1-65535", p)
	}
}
