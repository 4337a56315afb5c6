package felix

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy"
)

// Names and marks of tabby's filter-table state. Chains start with ChainPrefix, ipsets
// with IPSetPrefix; both stay within the kernel's limits (MaxChainName, MaxIPSetName).
const (
	ChainPrefix  = "tby-"
	IPSetPrefix  = "tby"
	MaxChainName = 28
	MaxIPSetName = 31

	ChainForward      = "tby-FORWARD"
	ChainInput        = "tby-INPUT"
	ChainFromWLDisp   = "tby-from-wl-dispatch"
	ChainToWLDisp     = "tby-to-wl-dispatch"
	ChainWLToHost     = "tby-wl-to-host"
	hashCommentPrefix = "tby:"

	// MarkAccept and MarkPass are the packet mark bits policy chains set.
	MarkAccept = 0x10000
	MarkPass   = 0x20000
)

// WorkloadInterfacePrefix starts the name of every workload's host-side interface (as
// tabby-cni names them): the default PolicyConfig.InterfacePrefix.
const WorkloadInterfacePrefix = "tabby"

// PolicyConfig shapes the rendered rules.
type PolicyConfig struct {
	// InterfacePrefix is the prefix of workload host-side interfaces ("tabby").
	InterfacePrefix string
	// EndpointToHostAction is what happens to traffic from a workload to its own host once
	// the workload's egress policy allowed it: ACCEPT (default), DROP or RETURN (on to the
	// host's INPUT rules).
	EndpointToHostAction string
	// Tunnels limits who may send the node encapsulated packets.
	Tunnels TunnelGuard
	// FailsafeInbound and FailsafeOutbound are the ports host endpoint policy never
	// closes (to the host, and from it); nil is Calico's defaults, empty is none.
	FailsafeInbound, FailsafeOutbound []FailsafePort
	// HostInterfaces are the node's interfaces with their addresses
	// (HostInterfaceAddrs), which host endpoints without interfaceName are found by.
	HostInterfaces map[string][]netip.Addr
}

// TunnelGuard says which tunnels the node terminates: IPIP, and VXLAN on VXLANPort over
// IPv4 and (VXLANV6) over IPv6. Packets of those addressed to the node are dropped unless
// their source is one of Peers (every node's addresses), as Calico's all-hosts set does:
// anyone else on the underlay could otherwise send packets into the node's workloads
// through a tunnel, past everything that checks where packets come from.
type TunnelGuard struct {
	IPIP, VXLAN, VXLANV6 bool
	Peers                []netip.Addr
}

// IPSetTunnelPeers holds TunnelGuard.Peers' IPv4 addresses, IPSetTunnelPeers6 (inet6)
// their IPv6 ones.
const (
	IPSetTunnelPeers  = "tby-tunnel-peers"
	IPSetTunnelPeers6 = "tby-tunnel-peers6"
)

func (c PolicyConfig) withDefaults() PolicyConfig {
	if c.InterfacePrefix == "" {
		c.InterfacePrefix = WorkloadInterfacePrefix
	}
	if c.EndpointToHostAction == "" {
		c.EndpointToHostAction = "ACCEPT"
	}
	if c.FailsafeInbound == nil {
		c.FailsafeInbound = DefaultFailsafeInbound
	}
	if c.FailsafeOutbound == nil {
		c.FailsafeOutbound = DefaultFailsafeOutbound
	}
	return c
}

