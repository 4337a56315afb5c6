package felix

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy"
)

// Chains of host endpoint policy (policy.HostEndpoint), besides the per-endpoint ones
// HostEndpointChain names. Each family's tables have their own of these (iptables and
// ip6tables).
const (
	ChainOutput     = "tby-OUTPUT"       // filter OUTPUT: traffic from the host
	ChainFromHEPFwd = "tby-from-hep-fwd" // filter FORWARD: routed in through a host endpoint
	ChainToHEPFwd   = "tby-to-hep-fwd"   // filter FORWARD: routed out through one
	ChainRawHEPPre  = "tby-raw-hep-pre"  // raw PREROUTING: untracked ingress
	ChainRawHEPOut  = "tby-raw-hep-out"  // raw OUTPUT: untracked egress
	ChainManglePre  = "tby-mangle-pre"   // mangle PREROUTING: preDNAT ingress
)

// Prefixes of the per-host-endpoint chains, by stage and direction (from the host
// endpoint: ingress; to it: egress).
const (
	prefixFromHEP      = "tby-fh-"
	prefixToHEP        = "tby-th-"
	prefixFromHEPFwd   = "tby-fhf-"
	prefixToHEPFwd     = "tby-thf-"
	prefixFromHEPUntr  = "tby-ufh-"
	prefixToHEPUntr    = "tby-uth-"
	prefixFromHEPPreDN = "tby-pfh-"
)

// HostEndpointChain names a host endpoint's chain: the stage and direction's prefix and
// its interface ("*" gives a hash, as any name with characters chains do not take).
func HostEndpointChain(h *policy.HostEndpoint, s policy.Stage, ingress bool) string {
	i := 0
	if ingress {
		i = 1
	}
	return chainName(hepChainPrefixes[s][i], h.Interface)
}

// hepChainPrefixes are the per-host-endpoint chains' prefixes by stage, egress then
// ingress.
var hepChainPrefixes = [...][2]string{
	policy.StageUntracked: {prefixToHEPUntr, prefixFromHEPUntr},
	policy.StagePreDNAT:   {"", prefixFromHEPPreDN},
	policy.StageNormal:    {prefixToHEP, prefixFromHEP},
	policy.StageForward:   {prefixToHEPFwd, prefixFromHEPFwd},
}

// FailsafePort is a port the host keeps open whatever its host endpoints' policy says,
// so that a wrong policy cannot cut the node off from management, BGP and etcd.
type FailsafePort struct {
	Protocol string // "tcp" or "udp"
	Port     uint16
}

func (p FailsafePort) String() string { return p.Protocol + ":" + strconv.Itoa(int(p.Port)) }

// Calico's default failsafe ports: inbound SSH, DHCP replies, BGP, etcd, Typha, the
// Kubernetes API and the node's own etcd; outbound DNS, DHCP, BGP, etcd, Typha and the
// Kubernetes API.
var (
	DefaultFailsafeInbound  = mustFailsafe("tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667")
	DefaultFailsafeOutbound = mustFailsafe("udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667")
)

func mustFailsafe(s string) []FailsafePort {
	ps, err := ParseFailsafePorts(s)
	if err != nil {
		panic(err)
	}
	return ps
}

// ParseFailsafePorts parses Calico's failsafe port list: comma-separated "protocol:port"
// (protocol tcp or udp) or a bare port (tcp); "none" or "" is no port. The result is
// never nil.
func ParseFailsafePorts(s string) ([]FailsafePort, error) {
	out := []FailsafePort{}
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return out, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		proto, port, ok := strings.Cut(item, ":")
		if !ok {
			proto, port = "tcp", item
		}
		proto = strings.ToLower(proto)
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("failsafe port %q: protocol %q is not tcp or udp", item, proto)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("failsafe port %q: %q is not a port number (1-65535)", item, port)
		}
		out = append(out, FailsafePort{Protocol: proto, Port: uint16(n)})
	}
	return out, nil
}

// FormatFailsafePorts writes ports as ParseFailsafePorts reads them.
func FormatFailsafePorts(ps []FailsafePort) string {
	if len(ps) == 0 {
		return "none"
	}
	strs := make([]string, len(ps))
	for i, p := range ps {
		strs[i] = p.String()
	}
	return strings.Join(strs, ",")
}

