package proxy

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// TableName is the nftables table the proxy owns, in the ip and ip6 families. Nothing
// outside it is touched.
const TableName = "tabby"

// DefaultMasqueradeMark is the packet mark bit that asks postrouting to masquerade.
const DefaultMasqueradeMark = 0x4000

// Names of the chains and maps every tabby table has.
const (
	ChainNATPrerouting  = "nat-prerouting"
	ChainNATOutput      = "nat-output"
	ChainNATPostrouting = "nat-postrouting"
	ChainFilterInput    = "filter-input"
	ChainFilterForward  = "filter-forward"
	ChainFilterOutput   = "filter-output"
	ChainServices       = "services"
	ChainRejectCheck    = "reject-check"
	ChainReject         = "reject-chain"
	ChainMasquerading   = "masquerading"
	ChainMarkMasq       = "mark-for-masquerade"
	MapServiceIPs       = "service-ips"
	MapServiceEndpoints = "service-endpoints"
	MapNoEndpoints      = "no-endpoint-services"
	// NodePorts: "l4proto . dport" on any local address of the node.
	MapNodePorts           = "service-nodeports"
	MapNodePortEndpoints   = "nodeport-endpoints"
	MapNoEndpointNodePorts = "no-endpoint-nodeports"
	// The endpoints of Service ports without affinity, DNATed to straight from a lookup,
	// one map per transport protocol (serviceDNATMap, nodePortDNATMap):
	// "frontend . l4proto . port . index" (or "l4proto . nodeport . index") to
	// "address . port".
	MapServiceDNATPrefix  = "service-dnat-"
	MapNodePortDNATPrefix = "nodeport-dnat-"
	// SetHairpin holds "address . address" of every endpoint: a connection it makes to a
	// Service and that lands on itself is masqueraded.
	SetHairpin = "hairpin"
	// SetPodCIDRs holds the pod CIDRs (RenderConfig.PodCIDRs): traffic from elsewhere is
	// masqueraded.
	SetPodCIDRs = "pod-cidrs"
)

// ElementKey names one map element: the map and its key, "addr . proto . port".
type ElementKey struct {
	Map, Key string
}

// Ruleset is the content of one family's tabby table, as plain values: what the
// table must hold for an LBState. Render makes it; Plan and PlanFull turn it into a
// knftables transaction.
type Ruleset struct {
	Family knftables.Family
	// Chains holds every regular (hookless) chain and its rules.
	Chains map[string][]string
	// Sets holds the ClientIP affinity sets and their timeouts.
	Sets map[string]time.Duration
	// Elements holds the elements of the fixed maps and sets: a map element's value (a
	// verdict, or "address . port" in the DNAT maps), "" for a set element.
	Elements map[ElementKey]string
}

// RenderConfig says how to render a Ruleset.
type RenderConfig struct {
	// IPv6 renders the ip6 table (IPv6 frontends and backends); otherwise the ip table.
	IPv6 bool
	// MasqueradeMark is the mark bit for masquerade (0: DefaultMasqueradeMark).
	MasqueradeMark uint32
	// PodCIDRs are the IP pools' CIDRs (kube-proxy's --cluster-cidr). Traffic to a Service
	// from elsewhere is masqueraded, so that replies come back through this node; none
	// means such traffic to a cluster IP keeps its source (NodePorts of
	// externalTrafficPolicy Cluster are masqueraded anyway).
	PodCIDRs []netip.Prefix
}

type familyWords struct {
	family   knftables.Family
	ip       string // "ip" or "ip6" in match expressions
	addrType string
	loopback string // the loopback range NodePorts are not served on
	// outside marks for masquerade traffic from outside the pod CIDRs ("" without pod CIDRs).
	outside string
}

func (rs *Ruleset) words() familyWords {
	return RenderConfig{IPv6: rs.Family == knftables.IPv6Family}.words()
}