// FilterState is the desired state of tabby's part of the IPv4 filter table and, in
// IPv6, of the IPv6 one.
type FilterState struct {
	// Chains maps each tby- chain to its rules: the text after "-A <chain> ", each ending
	// with its hash comment.
	Chains map[string][]string
	// Hooks are the rules that jump from the kernel's chains to tabby's.
	Hooks []Hook
	// IPSets maps each set's name to it (family inet; inet6 in IPv6).
	IPSets map[string]*IPSet
	// IPv6 is the ip6tables filter table's state, with its own (inet6) sets; nil in itself.
	IPv6 *FilterState
	// NAT is the IPv4 nat table's state (natOutgoing, RenderNATOutgoing) with its sets;
	// nil leaves the nat table and those sets as they are.
	NAT *FilterState
	// Raw is the raw table's state, without sets: RenderDNSNotrack's (its IPv6 field in
	// IPv6), and RenderPolicy's untracked host endpoint policies, which the syncer puts
	// beside it (nil leaves the IPv4 raw table as it is; in IPv6 it is none: the syncer
	// deletes what it wrote before).
	Raw *FilterState
	// Mangle is the mangle table's state (RenderPolicy's preDNAT host endpoint
	// policies), without sets; nil is none (the syncer deletes what it wrote before).
	Mangle *FilterState
}

// Hook is a jump from a kernel chain to one of tabby's. It stands at the top of the
// kernel chain (after the hooks of writers before this one), or with Append at the bottom,
// after other programs' rules (Calico's chainInsertMode Append).
type Hook struct {
	Chain, Target string
	Append        bool
}

// Rule is the hook's rule text (without "-A chain").
func (h Hook) Rule() string {
	return fmt.Sprintf("-m comment --comment %shook -j %s", hashCommentPrefix, h.Target)
}

// IPSet is an ipset: its name, type and members in ipset's own notation.
type IPSet struct {
	Name    string
	Type    string // hash:net or hash:ip,port
	Members []string
	Family  string // "" (inet) or "inet6"
}

// RenderPolicy computes the filter table state for the local workloads of node (those of
// m's endpoints whose Node is node and that have an interface): pure, no kernel access.
// The IPv4 state covers endpoints with an IPv4 address and rules that can match IPv4;
// its IPv6 field likewise for IPv6 (ip6tables, inet6 sets).
func RenderPolicy(m *policy.Model, node string, cfg PolicyConfig) *FilterState {
	cfg = cfg.withDefaults()
	fs := renderFamily(m, node, cfg, false)
	fs.IPv6 = renderFamily(m, node, cfg, true)
	return fs
}

func renderFamily(m *policy.Model, node string, cfg PolicyConfig, v6 bool) *FilterState {
	r := &renderer{m: m, cfg: cfg, v6: v6, fs: &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}}
	r.render(node)
	return r.fs
}

type renderer struct {
	m   *policy.Model
	cfg PolicyConfig
	v6  bool // rendering ip6tables rules and inet6 sets
	fs  *FilterState
}

// family says whether a is of the family being rendered.
func (r *renderer) family(a netip.Addr) bool { return a.Unmap().Is4() != r.v6 }

// ndpTypes are the ICMPv6 types a workload exchanges with its host before any policy,
// as Calico allows them: multicast listener query/report/done, router solicitation,
// neighbour solicitation and advertisement.
var ndpTypes = []int{130, 131, 132, 133, 135, 136}

type chainBuilder struct {
	name  string
	rules []string
	prev  string
	buf   []byte // what add hashes, kept between rules
}

// add appends a rule with its hash comment: the hash covers the chain, the previous
// rule's hash and this rule, so a rule's hash changes when anything before it does. The
// hash is the first hashLen characters of the base32 of the SHA-256, which encode its
// first hashLen*5/8 bytes.
func (c *chainBuilder) add(rule string) {
	c.buf = append(append(append(append(append(c.buf[:0], c.name...), 0), c.prev...), 0), rule...)
	sum := sha256.Sum256(c.buf)
	var hash [hashLen]byte
	b32enc.Encode(hash[:], sum[:hashLen*5/8])
	c.prev = string(hash[:])
	c.rules = append(c.rules, "-m comment --comment "+hashCommentPrefix+c.prev+" "+rule)
}

var b32enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func b32(b []byte) string { return b32enc.EncodeToString(b) }

func shortHash(s string, n int) string {
	h := sha256.Sum256([]byte(s))
	return b32(h[:])[:n]
}