// failsafe adds rules accepting ports' protocols with their port numbers as dport or
// sport ("--dports", "--sports").
func failsafe(c *chainBuilder, ports []FailsafePort, flag, comment string) {
	for _, proto := range []string{"tcp", "udp"} {
		var nums []api.Port
		for _, p := range ports {
			if p.Protocol == proto {
				nums = append(nums, api.Port{MinPort: p.Port, MaxPort: p.Port})
			}
		}
		for _, chunk := range chunkPorts(nums) {
			c.add("-p " + proto + " -m multiport " + flag + " " + chunk + " -m comment --comment " + comment + " -j ACCEPT")
		}
	}
}

// ifaceMatch matches h's interface ("" for "*", which the dispatch rules put last).
func ifaceMatch(flag string, h *policy.HostEndpoint) string {
	if h.AllInterfaces() {
		return ""
	}
	return flag + " " + h.Interface + " "
}

// hostDispatch adds to c, for each host endpoint with a chain at the stage and
// direction (has says which), a goto to it, and a RETURN for a named one without, so
// that a "*" endpoint (last) does not take its traffic.
func hostDispatch(c *chainBuilder, heps []*policy.HostEndpoint, s policy.Stage, ingress bool, has func(*policy.HostEndpoint) bool) {
	flag := "-o"
	if ingress {
		flag = "-i"
	}
	for _, h := range heps {
		switch {
		case has(h):
			c.add(ifaceMatch(flag, h) + "-g " + HostEndpointChain(h, s, ingress))
		case !h.AllInterfaces():
			c.add(ifaceMatch(flag, h) + "-j RETURN")
		}
	}
}

// skipLocal adds the rules that leave traffic of workloads and of lo to other rules:
// host endpoints police neither.
func (r *renderer) skipLocal(c *chainBuilder, flag string) {
	c.add(flag + " " + r.cfg.InterfacePrefix + "+ -j RETURN")
	c.add(flag + " lo -j RETURN")
}

// tunnelsFromNodes accepts the tunnels' packets from other nodes (dir "src") or to them
// ("dst"), as Calico does before host endpoint policy: the pools' encapsulation keeps
// working under any host policy.
func (r *renderer) tunnelsFromNodes(c *chainBuilder, dir string) {
	ipip, vxlan, set := r.tunnels()
	peer := "-m set --match-set " + set + " " + dir
	if ipip {
		c.add("-p 4 " + peer + " -m comment --comment ipip-of-a-node -j ACCEPT")
	}
	if vxlan {
		c.add(fmt.Sprintf("-p udp -m udp --dport %d %s -m comment --comment vxlan-of-a-node -j ACCEPT", VXLANPort, peer))
	}
}

// neighbourDiscovery accepts (IPv6) neighbour discovery and MLD before host endpoint
// policy, as for workloads: without them a host endpoint's default deny would cut the
// host's IPv6 off its link.
func (r *renderer) neighbourDiscovery(c *chainBuilder) {
	if !r.v6 {
		return
	}
	for _, typ := range ndpTypes {
		c.add(fmt.Sprintf("-p ipv6-icmp -m icmp6 --icmpv6-type %d -j ACCEPT", typ))
	}
}

// hostInput adds to tby-INPUT (after the workloads' rules) the host endpoints' ingress:
// what untracked or preDNAT policy allowed, then the failsafe ports, then each endpoint's
// chain.
func (r *renderer) hostInput(in *chainBuilder, heps []*policy.HostEndpoint, usedPolicies, usedProfiles map[string]bool) {
	if len(heps) == 0 {
		return
	}
	in.add(markRule(MarkAccept, MarkAccept) + " -m comment --comment allowed-by-untracked-or-prednat-policy -j ACCEPT")
	r.tunnelsFromNodes(in, "src")
	r.neighbourDiscovery(in)
	failsafe(in, r.cfg.FailsafeInbound, "--dports", "failsafe-in")
	in.add("-i lo -j RETURN")
	hostDispatch(in, heps, policy.StageNormal, true, func(*policy.HostEndpoint) bool { return true })
	for _, h := range heps {
		r.hostChain(h, true, usedPolicies, usedProfiles)
	}
}

