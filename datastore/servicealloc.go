package datastore

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/api"
)

// Service address allocation, as kube-apiserver does it: a Service that needs a cluster
// IP (or a node port) and names none gets a free one, an address named explicitly must
// be free, and no two Services ever hold the same one. This file is the pure part: the
// Kubernetes rules for clusterIPs, ipFamilies and ipFamilyPolicy, and choosing free
// addresses from a set of claims. servicehook.go keeps the claims in etcd.

// serviceRanges are the CIDRs cluster IPs come from, per family, in the order the
// BGPConfiguration "default" lists them in serviceClusterIPs; the family listed first is
// the primary one (a Service that asks for none gets it). Without any, the cluster is
// IPv4 single-stack on api.DefaultServiceClusterIPRange.
type serviceRanges struct {
	primary api.IPFamily
	cidrs   map[api.IPFamily][]netip.Prefix
}

func serviceRangesFrom(cfg *api.BGPConfiguration) serviceRanges {
	r := serviceRanges{cidrs: map[api.IPFamily][]netip.Prefix{}}
	if cfg != nil {
		for _, b := range cfg.Spec.ServiceClusterIPs {
			p, err := netip.ParsePrefix(b.CIDR)
			if err != nil {
				continue // validation refuses these; BGP ignores them too
			}
			fam := familyOf(p.Addr())
			if r.primary == "" {
				r.primary = fam
			}
			r.cidrs[fam] = append(r.cidrs[fam], p.Masked())
		}
	}
	if r.primary == "" {
		r.primary = api.IPv4Family
		r.cidrs[api.IPv4Family] = []netip.Prefix{netip.MustParsePrefix(api.DefaultServiceClusterIPRange)}
	}
	return r
}