func (r *renderer) put(c *chainBuilder) { r.fs.Chains[c.name] = c.rules }

// tunnels are the tunnels of the TunnelGuard over the family rendered (IPIP has no IPv6),
// and the name of the family's set of peers.
func (r *renderer) tunnels() (ipip, vxlan bool, set string) {
	g := r.cfg.Tunnels
	if r.v6 {
		return false, g.VXLANV6, IPSetTunnelPeers6
	}
	return g.IPIP, g.VXLAN, IPSetTunnelPeers
}

// tunnelGuard adds the rules of the TunnelGuard to in, and its set, for the family
// rendered.
func (r *renderer) tunnelGuard(in *chainBuilder) {
	ipip, vxlan, set := r.tunnels()
	if !ipip && !vxlan {
		return
	}
	var peers []string
	for _, a := range r.cfg.Tunnels.Peers {
		if r.family(a) {
			peers = append(peers, a.Unmap().String())
		}
	}
	slices.Sort(peers)
	r.newSet(set, "hash:ip", slices.Compact(peers))
	notPeer := "-m addrtype --dst-type LOCAL -m set ! --match-set " + set + " src"
	if ipip {
		in.add("-p 4 " + notPeer + " -m comment --comment ipip-from-a-non-node -j DROP")
	}
	if vxlan {
		in.add(fmt.Sprintf("-p udp -m udp --dport %d %s -m comment --comment vxlan-from-a-non-node -j DROP", VXLANPort, notPeer))
	}
}

// chainName is prefix+name when it fits the kernel's limit and uses only plain
// characters, else prefix+"_"+hash.
func chainName(prefix, name string) string {
	if len(prefix)+len(name) <= MaxChainName && strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == "" {
		return prefix + name
	}
	return prefix + "_" + shortHash(name, MaxChainName-len(prefix)-1)
}

// PolicyChain names a policy's chain for a direction: tby-pi-/tby-po- and its key, "/"
// written as "_" (which names never contain), or a hash when too long.
func PolicyChain(p *policy.Policy, ingress bool) string {
	prefix := "tby-po-"
	if ingress {
		prefix = "tby-pi-"
	}
	return chainName(prefix, strings.ReplaceAll(p.Key(), "/", "_"))
}

// ProfileChain names a profile's chain for a direction.
func ProfileChain(name string, ingress bool) string {
	prefix := "tby-pro-"
	if ingress {
		prefix = "tby-pri-"
	}
	return chainName(prefix, name)
}

// EndpointChain names a local endpoint's chain: tby-tw- (to the workload: ingress) or
// tby-fw- (from it: egress) and its interface.
func EndpointChain(iface string, ingress bool) string {
	if ingress {
		return chainName("tby-tw-", iface)
	}
	return chainName("tby-fw-", iface)
}