// hostOutput renders tby-OUTPUT and its hook: the host endpoints' egress.
func (r *renderer) hostOutput(heps []*policy.HostEndpoint, usedPolicies, usedProfiles map[string]bool) {
	if len(heps) == 0 {
		return
	}
	out := &chainBuilder{name: ChainOutput}
	out.add(markRule(MarkAccept, MarkAccept) + " -m comment --comment allowed-by-untracked-policy -j ACCEPT")
	r.skipLocal(out, "-o")
	r.tunnelsFromNodes(out, "dst")
	r.neighbourDiscovery(out)
	failsafe(out, r.cfg.FailsafeOutbound, "--dports", "failsafe-out")
	hostDispatch(out, heps, policy.StageNormal, false, func(*policy.HostEndpoint) bool { return true })
	r.put(out)
	r.fs.Hooks = append(r.fs.Hooks, Hook{Chain: "OUTPUT", Target: ChainOutput})
	for _, h := range heps {
		r.hostChain(h, false, usedPolicies, usedProfiles)
	}
}

// hostChain renders a host endpoint's normal chain for a direction: connection tracking
// first, then the tiers, then the profiles, and a drop for what none allowed (a host
// endpoint's default).
func (r *renderer) hostChain(h *policy.HostEndpoint, ingress bool, usedPolicies, usedProfiles map[string]bool) {
	c := &chainBuilder{name: HostEndpointChain(h, policy.StageNormal, ingress)}
	c.add("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	c.add("-m conntrack --ctstate INVALID -j DROP")
	c.add(setMark(0, MarkAccept|MarkPass))
	r.tierJumps(c, r.m.HostPoliciesFor(h, policy.StageNormal, ingress), ingress, true, usedPolicies, "ACCEPT")
	r.profileJumps(c, h.Profiles, ingress, usedProfiles, "ACCEPT")
	c.add("-m comment --comment host-endpoint-default-deny -j DROP")
	r.put(c)
}

// hostForward adds to tby-FORWARD the jumps to the host endpoints' forward chains, for
// the endpoints that applyOnForward policies select: with none, forwarded traffic is
// left alone, as Calico allows it by default.
func (r *renderer) hostForward(fwd *chainBuilder, heps []*policy.HostEndpoint, usedPolicies map[string]bool) {
	for _, ingress := range []bool{true, false} {
		has := func(h *policy.HostEndpoint) bool {
			return len(r.m.HostPoliciesFor(h, policy.StageForward, ingress)) > 0
		}
		if !slices.ContainsFunc(heps, has) {
			continue
		}
		name, flag := ChainToHEPFwd, "-o"
		if ingress {
			name, flag = ChainFromHEPFwd, "-i"
		}
		d := &chainBuilder{name: name}
		d.add("-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
		r.skipLocal(d, flag)
		hostDispatch(d, heps, policy.StageForward, ingress, has)
		r.put(d)
		fwd.add("-j " + name)
		for _, h := range heps {
			if !has(h) {
				continue
			}
			r.stageChain(h, policy.StageForward, ingress, usedPolicies, "RETURN")
		}
	}
}

// hostRawAndMangle renders the untracked policies into fs.Raw and the preDNAT ones into
// fs.Mangle, for the host endpoints they select, in the family being rendered (the rules
// that can match it, as in the filter table). Each endpoint's chain runs its tiers
// without end-of-tier drops: a packet no rule decided goes on to the next stage. Raw and
// Mangle stay nil when no such policy selects an endpoint of the node.
func (r *renderer) hostRawAndMangle(heps []*policy.HostEndpoint) {
	// Untracked: both directions, with the failsafe ports both ways (no conntrack lets
	// the replies through).
	untracked := false
	for _, h := range heps {
		untracked = untracked || len(r.m.HostPoliciesFor(h, policy.StageUntracked, true))+len(r.m.HostPoliciesFor(h, policy.StageUntracked, false)) > 0
	}
	if untracked {
		sub := r.sub()
		used, usedProfiles := map[string]bool{}, map[string]bool{}
		for _, ingress := range []bool{true, false} {
			has := func(h *policy.HostEndpoint) bool {
				return len(r.m.HostPoliciesFor(h, policy.StageUntracked, ingress)) > 0
			}
			name, flag, in, out := ChainRawHEPOut, "-o", sub.cfg.FailsafeOutbound, sub.cfg.FailsafeInbound
			if ingress {
				name, flag, in, out = ChainRawHEPPre, "-i", sub.cfg.FailsafeInbound, sub.cfg.FailsafeOutbound
			}
			d := &chainBuilder{name: name}
			sub.skipLocal(d, flag)
			failsafe(d, in, "--dports", "failsafe")
			failsafe(d, out, "--sports", "failsafe-reply")
			hostDispatch(d, heps, policy.StageUntracked, ingress, has)
			sub.put(d)
			for _, h := range heps {
				if has(h) {
					sub.stageChain(h, policy.StageUntracked, ingress, used, "NOTRACK", "ACCEPT")
				}
			}
		}
		sub.policyChains(used, usedProfiles)
		sub.fs.Hooks = []Hook{{Chain: "PREROUTING", Target: ChainRawHEPPre}, {Chain: "OUTPUT", Target: ChainRawHEPOut}}
		r.fs.Raw = sub.fs
	}
	has := func(h *policy.HostEndpoint) bool { return len(r.m.HostPoliciesFor(h, policy.StagePreDNAT, true)) > 0 }
	if !slices.ContainsFunc(heps, has) {
		return
	}
	sub := r.sub()
	used := map[string]bool{}
	d := &chainBuilder{name: ChainManglePre}
	d.add(markRule(MarkAccept, MarkAccept) + " -m comment --comment allowed-by-untracked-policy -j ACCEPT")
	sub.skipLocal(d, "-i")
	d.add("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	failsafe(d, sub.cfg.FailsafeInbound, "--dports", "failsafe-in")
	hostDispatch(d, heps, policy.StagePreDNAT, true, has)
	sub.put(d)
	for _, h := range heps {
		if has(h) {
			sub.stageChain(h, policy.StagePreDNAT, true, used, "ACCEPT")
		}
	}
	sub.policyChains(used, map[string]bool{})
	sub.fs.Hooks = []Hook{{Chain: "PREROUTING", Target: ChainManglePre}}
	r.fs.Mangle = sub.fs
}

// stageChain renders a host endpoint's chain of a stage other than normal for a
// direction: its policies' tiers, each of onAllow once one allowed. Only the forward
// stage drops at the end of a tier; in the others a packet no rule decided goes on.
func (r *renderer) stageChain(h *policy.HostEndpoint, s policy.Stage, ingress bool, usedPolicies map[string]bool, onAllow ...string) {
	c := &chainBuilder{name: HostEndpointChain(h, s, ingress)}
	c.add(setMark(0, MarkAccept|MarkPass))
	r.tierJumps(c, r.m.HostPoliciesFor(h, s, ingress), ingress, s == policy.StageForward, usedPolicies, onAllow...)
	r.put(c)
}

// sub is a renderer for another table of the same family: its own chains, the same
// ipsets.
func (r *renderer) sub() *renderer {
	return &renderer{m: r.m, cfg: r.cfg, v6: r.v6, fs: &FilterState{Chains: map[string][]string{}, IPSets: r.fs.IPSets}}
}

// combineRaw is the raw table's state of the DNS exemption (dns, RenderDNSNotrack)
// beside the untracked policies' (hep, RenderPolicy's Raw; nil when none): hep's chains
// run after dns's, jumped to from the end of the chain dns hooks into the same kernel
// chain, as each kernel chain takes one hook of tabby's.
func combineRaw(dns, hep *FilterState) *FilterState {
	if hep == nil || len(hep.Chains) == 0 {
		return dns
	}
	out := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	for name, rules := range hep.Chains {
		out.Chains[name] = rules
	}
	for name, rules := range dns.Chains {
		out.Chains[name] = rules
	}
	out.Hooks = slices.Clone(dns.Hooks)
	for _, h := range hep.Hooks {
		i := slices.IndexFunc(out.Hooks, func(d Hook) bool { return d.Chain == h.Chain })
		if i < 0 {
			out.Hooks = append(out.Hooks, h)
			continue
		}
		target := out.Hooks[i].Target
		out.Chains[target] = appendRule(target, out.Chains[target], "-j "+h.Target)
	}
	return out
}

// appendRule is rules (a chainBuilder's) with rule added at the end, its hash chained to
// the last rule's as chainBuilder.add chains them.
func appendRule(chain string, rules []string, rule string) []string {
	c := &chainBuilder{name: chain, rules: slices.Clone(rules)}
	if n := len(rules); n > 0 {
		hash := strings.TrimPrefix(rules[n-1], "-m comment --comment "+hashCommentPrefix)
		c.prev, _, _ = strings.Cut(hash, " ")
	}
	c.add(rule)
	return c.rules
}