func (c RenderConfig) words() familyWords {
	w := familyWords{knftables.IPv4Family, "ip", "ipv4_addr", "127.0.0.0/8", ""}
	if c.IPv6 {
		w = familyWords{knftables.IPv6Family, "ip6", "ipv6_addr", "::1", ""}
	}
	if len(c.podCIDRs()) > 0 {
		w.outside = w.ip + " saddr != @" + SetPodCIDRs + " jump " + ChainMarkMasq
	}
	return w
}

// podCIDRs returns the pod CIDRs of c's family, masked, sorted, without those inside
// another (an interval set refuses overlaps).
func (c RenderConfig) podCIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.PodCIDRs {
		if p.IsValid() && p.Addr().Unmap().Is6() == c.IPv6 {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.DeleteFunc(slices.Compact(out), func(p netip.Prefix) bool {
		return slices.ContainsFunc(out, func(o netip.Prefix) bool { return o.Bits() < p.Bits() && o.Contains(p.Addr()) })
	})
}

// Render returns the tabby table of one family for st: the fixed chains, maps and sets,
// and per Service port with frontends of the family its map elements (with affinity also
// a service chain, and a chain and a set per backend), or a reject element when it has no
// backend of the family (see addPort).
func Render(st *LBState, c RenderConfig) *Ruleset {
	w := c.words()
	mark := c.MasqueradeMark
	if mark == 0 {
		mark = DefaultMasqueradeMark
	}
	n := 0
	for i := range st.Ports {
		n += 1 + len(st.Ports[i].Backends)
	}
	rs := &Ruleset{Family: w.family, Chains: make(map[string][]string, n), Sets: map[string]time.Duration{}, Elements: make(map[ElementKey]string, n)}
	maps.Copy(rs.Chains, fixedChains(w, mark))
	for _, p := range c.podCIDRs() {
		rs.Elements[ElementKey{SetPodCIDRs, p.String()}] = ""
	}
	for i := range st.Ports {
		rs.addPort(&st.Ports[i], w)
	}
	return rs
}

// fixedChains returns the regular chains every table has.
func fixedChains(w familyWords, mark uint32) map[string][]string {
	m := fmt.Sprintf("0x%x", mark)
	return map[string][]string{
		ChainServices: {
			fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", w.ip, MapServiceIPs),
			fmt.Sprintf("fib daddr type local %s daddr != %s meta l4proto . th dport vmap @%s", w.ip, w.loopback, MapNodePorts),
		},
		ChainRejectCheck: {
			fmt.Sprintf("ct state new %s daddr . meta l4proto . th dport vmap @%s", w.ip, MapNoEndpoints),
			fmt.Sprintf("ct state new fib daddr type local %s daddr != %s meta l4proto . th dport vmap @%s", w.ip, w.loopback, MapNoEndpointNodePorts),
		},
		ChainReject: {"meta l4proto tcp reject with tcp reset", "reject"},
		ChainMasquerading: {
			fmt.Sprintf("ct status dnat %s saddr . %s daddr @%s jump %s", w.ip, w.ip, SetHairpin, ChainMarkMasq),
			"meta mark & " + m + " == 0 return",
			"meta mark set meta mark ^ " + m,
			"masquerade fully-random",
		},
		ChainMarkMasq: {"meta mark set meta mark | " + m},
	}
}

// dnatProtocols are the transport protocols of the DNAT maps: a Service port's protocol,
// lower case.
var dnatProtocols = []string{"tcp", "udp", "sctp"}

func serviceDNATMap(proto string) string  { return MapServiceDNATPrefix + proto }
func nodePortDNATMap(proto string) string { return MapNodePortDNATPrefix + proto }

// fixedMaps are the maps every table has.
var fixedMaps = func() []string {
	m := []string{MapServiceIPs, MapServiceEndpoints, MapNoEndpoints, MapNodePorts, MapNodePortEndpoints, MapNoEndpointNodePorts}
	for _, proto := range dnatProtocols {
		m = append(m, serviceDNATMap(proto), nodePortDNATMap(proto))
	}
	return m
}()

// fixedSets are the sets every table has.
var fixedSets = []string{SetPodCIDRs, SetHairpin}

type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
	jump     string
}