func (r *renderer) render(node string) {
	wl := r.cfg.InterfacePrefix + "+"
	usedPolicies := map[string]bool{}
	usedProfiles := map[string]bool{}
	heps := r.m.HostEndpointsOf(node, r.cfg.HostInterfaces)
	fwd := &chainBuilder{name: ChainForward}
	r.hostForward(fwd, heps, usedPolicies)
	fwd.add("-i " + wl + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	fwd.add("-o " + wl + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	fwd.add("-i " + wl + " -m conntrack --ctstate INVALID -j DROP")
	fwd.add("-o " + wl + " -m conntrack --ctstate INVALID -j DROP")
	fwd.add("-i " + wl + " -j " + ChainFromWLDisp)
	fwd.add("-o " + wl + " -j " + ChainToWLDisp)
	fwd.add(fmt.Sprintf("-i %s -m mark --mark %#x/%#x -j ACCEPT", wl, MarkAccept, MarkAccept))
	fwd.add(fmt.Sprintf("-o %s -m mark --mark %#x/%#x -j ACCEPT", wl, MarkAccept, MarkAccept))
	r.put(fwd)

	in := &chainBuilder{name: ChainInput}
	r.tunnelGuard(in)
	in.add("-i " + wl + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	in.add("-i " + wl + " -m conntrack --ctstate INVALID -j DROP")
	if r.v6 {
		for _, typ := range ndpTypes {
			in.add(fmt.Sprintf("-i %s -p ipv6-icmp -m icmp6 --icmpv6-type %d -j ACCEPT", wl, typ))
		}
	}
	in.add("-i " + wl + " -g " + ChainWLToHost)
	r.hostInput(in, heps, usedPolicies, usedProfiles)
	r.put(in)

	toHost := &chainBuilder{name: ChainWLToHost}
	toHost.add("-j " + ChainFromWLDisp)
	if r.cfg.EndpointToHostAction != "RETURN" {
		toHost.add("-j " + r.cfg.EndpointToHostAction)
	}
	r.put(toHost)
	r.fs.Hooks = []Hook{{Chain: "FORWARD", Target: ChainForward}, {Chain: "INPUT", Target: ChainInput}}
	r.hostOutput(heps, usedPolicies, usedProfiles)
	r.hostRawAndMangle(heps)

	from := &chainBuilder{name: ChainFromWLDisp}
	to := &chainBuilder{name: ChainToWLDisp}
	for _, e := range r.m.Endpoints {
		if e.Node != node || e.Interface == "" || !slices.ContainsFunc(e.Addrs, r.family) {
			continue
		}
		for _, ingress := range []bool{false, true} {
			name := EndpointChain(e.Interface, ingress)
			if ingress {
				to.add("-o " + e.Interface + " -g " + name)
			} else {
				from.add("-i " + e.Interface + " -g " + name)
			}
			r.endpointChain(e, name, ingress, usedPolicies, usedProfiles)
		}
	}
	from.add("-m comment --comment unknown-workload -j DROP")
	to.add("-m comment --comment unknown-workload -j DROP")
	r.put(from)
	r.put(to)
	r.policyChains(usedPolicies, usedProfiles)
}

// policyChains renders the chains of the used policies and profiles.
func (r *renderer) policyChains(usedPolicies, usedProfiles map[string]bool) {
	for _, p := range r.m.Policies {
		for _, ingress := range []bool{false, true} {
			name := PolicyChain(p, ingress)
			if !usedPolicies[name] {
				continue
			}
			rules := p.EgressRules
			if ingress {
				rules = p.IngressRules
			}
			c := &chainBuilder{name: name}
			r.rules(c, rules, name)
			r.put(c)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(usedProfiles)) {
		ingress := strings.HasPrefix(name, "tby-pri-")
		for pname, pr := range r.m.Profiles {
			if ProfileChain(pname, ingress) != name {
				continue
			}
			rules := pr.EgressRules
			if ingress {
				rules = pr.IngressRules
			}
			c := &chainBuilder{name: name}
			r.rules(c, rules, name)
			r.put(c)
		}
	}
}

func markRule(bits, mask int) string { return fmt.Sprintf("-m mark --mark %#x/%#x", bits, mask) }

func setMark(bits, mask int) string { return fmt.Sprintf("-j MARK --set-xmark %#x/%#x", bits, mask) }

// endpointChain renders one endpoint's chain for a direction: the tiers' policies in
// order (each tier ending in a drop unless a policy passed or the tier's defaultAction is
// Pass), then the profiles.
func (r *renderer) endpointChain(e *policy.Endpoint, name string, ingress bool, usedPolicies, usedProfiles map[string]bool) {
	c := &chainBuilder{name: name}
	c.add(setMark(0, MarkAccept|MarkPass))
	r.tierJumps(c, r.m.PoliciesFor(e, ingress), ingress, true, usedPolicies, "RETURN")
	if r.profileJumps(c, e.Profiles, ingress, usedProfiles, "RETURN") {
		c.add("-m comment --comment no-profile-matched -j DROP")
	} else {
		c.add(setMark(MarkAccept, MarkAccept))
	}
	r.put(c)
}

// tierJumps adds to c the jumps to pols' chains, tier by tier: a policy's chain runs
// unless an earlier one of its tier passed; once one allowed, each of onAllow is the
// target of a rule matching the accept mark; with endOfTierDrop a tier in which nothing
// allowed or passed drops.
func (r *renderer) tierJumps(c *chainBuilder, pols []*policy.Policy, ingress, endOfTierDrop bool, usedPolicies map[string]bool, onAllow ...string) {
	for i := 0; i < len(pols); {
		j := i
		for j < len(pols) && pols[j].Tier == pols[i].Tier {
			j++
		}
		c.add(setMark(0, MarkPass))
		for _, p := range pols[i:j] {
			pc := PolicyChain(p, ingress)
			usedPolicies[pc] = true
			c.add(markRule(0, MarkPass) + " -j " + pc)
			for _, target := range onAllow {
				c.add(markRule(MarkAccept, MarkAccept) + " -j " + target)
			}
		}
		if endOfTierDrop && !r.m.TierOf(pols[i].Tier).Pass() {
			c.add(markRule(0, MarkPass) + " -m comment --comment end-of-tier-" + pols[i].Tier + " -j DROP")
		}
		i = j
	}
}

// profileJumps adds to c the jumps to the chains of the profiles with rules in the
// direction, each followed by rules with onAllow's targets for the accept mark, and
// says whether there were any.
func (r *renderer) profileJumps(c *chainBuilder, profiles []string, ingress bool, usedProfiles map[string]bool, onAllow ...string) bool {
	withRules := false
	for _, pname := range profiles {
		pr := r.m.Profiles[pname]
		if pr == nil {
			continue
		}
		rules := pr.EgressRules
		if ingress {
			rules = pr.IngressRules
		}
		if len(rules) == 0 {
			continue
		}
		withRules = true
		pc := ProfileChain(pname, ingress)
		usedProfiles[pc] = true
		c.add("-j " + pc)
		for _, target := range onAllow {
			c.add(markRule(MarkAccept, MarkAccept) + " -j " + target)
		}
	}
	return withRules
}

// rules renders a policy's or profile's rules into chain c.
func (r *renderer) rules(c *chainBuilder, rules []policy.Rule, chain string) {
	for i := range rules {
		rule := &rules[i]
		matches, ok := r.matches(rule)
		if !ok {
			continue
		}
		switch rule.Action {
		case api.ActionAllow:
			for _, m := range matches {
				c.add(m + setMark(MarkAccept, MarkAccept))
			}
			c.add(markRule(MarkAccept, MarkAccept) + " -j RETURN")
		case api.ActionDeny:
			for _, m := range matches {
				c.add(m + "-j DROP")
			}
		case api.ActionPass:
			for _, m := range matches {
				c.add(m + setMark(MarkPass, MarkPass))
			}
			c.add(markRule(MarkPass, MarkPass) + " -j RETURN")
		case api.ActionLog:
			for _, m := range matches {
				c.add(m + "-j LOG --log-prefix " + strconv.Quote(chain+" "))
			}
		}
	}
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}

func protoArg(n uint8) string {
	if s, ok := protoNames[n]; ok {
		return s
	}
	return strconv.Itoa(int(n))
}

// matches renders a rule's match as one or more alternatives (each "... " ending in a
// space, ready for the action); false when the rule cannot match traffic of the family
// rendered (its ipVersion, ICMP version or nets are of the other one).
func (r *renderer) matches(rule *policy.Rule) ([]string, bool) {
	if rule.IPVersion == 6 && !r.v6 || rule.IPVersion == 4 && r.v6 {
		return nil, false
	}
	otherICMP := uint8(policy.ProtoICMPv6)
	if r.v6 {
		otherICMP = policy.ProtoICMP
	}
	if rule.Protocol != nil && *rule.Protocol == otherICMP {
		return nil, false
	}
	for _, e := range []*policy.Entity{&rule.Src, &rule.Dst} {
		for _, p := range slices.Concat(e.Nets, e.NotNets) {
			if !r.family(p.Addr()) {
				return nil, false // validation keeps a rule's nets to one family
			}
		}
	}
	var b strings.Builder
	switch {
	case rule.Protocol != nil:
		if rule.NotProtocol != nil && *rule.NotProtocol == *rule.Protocol {
			return nil, false
		}
		b.WriteString("-p " + protoArg(*rule.Protocol) + " ")
	case rule.NotProtocol != nil:
		b.WriteString("! -p " + protoArg(*rule.NotProtocol) + " ")
	}
	if rule.Protocol != nil && (*rule.Protocol == policy.ProtoICMP || *rule.Protocol == policy.ProtoICMPv6) {
		match := "-m icmp --icmp-type "
		if r.v6 {
			match = "-m icmp6 --icmpv6-type "
		}
		if rule.ICMP != nil && rule.ICMP.Type != nil {
			b.WriteString(match + icmpArg(rule.ICMP) + " ")
		}
		if rule.NotICMP != nil && rule.NotICMP.Type != nil {
			b.WriteString(strings.Replace(match, " --", " ! --", 1) + icmpArg(rule.NotICMP) + " ")
		}
	}
	alts := []string{b.String()}
	for _, side := range []struct {
		e   *policy.Entity
		dir string
	}{{&rule.Src, "src"}, {&rule.Dst, "dst"}} {
		var fixed strings.Builder
		e := side.e
		flag := "-s"
		if side.dir == "dst" {
			flag = "-d"
		}
		switch len(e.Nets) {
		case 0:
		case 1:
			fixed.WriteString(flag + " " + e.Nets[0].String() + " ")
		default:
			fixed.WriteString("-m set --match-set " + r.netSet(e.Nets) + " " + side.dir + " ")
		}
		// iptables takes one -s/-d per rule: with nets as well, notNets go to an ipset.
		switch {
		case len(e.NotNets) == 0:
		case len(e.NotNets) == 1 && len(e.Nets) == 0:
			fixed.WriteString("! " + flag + " " + e.NotNets[0].String() + " ")
		default:
			fixed.WriteString("-m set ! --match-set " + r.netSet(e.NotNets) + " " + side.dir + " ")
		}
		if e.Selector != nil {
			fixed.WriteString("-m set --match-set " + r.selectorSet(e.Selector) + " " + side.dir + " ")
		}
		if e.NotSelector != nil {
			fixed.WriteString("-m set ! --match-set " + r.selectorSet(e.NotSelector) + " " + side.dir + " ")
		}
		if e.Service != nil {
			fixed.WriteString(r.serviceMatch(*e.Service, side.dir))
		}
		var proto uint8
		if rule.Protocol != nil {
			proto = *rule.Protocol
		}
		nums, names := splitPorts(e.NotPorts)
		for _, chunk := range chunkPorts(nums) {
			fixed.WriteString("-m multiport ! --" + side.dir[:1] + "ports " + chunk + " ")
		}
		for _, n := range names {
			fixed.WriteString("-m set ! --match-set " + r.namedPortSet(e.Selector, n, proto) + " " + side.dir + "," + side.dir + " ")
		}
		// Ports are alternatives: one variant per chunk of numbers and per named port.
		var variants []string
		if len(e.Ports) > 0 {
			nums, names := splitPorts(e.Ports)
			for _, chunk := range chunkPorts(nums) {
				variants = append(variants, "-m multiport --"+side.dir[:1]+"ports "+chunk+" ")
			}
			for _, n := range names {
				variants = append(variants, "-m set --match-set "+r.namedPortSet(e.Selector, n, proto)+" "+side.dir+","+side.dir+" ")
			}
		} else {
			variants = []string{""}
		}
		var next []string
		for _, a := range alts {
			for _, v := range variants {
				next = append(next, a+fixed.String()+v)
			}
		}
		alts = next
	}
	return alts, true
}

func icmpArg(f *api.ICMPFields) string {
	s := strconv.Itoa(*f.Type)
	if f.Code != nil {
		s += "/" + strconv.Itoa(*f.Code)
	}
	return s
}

func splitPorts(ps []api.Port) (nums []api.Port, names []string) {
	for _, p := range ps {
		if p.PortName != "" {
			names = append(names, p.PortName)
		} else {
			nums = append(nums, p)
		}
	}
	return nums, names
}

// chunkPorts splits numeric ports into multiport arguments of at most 15 slots (a range
// takes two).
func chunkPorts(ps []api.Port) []string {
	var out []string
	var cur []string
	slots := 0
	for _, p := range ps {
		n, s := 1, strconv.Itoa(int(p.MinPort))
		if p.MaxPort != p.MinPort {
			n, s = 2, fmt.Sprintf("%d:%d", p.MinPort, p.MaxPort)
		}
		if slots+n > 15 {
			out = append(out, strings.Join(cur, ","))
			cur, slots = nil, 0
		}
		cur = append(cur, s)
		slots += n
	}
	if len(cur) > 0 {
		out = append(out, strings.Join(cur, ","))
	}
	return out
}

// setName is IPSetPrefix, a letter for the kind and a hash of the set's identity; an
// IPv6 set has "6" before the letter.
func (r *renderer) setName(kind byte, identity string) string {
	if r.v6 {
		return IPSetPrefix + "6" + string(kind) + shortHash(identity, 24)
	}
	return setName(kind, identity)
}

func setName(kind byte, identity string) string {
	return IPSetPrefix + string(kind) + shortHash(identity, 24)
}

// newSet records a set of the family rendered.
func (r *renderer) newSet(name, typ string, members []string) {
	s := &IPSet{Name: name, Type: typ, Members: members}
	if r.v6 {
		s.Family = "inet6"
	}
	r.fs.IPSets[name] = s
}

// selectorSet is the hash:net ipset of a rule selector's members; rules with the same
// scope share it.
func (r *renderer) selectorSet(s *policy.Scope) string {
	name := r.setName('s', "selector\x00"+s.Key)
	if _, ok := r.fs.IPSets[name]; !ok {
		var members []string
		for _, p := range s.Members(r.m) {
			if r.family(p.Addr()) {
				members = append(members, p.String())
			}
		}
		r.newSet(name, "hash:net", members)
	}
	return name
}

// netSet is the hash:net ipset of a rule's nets (more than one).
func (r *renderer) netSet(nets []netip.Prefix) string {
	var strs []string
	for _, n := range nets {
		strs = append(strs, n.String())
	}
	slices.Sort(strs)
	strs = slices.Compact(strs)
	name := r.setName('d', "nets\x00"+strings.Join(strs, ","))
	if _, ok := r.fs.IPSets[name]; !ok {
		r.newSet(name, "hash:net", strs)
	}
	return name
}

// namedPortSet is the hash:ip,port ipset of the named port of the endpoints in scope
// (every endpoint when scope is nil).
func (r *renderer) namedPortSet(scope *policy.Scope, port string, proto uint8) string {
	key := "all"
	if scope != nil {
		key = scope.Key
	}
	name := r.setName('n', fmt.Sprintf("named\x00%s\x00%s\x00%d", key, port, proto))
	if _, ok := r.fs.IPSets[name]; !ok {
		var members []string
		for _, mb := range r.m.NamedPortMembers(scope, port, proto) {
			if r.family(mb.Addr) {
				members = append(members, fmt.Sprintf("%s,%s:%d", mb.Addr, protoArg(mb.Protocol), mb.Port))
			}
		}
		slices.Sort(members)
		r.newSet(name, "hash:ip,port", slices.Compact(members))
	}
	return name
}