// families are the configured families, primary first.
func (r serviceRanges) families() []api.IPFamily {
	out := []api.IPFamily{r.primary}
	for _, f := range []api.IPFamily{api.IPv4Family, api.IPv6Family} {
		if f != r.primary && len(r.cidrs[f]) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func (r serviceRanges) has(f api.IPFamily) bool { return len(r.cidrs[f]) > 0 }

// contains says whether a is an address a Service may have in some range.
func (r serviceRanges) contains(a netip.Addr) bool {
	return slices.ContainsFunc(r.cidrs[familyOf(a)], func(p netip.Prefix) bool {
		_, ok := rangeOffset(p, a)
		return ok
	})
}

func (r serviceRanges) describe(f api.IPFamily) string {
	var s []string
	for _, p := range r.cidrs[f] {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

func familyOf(a netip.Addr) api.IPFamily {
	if a.Is4() {
		return api.IPv4Family
	}
	return api.IPv6Family
}

func otherFamily(f api.IPFamily) api.IPFamily {
	if f == api.IPv4Family {
		return api.IPv6Family
	}
	return api.IPv4Family
}

// maxRangeSize caps the addresses counted in a huge IPv6 range; nothing fills 2^62.
const maxRangeSize = 1 << 62

// rangeSize is how many of p's addresses a Service may have: all but the network
// address and, for IPv4, the broadcast address, as Kubernetes allocates.
func rangeSize(p netip.Prefix) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 62 {
		return maxRangeSize
	}
	n := uint64(1)<<host - 1
	if p.Addr().Is4() && n > 0 {
		n--
	}
	return n
}

// rangeOffset is a's index among p's usable addresses (rangeSize), ok false outside them.
func rangeOffset(p netip.Prefix, a netip.Addr) (uint64, bool) {
	if !p.Contains(a) {
		return 0, false
	}
	x, b := a.As16(), p.Addr().As16()
	xl, bl := binary.BigEndian.Uint64(x[8:]), binary.BigEndian.Uint64(b[8:])
	borrow := uint64(0)
	if xl < bl {
		borrow = 1
	}
	if binary.BigEndian.Uint64(x[:8])-binary.BigEndian.Uint64(b[:8])-borrow != 0 {
		return 0, false // beyond maxRangeSize
	}
	d := xl - bl
	if d == 0 || d-1 >= rangeSize(p) {
		return 0, false // the network or broadcast address
	}
	return d - 1, true
}

// rangeAddr is p's usable address number off (off < rangeSize(p)).
func rangeAddr(p netip.Prefix, off uint64) netip.Addr {
	b := p.Addr().As16()
	lo := binary.BigEndian.Uint64(b[8:])
	sum := lo + off + 1
	if sum < lo {
		binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+1)
	}
	binary.BigEndian.PutUint64(b[8:], sum)
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// pickFree returns a free offset in [0, size) (ok false when there is none), starting at
// a random point. As in Kubernetes' allocators, the lower band of a range (1/16 of it,
// 16 to 256 entries) is taken last, leaving it to addresses chosen by hand (a DNS
// Service's 10.96.0.10). taken bounds the search: it is how many offsets are not free.
func pickFree(size, taken uint64, rnd func(uint64) uint64, free func(uint64) bool) (uint64, bool) {
	if taken >= size {
		return 0, false
	}
	band := min(max(size/16, 16), 256)
	if band >= size {
		band = 0
	}
	start := band + rnd(size-band)
	// Every offset looked at but the last is taken, so this loops at most taken+1 times.
	for _, span := range [][2]uint64{{start, size}, {band, start}, {0, band}} {
		for o := span[0]; o < span[1]; o++ {
			if free(o) {
				return o, true
			}
		}
	}
	return 0, false
}

// nodePort is one claimed node port.
type nodePort struct {
	proto api.PortProtocol
	port  int32
}

func (n nodePort) String() string { return strconv.Itoa(int(n.port)) + "/" + string(n.proto) }

// serviceClaims are the addresses held, each by its owner "<namespace>/<name>".
type serviceClaims struct {
	ips   map[netip.Addr]string
	ports map[nodePort]string
}

// serviceAllocator applies the Kubernetes rules to Services and claims their addresses.
type serviceAllocator struct {
	ranges serviceRanges
	claims serviceClaims
	rnd    func(n uint64) uint64 // uniform in [0, n)
}

// release frees everything owner holds.
func (a *serviceAllocator) release(owner string) {
	for ip, o := range a.claims.ips {
		if o == owner {
			delete(a.claims.ips, ip)
		}
	}
	for np, o := range a.claims.ports {
		if o == owner {
			delete(a.claims.ports, np)
		}
	}
}

func ipField(i int) string {
	if i == 0 {
		return "spec.clusterIP"
	}
	return "spec.clusterIPs[" + strconv.Itoa(i) + "]"
}

// clusterIPs is what a Service holds: clusterIPs, or clusterIP when that is empty.
func clusterIPs(s *api.Service) []string {
	if len(s.Spec.ClusterIPs) == 0 && s.Spec.ClusterIP != "" {
		return []string{s.Spec.ClusterIP}
	}
	return s.Spec.ClusterIPs
}

func needsNodePorts(s *api.Service) bool {
	return s.Spec.Type == api.ServiceTypeNodePort || s.Spec.Type == api.ServiceTypeLoadBalancer
}

// normalize completes svc's clusterIP, clusterIPs, ipFamilies, ipFamilyPolicy and node
// ports by Kubernetes' rules, given the stored version old (nil for a new Service), short
// of the addresses still to allocate. It refuses what Kubernetes refuses: a change of an
// allocated address, families that contradict the addresses or the cluster's ranges, an
// explicit address outside the service CIDRs.
func (a *serviceAllocator) normalize(old, svc *api.Service) error {
	sp := &svc.Spec
	if sp.Type == api.ServiceTypeExternalName {
		switch {
		case len(sp.ClusterIPs) > 0:
			return fmt.Errorf("spec.clusterIPs: must be empty for type ExternalName")
		case len(sp.IPFamilies) > 0:
			return fmt.Errorf("spec.ipFamilies: must be empty for type ExternalName")
		case sp.IPFamilyPolicy != "":
			return fmt.Errorf("spec.ipFamilyPolicy: must be empty for type ExternalName")
		}
		return nil
	}
	var oldIPs []string
	if old != nil && old.Spec.Type != api.ServiceTypeExternalName {
		oldIPs = clusterIPs(old)
		if err := patchFromStored(old, svc); err != nil {
			return err
		}
	}
	sp.ClusterIPs = clusterIPs(svc)
	if sp.ClusterIP == "" && len(sp.ClusterIPs) > 0 {
		sp.ClusterIP = sp.ClusterIPs[0]
	}
	headless := sp.ClusterIP == api.ClusterIPNone
	if headless && len(sp.Selector) == 0 {
		// Kubernetes gives a headless Service without selector every family the cluster has.
		if sp.IPFamilyPolicy == "" {
			sp.IPFamilyPolicy = api.IPFamilyPolicyRequireDualStack
		}
		if len(sp.IPFamilies) == 0 {
			sp.IPFamilies = a.ranges.families()
		}
		return nil
	}
	var addrs []netip.Addr
	for i, s := range sp.ClusterIPs {
		if s == api.ClusterIPNone {
			break
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a valid IP address", ipField(i), s) // validation says so first
		}
		addrs = append(addrs, ip)
		fam := familyOf(ip)
		switch {
		case i >= len(sp.IPFamilies):
			sp.IPFamilies = append(sp.IPFamilies, fam)
		case sp.IPFamilies[i] != fam:
			return fmt.Errorf("spec.ipFamilies[%d]: %s does not match %s %s, which is %s", i, sp.IPFamilies[i], ipField(i), s, fam)
		}
	}
	policy := sp.IPFamilyPolicy
	if policy == "" && len(sp.IPFamilies) == 2 {
		policy = api.IPFamilyPolicyRequireDualStack
	}
	if policy == api.IPFamilyPolicySingleStack && len(sp.IPFamilies) > 1 {
		return fmt.Errorf("spec.ipFamilyPolicy: SingleStack, but two IP families are given (ipFamilies or clusterIPs); use PreferDualStack or RequireDualStack")
	}
	if policy == api.IPFamilyPolicyRequireDualStack && len(a.ranges.families()) < 2 && !headless {
		return fmt.Errorf("spec.ipFamilyPolicy: RequireDualStack, but the cluster has %s service CIDRs only (BGPConfiguration default spec.serviceClusterIPs lists no %s CIDR)",
			a.ranges.primary, otherFamily(a.ranges.primary))
	}
	if len(sp.IPFamilies) == 0 {
		sp.IPFamilies = []api.IPFamily{a.ranges.primary}
	}
	if len(sp.IPFamilies) == 1 && (policy == api.IPFamilyPolicyPreferDualStack || policy == api.IPFamilyPolicyRequireDualStack) {
		sp.IPFamilies = append(sp.IPFamilies, otherFamily(sp.IPFamilies[0]))
	}
	if policy == "" {
		policy = api.IPFamilyPolicySingleStack
	}
	sp.IPFamilyPolicy = policy
	for i, fam := range sp.IPFamilies {
		if a.ranges.has(fam) || headless {
			continue // Kubernetes lets a headless Service name families the cluster lacks
		}
		if i == 1 && policy == api.IPFamilyPolicyPreferDualStack && len(addrs) < 2 {
			sp.IPFamilies = sp.IPFamilies[:1] // preferred, not required: single-stack it is
			break
		}
		return fmt.Errorf("spec.ipFamilies[%d]: %s, but the cluster has no %s service CIDR (BGPConfiguration default spec.serviceClusterIPs: %s)",
			i, fam, fam, a.ranges.describe(a.ranges.primary))
	}
	for i, ip := range addrs {
		stored := slices.ContainsFunc(oldIPs, func(s string) bool { o, err := netip.ParseAddr(s); return err == nil && o == ip })
		if !stored && !a.ranges.contains(ip) {
			// Kubernetes refuses it too; an address kept from before a range change stays.
			return fmt.Errorf("%s: %s is not in the %s service CIDRs (%s; set in BGPConfiguration default spec.serviceClusterIPs)",
				ipField(i), ip, familyOf(ip), a.ranges.describe(familyOf(ip)))
		}
	}
	return nil
}

// patchFromStored applies Kubernetes' update rules to svc given its stored version old
// (neither is ExternalName): values the update leaves out are kept (so applying the same
// manifest again changes nothing), the cluster IPs may not change once set, and a
// dual-stack Service drops its second address only when its policy becomes SingleStack.
func patchFromStored(old, svc *api.Service) error {
	sp, op := &svc.Spec, &old.Spec
	oldIPs := clusterIPs(old)
	// An update without clusterIPs whose clusterIP is empty or the stored one (an older
	// manifest, or one without addresses) keeps the stored addresses.
	if len(sp.ClusterIPs) == 0 && len(oldIPs) > 0 && (sp.ClusterIP == "" || sameAddr(sp.ClusterIP, oldIPs[0])) {
		sp.ClusterIPs = slices.Clone(oldIPs)
		sp.ClusterIP = oldIPs[0]
		if len(sp.IPFamilies) == 0 {
			sp.IPFamilies = slices.Clone(op.IPFamilies)
		}
		if sp.IPFamilyPolicy == "" {
			sp.IPFamilyPolicy = op.IPFamilyPolicy
		}
	}
	sp.ClusterIPs = clusterIPs(svc)
	if sp.IPFamilyPolicy == api.IPFamilyPolicySingleStack {
		// Asking for SingleStack is asking to drop the second family.
		if len(sp.ClusterIPs) == 2 && slices.Equal(sp.ClusterIPs, oldIPs) {
			sp.ClusterIPs = sp.ClusterIPs[:1]
		}
		if len(sp.IPFamilies) == 2 && slices.Equal(sp.IPFamilies, op.IPFamilies) {
			sp.IPFamilies = sp.IPFamilies[:1]
		}
	} else if len(oldIPs) == 2 && len(sp.ClusterIPs) == 1 {
		return fmt.Errorf("spec.clusterIPs: may drop its second address only with ipFamilyPolicy SingleStack")
	}
	for i := range min(len(oldIPs), len(sp.ClusterIPs)) {
		if !sameAddr(oldIPs[i], sp.ClusterIPs[i]) {
			return fmt.Errorf("%s: may not change once set (stored %s, given %s); delete the Service and create it again to change it",
				ipField(i), oldIPs[i], sp.ClusterIPs[i])
		}
	}
	if needsNodePorts(old) && needsNodePorts(svc) {
		// As Kubernetes: a port left without nodePort keeps the one its namesake had,
		// unless another port of the update names that one.
		used := map[int32]bool{}
		for _, p := range sp.Ports {
			if p.NodePort != 0 {
				used[p.NodePort] = true
			}
		}
		had := map[string]int32{}
		for _, p := range op.Ports {
			had[p.Name] = p.NodePort
		}
		for i := range sp.Ports {
			if p := &sp.Ports[i]; p.NodePort == 0 && !used[had[p.Name]] {
				p.NodePort = had[p.Name]
			}
		}
	}
	if old != nil && old.NeedsHealthCheckNodePort() && svc.NeedsHealthCheckNodePort() && sp.HealthCheckNodePort == 0 {
		sp.HealthCheckNodePort = op.HealthCheckNodePort
	}
	return nil
}

func sameAddr(a, b string) bool {
	x, errX := netip.ParseAddr(a)
	y, errY := netip.ParseAddr(b)
	if errX != nil || errY != nil {
		return a == b
	}
	return x == y
}

// claimExplicit claims the addresses svc (normalized) names itself, for owner.
func (a *serviceAllocator) claimExplicit(owner string, svc *api.Service) error {
	for i, s := range svc.Spec.ClusterIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue // "None"
		}
		if o, ok := a.claims.ips[ip]; ok {
			return fmt.Errorf("%s: %s is already allocated to Service %s", ipField(i), ip, o)
		}
		a.claims.ips[ip] = owner
	}
	for i, p := range svc.Spec.Ports {
		if p.NodePort == 0 {
			continue
		}
		np := nodePort{p.Protocol, p.NodePort}
		switch o, ok := a.claims.ports[np]; {
		case ok && o == owner:
			return fmt.Errorf("spec.ports[%d].nodePort: %s is used by another port of this Service", i, np)
		case ok:
			return fmt.Errorf("spec.ports[%d].nodePort: %s is already allocated to Service %s", i, np, o)
		}
		a.claims.ports[np] = owner
	}
	if hc := svc.Spec.HealthCheckNodePort; hc != 0 {
		np := nodePort{api.PortProtocolTCP, hc}
		switch o, ok := a.claims.ports[np]; {
		case ok && o == owner:
			return fmt.Errorf("spec.healthCheckNodePort: %s is used by a port of this Service", np)
		case ok:
			return fmt.Errorf("spec.healthCheckNodePort: %s is already allocated to Service %s", np, o)
		}
		a.claims.ports[np] = owner
	}
	return nil
}

// allocate gives svc (normalized, its explicit addresses claimed) an address of each
// family it asks for and lacks, and a node port to each port that needs one.
func (a *serviceAllocator) allocate(owner string, svc *api.Service) error {
	sp := &svc.Spec
	if sp.Type == api.ServiceTypeExternalName {
		return nil
	}
	if sp.ClusterIP != api.ClusterIPNone {
		for i := len(sp.ClusterIPs); i < len(sp.IPFamilies); i++ {
			ip, err := a.pickIP(sp.IPFamilies[i])
			if err != nil {
				return fmt.Errorf("%s: %w", ipField(i), err)
			}
			a.claims.ips[ip] = owner
			sp.ClusterIPs = append(sp.ClusterIPs, ip.String())
		}
		if len(sp.ClusterIPs) > 0 {
			sp.ClusterIP = sp.ClusterIPs[0]
		}
	}
	if svc.NeedsHealthCheckNodePort() && sp.HealthCheckNodePort == 0 {
		n, err := a.pickNodePort(api.PortProtocolTCP)
		if err != nil {
			return fmt.Errorf("spec.healthCheckNodePort: %w", err)
		}
		sp.HealthCheckNodePort = n
		a.claims.ports[nodePort{api.PortProtocolTCP, n}] = owner
	}
	if !needsNodePorts(svc) {
		return nil
	}
	// As Kubernetes: ports with the same number (TCP and UDP 53, say) share a node port.
	byPort := map[int32]int32{}
	for _, p := range sp.Ports {
		if p.NodePort != 0 && byPort[p.Port] == 0 {
			byPort[p.Port] = p.NodePort
		}
	}
	for i := range sp.Ports {
		p := &sp.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		if n := byPort[p.Port]; n != 0 {
			if _, taken := a.claims.ports[nodePort{p.Protocol, n}]; !taken {
				p.NodePort = n
			}
		}
		if p.NodePort == 0 {
			n, err := a.pickNodePort(p.Protocol)
			if err != nil {
				return fmt.Errorf("spec.ports[%d].nodePort: %w", i, err)
			}
			p.NodePort = n
			if byPort[p.Port] == 0 {
				byPort[p.Port] = n
			}
		}
		a.claims.ports[nodePort{p.Protocol, p.NodePort}] = owner
	}
	return nil
}

// pickIP chooses a free address of family fam, from its ranges in order.
func (a *serviceAllocator) pickIP(fam api.IPFamily) (netip.Addr, error) {
	var total uint64
	for _, p := range a.ranges.cidrs[fam] {
		size := rangeSize(p)
		total += size
		var taken uint64
		for ip := range a.claims.ips {
			if _, ok := rangeOffset(p, ip); ok {
				taken++
			}
		}
		off, ok := pickFree(size, taken, a.rnd, func(o uint64) bool {
			_, held := a.claims.ips[rangeAddr(p, o)]
			return !held
		})
		if ok {
			return rangeAddr(p, off), nil
		}
	}
	if !a.ranges.has(fam) {
		return netip.Addr{}, fmt.Errorf("the cluster has no %s service CIDR", fam)
	}
	return netip.Addr{}, fmt.Errorf("no free %s cluster IP: the service CIDRs %s are full (%d addresses, all allocated)",
		fam, a.ranges.describe(fam), total)
}

// pickNodePort chooses a free node port for proto in api.NodePortMin-NodePortMax.
func (a *serviceAllocator) pickNodePort(proto api.PortProtocol) (int32, error) {
	size := uint64(api.NodePortMax - api.NodePortMin + 1)
	var taken uint64
	for np := range a.claims.ports {
		if np.proto == proto {
			taken++
		}
	}
	off, ok := pickFree(size, taken, a.rnd, func(o uint64) bool {
		_, held := a.claims.ports[nodePort{proto, api.NodePortMin + int32(o)}]
		return !held
	})
	if !ok {
		return 0, fmt.Errorf("no free %s node port: %d-%d are all allocated", proto, api.NodePortMin, api.NodePortMax)
	}
	return api.NodePortMin + int32(off), nil
}