// baseChains are the hooks into the kernel: DNAT of new connections from workloads
// (prerouting) and from the node (output); the reject check before them; masquerade in
// postrouting.
var baseChains = []baseChain{
	{ChainNATPrerouting, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, ChainServices},
	{ChainNATOutput, knftables.NATType, knftables.OutputHook, knftables.DNATPriority, ChainServices},
	{ChainNATPostrouting, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, ChainMasquerading},
	{ChainFilterInput, knftables.FilterType, knftables.InputHook, "-110", ChainRejectCheck},
	{ChainFilterForward, knftables.FilterType, knftables.ForwardHook, "-110", ChainRejectCheck},
	{ChainFilterOutput, knftables.FilterType, knftables.OutputHook, "-110", ChainRejectCheck},
}

// objName is a chain or set name for the port key (and backend): prefix, a hash that
// keeps names unique, and the readable key. nft identifiers allow letters, digits and
// "/_-." after the first letter, so an IPv6 address's colons become dots.
func objName(prefix string, k PortKey, b *Backend, extra string) string {
	readable := k.Namespace + "/" + k.Name + "/" + strings.ToLower(string(k.Protocol)) + "/" + k.Port
	if k.External {
		readable += "/ext"
	}
	if b != nil {
		readable += "__" + strings.ReplaceAll(b.Addr.String(), ":", ".") + "/" + strconv.Itoa(int(b.Port))
	}
	full := k.String()
	if b != nil {
		full += "|" + b.String()
	}
	sum := sha256.Sum256([]byte(full + "|" + extra))
	h := base32.StdEncoding.EncodeToString(sum[:5]) // 8 characters
	return prefix + "-" + h + "-" + readable
}

// pickChain is the chain that picks one of n endpoints at random for a Service port
// with ClientIP affinity: it looks the frontend and a random number below n up in
// MapServiceEndpoints, whose elements go to the endpoint chains (which record the
// client). It is shared by every such port with n backends, so that the kernel's
// verdict-map loop checks stay cheap (see addPort). It first marks traffic from outside
// the pod CIDRs for masquerade.
func pickChain(n int) string { return "pick-" + strconv.Itoa(n) }

// nodePortPickChain is pickChain for a NodePort, looked up by protocol and port (the
// destination is any address of the node).
func nodePortPickChain(n int) string { return "pick-nodeport-" + strconv.Itoa(n) }

// dnatChain picks one of n endpoints of a Service port without affinity and DNATs to it
// in one rule per transport protocol, from the protocol's serviceDNATMap: no chain per
// endpoint.
func dnatChain(n int) string { return "dnat-" + strconv.Itoa(n) }

// nodePortDNATChain is dnatChain for a NodePort, from nodePortDNATMap.
func nodePortDNATChain(n int) string { return "dnat-nodeport-" + strconv.Itoa(n) }

// sharedChain says whether a chain is one of those shared by every Service port with as
// many backends (pickChain, dnatChain and their NodePort twins).
func sharedChain(name string) bool {
	return strings.HasPrefix(name, "pick-") || strings.HasPrefix(name, "dnat-")
}

// addPicks adds the shared pick or DNAT chains p needs in the family of w, if missing.
// PlanChange calls it for every port of a table, so it builds rules only when missing.
func addPicks(chains map[string][]string, p *PortLB, w familyWords) {
	v6 := w.family == knftables.IPv6Family
	n := p.countOf(v6)
	if n == 0 {
		return
	}
	pick, npPick := dnatChain(n), nodePortDNATChain(n)
	if p.Affinity > 0 {
		pick, npPick = pickChain(n), nodePortPickChain(n)
	}
	if _, ok := chains[pick]; !ok && p.hasFrontendOf(v6) {
		var rules []string
		if w.outside != "" {
			rules = append(rules, w.outside)
		}
		if p.Affinity > 0 {
			rules = append(rules, fmt.Sprintf("%s daddr . meta l4proto . th dport . numgen random mod %d vmap @%s", w.ip, n, MapServiceEndpoints))
		} else {
			// nft makes each rule match only its map's protocol (see addFixed).
			for _, proto := range dnatProtocols {
				rules = append(rules, fmt.Sprintf("dnat %s to %s daddr . meta l4proto . th dport . numgen random mod %d map @%s", w.ip, w.ip, n, serviceDNATMap(proto)))
			}
		}
		chains[pick] = rules
	}
	if _, ok := chains[npPick]; !ok && p.hasNodePortOf(v6) {
		var rules []string
		if p.Affinity > 0 {
			rules = append(rules, fmt.Sprintf("meta l4proto . th dport . numgen random mod %d vmap @%s", n, MapNodePortEndpoints))
		} else {
			for _, proto := range dnatProtocols {
				rules = append(rules, fmt.Sprintf("dnat %s to meta l4proto . th dport . numgen random mod %d map @%s", w.ip, n, nodePortDNATMap(proto)))
			}
		}
		chains[npPick] = rules
	}
}

// addPort adds one Service port. Its frontends go, through MapServiceIPs, to the DNAT
// chain of its backend count, which looks the frontend and a random number below the
// count up in the DNAT map of its protocol and DNATs to the endpoint found: a Service costs map
// elements, not chains, so a change to it is a few elements, and nft, which reads every
// chain of the table before it writes, stays fast at 10k Services. With ClientIP affinity
// the frontends go to a service chain of its own, which first sends a known client to its
// endpoint chain and otherwise goes to the pick chain of the count; that looks the
// endpoint chain up in MapServiceEndpoints, and the endpoint chain records the client.
// One anonymous "numgen ... vmap { }" per service, as kube-proxy writes it, made loading
// 10k Services take minutes on this kernel: every jump into a chain makes the kernel walk
// every verdict map of the table and its bindings, so the cost of a table grows with the
// square of its verdict maps. Here the table has six verdict maps, bound by few rules.
func (rs *Ruleset) addPort(p *PortLB, w familyWords) {
	var fronts []string
	for _, a := range p.Frontends {
		if a.Is6() == (w.family == knftables.IPv6Family) {
			fronts = append(fronts, a.String())
		}
	}
	v6 := w.family == knftables.IPv6Family
	np := p.hasNodePortOf(v6)
	if len(fronts) == 0 && !np {
		return
	}
	proto := strings.ToLower(string(p.Protocol))
	port := strconv.Itoa(int(p.Port))
	nodePort := proto + " . " + strconv.Itoa(int(p.NodePort))
	backends := p.BackendsOf(v6)
	if len(backends) == 0 {
		for _, f := range fronts {
			rs.Elements[ElementKey{MapNoEndpoints, f + " . " + proto + " . " + port}] = "goto " + ChainReject
		}
		if np {
			rs.Elements[ElementKey{MapNoEndpointNodePorts, nodePort}] = "goto " + ChainReject
		}
		return
	}
	addPicks(rs.Chains, p, w)
	target, npTarget := dnatChain(len(backends)), nodePortDNATChain(len(backends))
	if p.Affinity > 0 {
		target, npTarget = pickChain(len(backends)), nodePortPickChain(len(backends))
	}
	var affinity []string
	// endpoints are the endpoint chains (with affinity) or "address . port" (without)
	// of the backends.
	endpoints := make(map[Backend]string, len(backends))
	for i := range backends {
		b := &backends[i]
		rs.Elements[ElementKey{SetHairpin, b.Addr.String() + " . " + b.Addr.String()}] = ""
		idx := strconv.Itoa(i)
		if p.Affinity == 0 {
			ep := b.Addr.String() + " . " + strconv.Itoa(int(b.Port))
			endpoints[*b] = ep
			for _, f := range fronts {
				rs.Elements[ElementKey{serviceDNATMap(proto), f + " . " + proto + " . " + port + " . " + idx}] = ep
			}
			if np {
				rs.Elements[ElementKey{nodePortDNATMap(proto), nodePort + " . " + idx}] = ep
			}
			continue
		}
		epChain := objName("endpoint", p.Key, b, "")
		set := objName("affinity", p.Key, b, p.Affinity.String())
		rs.Sets[set] = p.Affinity
		affinity = append(affinity, fmt.Sprintf("%s saddr @%s goto %s", w.ip, set, epChain))
		rs.Chains[epChain] = []string{
			fmt.Sprintf("update @%s { %s saddr }", set, w.ip),
			"meta l4proto " + proto + " dnat to " + b.String(),
		}
		endpoints[*b] = epChain
		for _, f := range fronts {
			rs.Elements[ElementKey{MapServiceEndpoints, f + " . " + proto + " . " + port + " . " + idx}] = "goto " + epChain
		}
		if np {
			rs.Elements[ElementKey{MapNodePortEndpoints, nodePort + " . " + idx}] = "goto " + epChain
		}
	}
	if p.Affinity > 0 && len(fronts) > 0 {
		svc := objName("service", p.Key, nil, "")
		var rules []string
		if w.outside != "" {
			rules = append(rules, w.outside)
		}
		rs.Chains[svc] = append(append(rules, affinity...), "goto "+target)
		target = svc
	}
	if p.ExternalLocal {
		if len(fronts) > 0 {
			ext := objName("external", p.Key, nil, "")
			rs.Chains[ext] = rs.localRules(p, w, target, endpoints)
			target = ext
		}
		if np {
			npChain := objName("nodeport", p.Key, nil, "")
			rs.Chains[npChain] = rs.localRules(p, w, npTarget, endpoints)
			npTarget = npChain
		}
	} else if np {
		// externalTrafficPolicy Cluster: a NodePort is masqueraded whatever the source,
		// so that the reply of an endpoint on another node comes back through this one.
		npChain := objName("nodeport", p.Key, nil, "")
		rs.Chains[npChain] = append(append([]string{"jump " + ChainMarkMasq}, affinity...), "goto "+npTarget)
		npTarget = npChain
	}
	for _, f := range fronts {
		rs.Elements[ElementKey{MapServiceIPs, f + " . " + proto + " . " + port}] = "goto " + target
	}
	if np {
		rs.Elements[ElementKey{MapNodePorts, nodePort}] = "goto " + npTarget
	}
}

// localRules are the rules of an externalTrafficPolicy Local chain (kube-proxy's external
// chain): traffic from the pod CIDRs and from the node itself goes to cluster, every
// backend (the node's own traffic masqueraded); the rest keeps its source and goes to a
// local backend (sticky with affinity), or is dropped when the node has none. endpoints
// are the backends' endpoint chains (with affinity) or "address . port" to DNAT to.
func (rs *Ruleset) localRules(p *PortLB, w familyWords, cluster string, endpoints map[Backend]string) []string {
	rules := []string{
		w.ip + " saddr @" + SetPodCIDRs + " goto " + cluster,
		"fib saddr type local jump " + ChainMarkMasq,
		"fib saddr type local goto " + cluster,
	}
	var picks []string
	for _, b := range p.LocalBackends {
		ep, ok := endpoints[b]
		if !ok {
			continue // another family
		}
		if p.Affinity > 0 {
			rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", w.ip, objName("affinity", p.Key, &b, p.Affinity.String()), ep))
			ep = "goto " + ep
		}
		picks = append(picks, strconv.Itoa(len(picks))+" : "+ep)
	}
	switch {
	case len(picks) == 0:
		return append(rules, "drop")
	case p.Affinity > 0:
		return append(rules, fmt.Sprintf("numgen random mod %d vmap { %s }", len(picks), strings.Join(picks, ", ")))
	default:
		// A DNAT to a port needs the transport protocol matched first.
		return append(rules, fmt.Sprintf("meta l4proto %s dnat %s to numgen random mod %d map { %s }",
			strings.ToLower(string(p.Protocol)), w.ip, len(picks), strings.Join(picks, ", ")))
	}
}

func (rs *Ruleset) table() *knftables.Table {
	return &knftables.Table{Family: rs.Family, Name: TableName, Comment: knftables.PtrTo("tabby: Service load balancing")}
}

func (rs *Ruleset) addFixed(tx *knftables.Transaction) {
	tx.Add(rs.table())
	w := rs.words()
	mapType := w.addrType + " . inet_proto . inet_service : verdict"
	for _, m := range []string{MapServiceIPs, MapNoEndpoints} {
		tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: m, Type: mapType})
	}
	tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: MapServiceEndpoints,
		TypeOf: w.ip + " daddr . meta l4proto . th dport . numgen random mod 1 : verdict"})
	for _, m := range []string{MapNodePorts, MapNoEndpointNodePorts} {
		tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: m, Type: "inet_proto . inet_service : verdict"})
	}
	tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: MapNodePortEndpoints,
		TypeOf: "meta l4proto . th dport . numgen random mod 1 : verdict"})
	// The DNAT maps' values are "address . port": a port has to be typed as a protocol's
	// ("tcp dport"), which makes nft match that protocol in every rule that looks the map
	// up, hence a map per protocol. ("th dport" would not: but nft 1.0.6 cannot read a
	// map so declared back, and every later rule naming it fails with "conflicting
	// protocols specified: ip vs. th".)
	for _, proto := range dnatProtocols {
		tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: serviceDNATMap(proto),
			TypeOf: w.ip + " daddr . meta l4proto . th dport . numgen random mod 1 : " + w.ip + " daddr . " + proto + " dport"})
		tx.Add(&knftables.Map{Family: rs.Family, Table: TableName, Name: nodePortDNATMap(proto),
			TypeOf: "meta l4proto . th dport . numgen random mod 1 : " + w.ip + " daddr . " + proto + " dport"})
	}
	tx.Add(&knftables.Set{Family: rs.Family, Table: TableName, Name: SetPodCIDRs, Type: w.addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
	tx.Add(&knftables.Set{Family: rs.Family, Table: TableName, Name: SetHairpin, Type: w.addrType + " . " + w.addrType})
	for _, bc := range baseChains {
		tx.Add(&knftables.Chain{Family: rs.Family, Table: TableName, Name: bc.name, Type: &bc.typ, Hook: &bc.hook, Priority: &bc.priority})
	}
}

func (rs *Ruleset) addBaseRules(tx *knftables.Transaction) {
	for _, bc := range baseChains {
		tx.Flush(&knftables.Chain{Family: rs.Family, Table: TableName, Name: bc.name})
		tx.Add(&knftables.Rule{Family: rs.Family, Table: TableName, Chain: bc.name, Rule: "jump " + bc.jump})
	}
}

func (rs *Ruleset) setTx(tx *knftables.Transaction, verb func(knftables.Object), name string) {
	to := rs.Sets[name]
	verb(&knftables.Set{Family: rs.Family, Table: TableName, Name: name, Type: rs.words().addrType, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &to})
}

func (rs *Ruleset) fillChain(tx *knftables.Transaction, name string, flush bool) {
	c := &knftables.Chain{Family: rs.Family, Table: TableName, Name: name}
	if flush {
		tx.Flush(c)
	}
	for _, r := range rs.Chains[name] {
		tx.Add(&knftables.Rule{Family: rs.Family, Table: TableName, Chain: name, Rule: r})
	}
}

func (rs *Ruleset) element(k ElementKey, value string) *knftables.Element {
	e := &knftables.Element{Family: rs.Family, Table: TableName, Map: k.Map, Key: strings.Split(k.Key, " . ")}
	if slices.Contains(fixedSets, k.Map) {
		e.Map, e.Set = "", k.Map
	}
	if value != "" {
		e.Value = strings.Split(value, " . ")
	}
	return e
}

// PlanFull writes into tx the whole table, replacing what the kernel holds: existing is
// what the table has now (knftables ListAll: object type → names; nil or empty for no
// table). Every chain is flushed and rewritten, the maps are refilled, and chains, sets
// and maps the table should not hold are deleted. Affinity sets that stay keep their
// entries, and the table itself is never deleted, so established connections are kept.
func (rs *Ruleset) PlanFull(tx *knftables.Transaction, existing map[string][]string) {
	rs.addFixed(tx)
	for _, name := range slices.Sorted(maps.Keys(rs.Sets)) {
		rs.setTx(tx, tx.Add, name)
	}
	for _, name := range slices.Sorted(maps.Keys(rs.Chains)) {
		tx.Add(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	rs.addBaseRules(tx)
	for _, name := range slices.Sorted(maps.Keys(rs.Chains)) {
		rs.fillChain(tx, name, true)
	}
	for _, m := range fixedMaps {
		tx.Flush(&knftables.Map{Family: rs.Family, Table: TableName, Name: m})
	}
	for _, set := range fixedSets {
		tx.Flush(&knftables.Set{Family: rs.Family, Table: TableName, Name: set})
	}
	for _, k := range sortedElements(rs.Elements) {
		tx.Add(rs.element(k, rs.Elements[k]))
	}
	base := map[string]bool{}
	for _, bc := range baseChains {
		base[bc.name] = true
	}
	var stale []string
	for _, name := range existing["chain"] {
		if _, ok := rs.Chains[name]; !ok && !base[name] {
			stale = append(stale, name)
		}
	}
	slices.Sort(stale)
	for _, name := range stale {
		tx.Flush(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	for _, name := range stale {
		tx.Delete(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	for _, kind := range []string{"set", "map"} {
		for _, name := range slices.Sorted(slices.Values(existing[kind])) {
			_, keep := rs.Sets[name]
			keep = keep || slices.Contains(fixedSets, name)
			if kind == "map" {
				keep = slices.Contains(fixedMaps, name)
			}
			if !keep {
				if kind == "set" {
					tx.Delete(&knftables.Set{Family: rs.Family, Table: TableName, Name: name})
				} else {
					tx.Delete(&knftables.Map{Family: rs.Family, Table: TableName, Name: name})
				}
			}
		}
	}
}

// Plan writes into tx only the changes from old, the Ruleset last applied, to rs: new
// sets and chains, chains whose rules differ (flushed and rewritten), map elements added,
// changed or gone, then chains and sets no longer wanted. A nil old plans the whole table
// as PlanFull does for an empty kernel.
func (rs *Ruleset) Plan(tx *knftables.Transaction, old *Ruleset) {
	if old == nil {
		rs.PlanFull(tx, nil)
		return
	}
	// Only what differs is sorted (for a stable transaction text): a one-Service change
	// in a table of 10k Services sorts a handful of names, not 60k.
	newSets, goneSets := keysOnlyIn(rs.Sets, old.Sets), keysOnlyIn(old.Sets, rs.Sets)
	added, gone := keysOnlyIn(rs.Chains, old.Chains), keysOnlyIn(old.Chains, rs.Chains)
	var changed []string
	for name, rules := range rs.Chains {
		if oldRules, ok := old.Chains[name]; ok && !slices.Equal(oldRules, rules) {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	var delElems, addElems []ElementKey
	for k, v := range old.Elements {
		if nv, ok := rs.Elements[k]; !ok || nv != v {
			delElems = append(delElems, k)
		}
	}
	for k, v := range rs.Elements {
		if ov, ok := old.Elements[k]; !ok || ov != v {
			addElems = append(addElems, k)
		}
	}
	slices.SortFunc(delElems, ElementKey.compare)
	slices.SortFunc(addElems, ElementKey.compare)

	for _, name := range newSets {
		rs.setTx(tx, tx.Add, name)
	}
	for _, name := range added {
		tx.Add(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	for _, name := range added {
		rs.fillChain(tx, name, false)
	}
	for _, name := range changed {
		rs.fillChain(tx, name, true)
	}
	for _, k := range delElems {
		tx.Delete(rs.element(k, ""))
	}
	for _, k := range addElems {
		tx.Add(rs.element(k, rs.Elements[k]))
	}
	for _, name := range gone {
		tx.Flush(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Family: rs.Family, Table: TableName, Name: name})
	}
	for _, name := range goneSets {
		old.setTx(tx, tx.Delete, name)
	}
}

// keysOnlyIn returns the keys of a that b lacks, sorted.
func keysOnlyIn[V any](a, b map[string]V) []string {
	var out []string
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (k ElementKey) compare(o ElementKey) int {
	return cmp.Or(strings.Compare(k.Map, o.Map), strings.Compare(k.Key, o.Key))
}

func sortedElements(m map[ElementKey]string) []ElementKey {
	return slices.SortedFunc(maps.Keys(m), ElementKey.compare)
}

// Change is a planned change of some Service ports: the rules of the ports that
// differ, before and after, with the pick chains of the whole table before and after.
// Plan it with PlanChange and, once nft has run it, fold it into the applied Ruleset
// with Apply.
type Change struct {
	before, after *Ruleset
}

// PlanChange writes into tx the change from old to st, where applied is the Ruleset of
// old as it was written: it renders only the ports that differ between the two states
// (a one-Service change in a table of 10k Services renders one Service), so it costs a
// walk over both port lists, not a render of the table. Both states must be sorted by
// Key, as Desired returns them.
func PlanChange(tx *knftables.Transaction, applied *Ruleset, old, st *LBState, c RenderConfig) *Change {
	before, after := ChangedPorts(old, st)
	ch := &Change{before: Render(before, c), after: Render(after, c)}
	// The pick and DNAT chains are shared: compare those of the whole tables.
	for _, rs := range []*Ruleset{ch.before, ch.after} {
		for name := range rs.Chains {
			if sharedChain(name) {
				delete(rs.Chains, name)
			}
		}
	}
	for name, rules := range applied.Chains {
		if sharedChain(name) {
			ch.before.Chains[name] = rules
		}
	}
	w := c.words()
	for p := range st.Ports {
		addPicks(ch.after.Chains, &st.Ports[p], w)
	}
	// A hairpin element is shared by every port with that endpoint address: one that
	// comes with the changed ports may be there already, and one that leaves them stays
	// while another port still has it.
	for k := range ch.after.Elements {
		if _, ok := ch.before.Elements[k]; !ok && k.Map == SetHairpin {
			if _, ok := applied.Elements[k]; ok {
				ch.before.Elements[k] = ""
			}
		}
	}
	var left []ElementKey
	for k := range ch.before.Elements {
		if _, ok := ch.after.Elements[k]; !ok && k.Map == SetHairpin {
			left = append(left, k)
		}
	}
	if len(left) > 0 {
		wanted := make(map[netip.Addr]ElementKey, len(left))
		for _, k := range left {
			a, _, _ := strings.Cut(k.Key, " . ")
			wanted[netip.MustParseAddr(a)] = k
		}
		for p := range st.Ports {
			p := &st.Ports[p]
			if !p.hasFrontendOf(c.IPv6) && !p.hasNodePortOf(c.IPv6) {
				continue // not rendered in this family
			}
			for _, b := range p.Backends {
				if k, ok := wanted[b.Addr]; ok {
					ch.after.Elements[k] = ""
				}
			}
		}
	}
	ch.after.Plan(tx, ch.before)
	return ch
}

// Apply folds a change that nft has run into applied, the Ruleset it was planned
// against, so that applied describes the table again.
func (ch *Change) Apply(applied *Ruleset) {
	for name := range ch.before.Chains {
		delete(applied.Chains, name)
	}
	for name := range ch.before.Sets {
		delete(applied.Sets, name)
	}
	for k := range ch.before.Elements {
		delete(applied.Elements, k)
	}
	maps.Copy(applied.Chains, ch.after.Chains)
	maps.Copy(applied.Sets, ch.after.Sets)
	maps.Copy(applied.Elements, ch.after.Elements)
}
