package proxy

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The packet-flow tables: a pure evaluator of each mode's rendered rules follows one new
// connection (source, protocol, destination, port, whether it comes from the node itself
// and whether its destination is a local address of the node) through the nat chains and
// then the filter checks, taking every branch of a random pick, and reports every
// outcome it can have: "dnat <endpoint>" (with " masq" when marked for masquerade),
// "reject", "drop", or "pass" (untouched). A client is never yet in an affinity set. An
// evaluator knows the exact shapes of the rules its mode renders and fails the test on
// any other, so a rule it cannot read is never skipped.

type packet struct {
	src, dst netip.Addr
	proto    string // tcp, udp
	port     uint16
	fromNode bool // sent by the node itself (OUTPUT); its source is a local address
	dstLocal bool // the destination is an address of the node
}

type flowState struct {
	masq bool
	dnat string
	end  string // "", "dnat", "reject", "drop"
	ret  bool   // returned from the chain (RETURN; or the chain a goto went to ended)
}

type evaluator struct {
	t      *testing.T
	chains map[string][]string
	step   func(e *evaluator, rule string, p packet, s flowState) []flowState
}

// run follows p through chain from s and returns the states it ends or returns in.
func (e *evaluator) run(chain string, p packet, s flowState) []flowState {
	rules, ok := e.chains[chain]
	if !ok {
		e.t.Fatalf("no chain %s", chain)
	}
	states := []flowState{s}
	var out []flowState
	for _, rule := range rules {
		var next []flowState
		for _, s := range states {
			for _, r := range e.step(e, rule, p, s) {
				if r.end != "" || r.ret {
					out = append(out, r)
				} else {
					next = append(next, r)
				}
			}
		}
		states = next
	}
	return append(out, states...)
}

// jump runs chain and continues after it with every state that did not end.
func (e *evaluator) jump(chain string, p packet, s flowState) []flowState {
	out := e.run(chain, p, s)
	for i := range out {
		out[i].ret = false
	}
	return out
}

// goTo runs chain and returns from the calling chain with every state that did not end.
func (e *evaluator) goTo(chain string, p packet, s flowState) []flowState {
	out := e.run(chain, p, s)
	for i := range out {
		out[i].ret = out[i].end == ""
	}
	return out
}

// outcomes follows p through nat, then through filter (at the destination nat left),
// with the entry chains of a mode; and a DNATed flow through postChain of nat, when the
// mode marks there ("" when it does not).
func outcomes(t *testing.T, nat, filter *evaluator, natChain, filterChain, postChain string, p packet) []string {
	set := map[string]bool{}
	for _, s := range nat.jump(natChain, p, flowState{}) {
		q := p
		if s.end == "drop" {
			set["drop"] = true
			continue
		}
		if s.end == "dnat" {
			ap := netip.MustParseAddrPort(s.dnat)
			q.dst, q.port, q.dstLocal = ap.Addr(), ap.Port(), false
			if postChain != "" {
				for _, ps := range nat.jump(postChain, q, flowState{dnat: s.dnat}) {
					s.masq = s.masq || ps.masq
				}
			}
		}
		ends := filter.jump(filterChain, q, flowState{})
		if len(ends) != 1 {
			t.Fatalf("filter took %d paths", len(ends))
		}
		switch {
		case ends[0].end != "":
			set[ends[0].end] = true
		case s.end == "dnat" && s.masq:
			set["dnat "+s.dnat+" masq"] = true
		case s.end == "dnat":
			set["dnat "+s.dnat] = true
		default:
			set["pass"] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// iptEvaluators read RenderIPTables' chains.
func iptEvaluators(t *testing.T, ipt *IPTables) (nat, filter *evaluator) {
	tables := ipt.Tables()
	return &evaluator{t, tables["nat"], iptStep}, &evaluator{t, tables["filter"], iptStep}
}

func iptStep(e *evaluator, rule string, p packet, s flowState) []flowState {
	f := strings.Fields(rule)
	not := false
	branch := false // a random match: it may match or not
	for i := 0; i < len(f); i++ {
		arg := func() string { i++; return f[i] }
		matched := true
		switch f[i] {
		case "!":
			not = true
			continue
		case "-s", "-d":
			a := p.src
			if f[i] == "-d" {
				a = p.dst
			}
			matched = netip.MustParsePrefix(arg()).Contains(a)
		case "-p":
			matched = arg() == p.proto
		case "-m":
			switch m := arg(); m {
			case "tcp", "udp", "sctp", "addrtype", "conntrack", "mark", "comment":
			case "statistic":
				if arg() != "--mode" || arg() != "random" || arg() != "--probability" {
					e.t.Fatalf("rule %q: statistic other than random", rule)
				}
				arg()
				branch = true
			case "recent":
				switch arg() {
				case "--rcheck": // a new client is in no recent list
					matched = false
					for f[i+1] != "-j" {
						i++
					}
				case "--set":
					if arg() != "--name" {
						e.t.Fatalf("rule %q: recent --set without --name", rule)
					}
					arg()
				}
			default:
				e.t.Fatalf("rule %q: unknown match %s", rule, m)
			}
		case "--dport":
			matched = arg() == strconv.Itoa(int(p.port))
		case "--dst-type", "--src-type":
			local := p.fromNode
			if f[i] == "--dst-type" {
				local = p.dstLocal
			}
			if arg() != "LOCAL" {
				e.t.Fatalf("rule %q: addrtype other than LOCAL", rule)
			}
			matched = local
		case "--ctstate":
			matched = arg() == "NEW" // every packet here opens a connection
		case "--mark":
			e.t.Fatalf("rule %q: a mark match outside POSTROUTING", rule)
		case "--comment":
			arg()
		case "-j":
			return iptTarget(e, rule, f[i+1:], p, s, branch)
		default:
			e.t.Fatalf("rule %q: unknown word %s", rule, f[i])
		}
		if matched == not {
			return []flowState{s}
		}
		not = false
	}
	e.t.Fatalf("rule %q: no target", rule)
	return nil
}

func iptTarget(e *evaluator, rule string, f []string, p packet, s flowState, branch bool) []flowState {
	var out []flowState
	if branch {
		out = append(out, s) // the random match that did not match
	}
	switch f[0] {
	case "RETURN":
		s.ret = true
		out = append(out, s)
	case "MARK":
		s.masq = true
		out = append(out, s)
	case "DNAT":
		s.end, s.dnat = "dnat", f[2]
		out = append(out, s)
	case "REJECT":
		if f[1] != "--reject-with" || (f[2] == "tcp-reset") != (p.proto == "tcp") {
			e.t.Fatalf("rule %q: not the REJECT of its protocol", rule)
		}
		s.end = "reject"
		out = append(out, s)
	case "DROP":
		s.end = "drop"
		out = append(out, s)
	default:
		if !strings.HasPrefix(f[0], IPTablesChainPrefix) || len(f) != 1 {
			e.t.Fatalf("rule %q: unknown target", rule)
		}
		out = append(out, e.jump(f[0], p, s)...)
	}
	return out
}

// nftEvaluators read Render's Ruleset (its chains, maps and sets).
func nftEvaluators(t *testing.T, rs *Ruleset) (nat, filter *evaluator) {
	step := func(e *evaluator, rule string, p packet, s flowState) []flowState { return nftStep(e, rs, rule, p, s) }
	return &evaluator{t, rs.Chains, step}, &evaluator{t, rs.Chains, step}
}

func nftStep(e *evaluator, rs *Ruleset, rule string, p packet, s flowState) []flowState {
	ip := "ip"
	loop := "127.0.0.0/8"
	if p.dst.Is6() {
		ip, loop = "ip6", "::1"
	}
	inPods := false
	for k := range rs.Elements {
		if k.Map == SetPodCIDRs && netip.MustParsePrefix(k.Key).Contains(p.src) {
			inPods = true
		}
	}
	verdict := func(v string) []flowState {
		verb, chain, _ := strings.Cut(v, " ")
		switch verb {
		case "goto":
			return e.goTo(chain, p, s)
		case "jump":
			return e.jump(chain, p, s)
		}
		e.t.Fatalf("rule %q: verdict %q", rule, v)
		return nil
	}
	lookup := func(m, key string) []flowState {
		if v, ok := rs.Elements[ElementKey{m, key}]; ok {
			return verdict(v)
		}
		return []flowState{s}
	}
	svcKey := p.dst.String() + " . " + p.proto + " . " + strconv.Itoa(int(p.port))
	npKey := p.proto + " . " + strconv.Itoa(int(p.port))
	nodePort := p.dstLocal && !netip.MustParsePrefix(strings.Replace(loop, "::1", "::1/128", 1)).Contains(p.dst)
	var n int
	switch {
	case rule == ip+" daddr . meta l4proto . th dport vmap @"+MapServiceIPs:
		return lookup(MapServiceIPs, svcKey)
	case rule == "fib daddr type local "+ip+" daddr != "+loop+" meta l4proto . th dport vmap @"+MapNodePorts:
		if !nodePort {
			return []flowState{s}
		}
		return lookup(MapNodePorts, npKey)
	case rule == "ct state new "+ip+" daddr . meta l4proto . th dport vmap @"+MapNoEndpoints:
		return lookup(MapNoEndpoints, svcKey)
	case rule == "ct state new fib daddr type local "+ip+" daddr != "+loop+" meta l4proto . th dport vmap @"+MapNoEndpointNodePorts:
		if !nodePort {
			return []flowState{s}
		}
		return lookup(MapNoEndpointNodePorts, npKey)
	case strings.HasPrefix(rule, ip+" daddr . meta l4proto . th dport . numgen random mod "):
		n, _ = strconv.Atoi(strings.Fields(rule)[12])
		var out []flowState
		for i := range n {
			out = append(out, lookup(MapServiceEndpoints, svcKey+" . "+strconv.Itoa(i))...)
		}
		return out
	case strings.HasPrefix(rule, "meta l4proto . th dport . numgen random mod "):
		n, _ = strconv.Atoi(strings.Fields(rule)[9])
		var out []flowState
		for i := range n {
			out = append(out, lookup(MapNodePortEndpoints, npKey+" . "+strconv.Itoa(i))...)
		}
		return out
	case strings.HasPrefix(rule, "dnat "+ip+" to "+ip+" daddr . meta l4proto . th dport . numgen random mod "),
		strings.HasPrefix(rule, "dnat "+ip+" to meta l4proto . th dport . numgen random mod "):
		f := strings.Fields(rule)
		n, _ = strconv.Atoi(f[len(f)-3])
		m, key := strings.TrimPrefix(f[len(f)-1], "@"), npKey
		if f[3] == ip {
			key = svcKey
		}
		if m != serviceDNATMap(p.proto) && m != nodePortDNATMap(p.proto) {
			return []flowState{s} // nft matches the map's protocol only
		}
		var out []flowState
		for i := range n {
			if v, ok := rs.Elements[ElementKey{m, key + " . " + strconv.Itoa(i)}]; ok {
				out = append(out, dnatTo(s, v))
			}
		}
		return out
	case strings.HasPrefix(rule, "meta l4proto ") && strings.Contains(rule, " dnat "+ip+" to numgen random mod "):
		if strings.Fields(rule)[2] != p.proto {
			return []flowState{s}
		}
		_, m, _ := strings.Cut(rule, "{ ")
		var out []flowState
		for el := range strings.SplitSeq(strings.TrimSuffix(m, " }"), ", ") {
			_, v, _ := strings.Cut(el, " : ")
			out = append(out, dnatTo(s, v))
		}
		return out
	case strings.HasPrefix(rule, "numgen random mod "):
		_, m, _ := strings.Cut(rule, "{ ")
		var out []flowState
		for el := range strings.SplitSeq(strings.TrimSuffix(m, " }"), ", ") {
			_, v, _ := strings.Cut(el, " : ")
			out = append(out, verdict(v)...)
		}
		return out
	case rule == "ct status dnat "+ip+" saddr . "+ip+" daddr @"+SetHairpin+" jump "+ChainMarkMasq:
		if _, ok := rs.Elements[ElementKey{SetHairpin, p.src.String() + " . " + p.dst.String()}]; s.dnat == "" || !ok {
			return []flowState{s}
		}
		return verdict("jump " + ChainMarkMasq)
	case strings.HasPrefix(rule, "meta mark & "):
		// The rest of the masquerading chain acts on the mark, which the flow's outcome
		// already says.
		s.ret = true
		return []flowState{s}
	case rule == ip+" saddr != @"+SetPodCIDRs+" jump "+ChainMarkMasq:
		if inPods {
			return []flowState{s}
		}
		return verdict("jump " + ChainMarkMasq)
	case strings.HasPrefix(rule, ip+" saddr @"+SetPodCIDRs+" goto "):
		if !inPods {
			return []flowState{s}
		}
		return verdict(strings.TrimPrefix(rule, ip+" saddr @"+SetPodCIDRs+" "))
	case strings.HasPrefix(rule, "fib saddr type local "):
		if !p.fromNode {
			return []flowState{s}
		}
		return verdict(strings.TrimPrefix(rule, "fib saddr type local "))
	case strings.HasPrefix(rule, ip+" saddr @affinity-"), strings.HasPrefix(rule, "update @affinity-"):
		return []flowState{s} // a new client is in no affinity set
	case strings.HasPrefix(rule, "meta l4proto "+p.proto+" dnat to "):
		s.end, s.dnat = "dnat", strings.TrimPrefix(rule, "meta l4proto "+p.proto+" dnat to ")
		return []flowState{s}
	case strings.HasPrefix(rule, "jump "), strings.HasPrefix(rule, "goto "):
		return verdict(rule)
	case strings.HasPrefix(rule, "meta mark set meta mark | "):
		s.masq = true
		return []flowState{s}
	case rule == "drop":
		s.end = "drop"
		return []flowState{s}
	case rule == "meta l4proto tcp reject with tcp reset":
		if p.proto == "tcp" {
			s.end = "reject"
		}
		return []flowState{s}
	case rule == "reject":
		s.end = "reject"
		return []flowState{s}
	}
	e.t.Fatalf("rule %q: unknown to the evaluator", rule)
	return nil
}

// dnatTo is s DNATed to "address . port", a DNAT map's value.
func dnatTo(s flowState, value string) flowState {
	a, port, _ := strings.Cut(value, " . ")
	n, _ := strconv.Atoi(port)
	s.end, s.dnat = "dnat", netip.AddrPortFrom(netip.MustParseAddr(a), uint16(n)).String()
	return s
}

func TestPacketFlow(t *testing.T) {
	pods := []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16")}
	web := webPort(be("10.65.0.2", 8080), be("10.65.0.3", 8080), be("10.65.1.4", 8080))
	web.Frontends = addrs("10.96.0.10", "192.0.2.7")
	web.NodePort, web.NodePortFamilies = 30080, [2]bool{true, false}
	sticky := webPort(be("10.65.0.2", 8080), be("10.65.1.4", 8080))
	sticky.Key.Name, sticky.Frontends, sticky.Affinity = "sticky", addrs("10.96.0.11"), time.Minute
	empty := dnsPort()
	emptyTCP := webPort()
	emptyTCP.Key.Name, emptyTCP.Frontends = "empty", addrs("10.96.0.12")
	emptyTCP.NodePort, emptyTCP.NodePortFamilies = 30082, [2]bool{true, false}
	// externalTrafficPolicy Local: local has an endpoint on this node, remote has none.
	local := PortLB{Key: PortKey{"shop", "local", "http", "TCP", false}, Protocol: "TCP", Port: 80,
		Frontends: addrs("10.96.0.20"), Backends: []Backend{be("10.65.0.2", 8080), be("10.65.1.4", 8080)}}
	localExt := local
	localExt.Key.External, localExt.Frontends, localExt.ExternalLocal = true, addrs("192.0.2.20"), true
	localExt.NodePort, localExt.NodePortFamilies, localExt.LocalBackends = 30090, [2]bool{true, false}, []Backend{be("10.65.0.2", 8080)}
	remote, remoteExt := local, localExt
	remote.Key.Name, remote.Frontends = "remote", addrs("10.96.0.21")
	remoteExt.Key.Name, remoteExt.Frontends, remoteExt.NodePort, remoteExt.LocalBackends = "remote", addrs("192.0.2.21"), 30091, nil
	st := &LBState{Ports: []PortLB{web, sticky, empty, emptyTCP, local, localExt, remote, remoteExt}}
	st = st.Clone()

	node := netip.MustParseAddr("172.31.0.1")
	pod := netip.MustParseAddr("10.65.0.9")
	outside := netip.MustParseAddr("198.51.100.1")
	a := netip.MustParseAddr
	all3 := []string{"dnat 10.65.0.2:8080", "dnat 10.65.0.3:8080", "dnat 10.65.1.4:8080"}
	masqAll3 := []string{"dnat 10.65.0.2:8080 masq", "dnat 10.65.0.3:8080 masq", "dnat 10.65.1.4:8080 masq"}
	cases := []struct {
		name string
		p    packet
		want []string
	}{
		{"a pod to a ClusterIP: every endpoint, source kept", packet{pod, a("10.96.0.10"), "tcp", 80, false, false}, all3},
		{"the node to a ClusterIP: every endpoint, masqueraded (not from a pod)", packet{node, a("10.96.0.10"), "tcp", 80, true, false}, masqAll3},
		{"outside to an external IP: masqueraded", packet{outside, a("192.0.2.7"), "tcp", 80, false, false}, masqAll3},
		{"another port of the ClusterIP: untouched", packet{pod, a("10.96.0.10"), "tcp", 81, false, false}, []string{"pass"}},
		{"UDP to a TCP port: untouched", packet{pod, a("10.96.0.10"), "udp", 80, false, false}, []string{"pass"}},
		{"hairpin: an endpoint reaching itself is masqueraded", packet{a("10.65.0.3"), a("10.96.0.10"), "tcp", 80, false, false},
			[]string{"dnat 10.65.0.2:8080", "dnat 10.65.0.3:8080 masq", "dnat 10.65.1.4:8080"}},
		{"NodePort Cluster from outside: masqueraded", packet{outside, node, "tcp", 30080, false, true}, masqAll3},
		{"NodePort Cluster from a pod: masqueraded", packet{pod, node, "tcp", 30080, false, true}, masqAll3},
		{"NodePort on loopback: untouched", packet{a("127.0.0.1"), a("127.0.0.1"), "tcp", 30080, true, true}, []string{"pass"}},
		{"a NodePort port on a non-local address: untouched", packet{pod, a("10.96.0.99"), "tcp", 30080, false, false}, []string{"pass"}},
		{"affinity, a new client: every endpoint", packet{pod, a("10.96.0.11"), "tcp", 80, false, false}, []string{"dnat 10.65.0.2:8080", "dnat 10.65.1.4:8080"}},
		{"no endpoints, UDP: reject", packet{pod, a("10.96.0.53"), "udp", 53, false, false}, []string{"reject"}},
		{"no endpoints, TCP, from the node: reject", packet{node, a("10.96.0.12"), "tcp", 80, true, false}, []string{"reject"}},
		{"no endpoints, NodePort from outside: reject", packet{outside, node, "tcp", 30082, false, true}, []string{"reject"}},
		{"Local, outside to the external IP: the local endpoint, source kept", packet{outside, a("192.0.2.20"), "tcp", 80, false, false}, []string{"dnat 10.65.0.2:8080"}},
		{"Local, outside to the NodePort: the local endpoint, source kept", packet{outside, node, "tcp", 30090, false, true}, []string{"dnat 10.65.0.2:8080"}},
		{"Local, a pod to the external IP: every endpoint", packet{pod, a("192.0.2.20"), "tcp", 80, false, false}, []string{"dnat 10.65.0.2:8080", "dnat 10.65.1.4:8080"}},
		{"Local, the node to the NodePort: every endpoint, masqueraded", packet{node, node, "tcp", 30090, true, true}, []string{"dnat 10.65.0.2:8080 masq", "dnat 10.65.1.4:8080 masq"}},
		{"Local without a local endpoint, outside: dropped", packet{outside, a("192.0.2.21"), "tcp", 80, false, false}, []string{"drop"}},
		{"Local without a local endpoint, outside to the NodePort: dropped", packet{outside, node, "tcp", 30091, false, true}, []string{"drop"}},
		{"Local without a local endpoint, a pod: every endpoint", packet{pod, a("192.0.2.21"), "tcp", 80, false, false}, []string{"dnat 10.65.0.2:8080", "dnat 10.65.1.4:8080"}},
		{"Local's ClusterIP from a pod: every endpoint", packet{pod, a("10.96.0.21"), "tcp", 80, false, false}, []string{"dnat 10.65.0.2:8080", "dnat 10.65.1.4:8080"}},
	}
	cfg := RenderConfig{PodCIDRs: pods}
	modes := map[string]func(t *testing.T) (nat, filter *evaluator, natChain, filterChain string){
		"nftables": func(t *testing.T) (*evaluator, *evaluator, string, string) {
			nat, filter := nftEvaluators(t, Render(st, cfg))
			return nat, filter, ChainServices, ChainRejectCheck
		},
		"iptables": func(t *testing.T) (*evaluator, *evaluator, string, string) {
			nat, filter := iptEvaluators(t, RenderIPTables(st, cfg))
			return nat, filter, IPTChainServices, IPTChainServices
		},
	}
	// nftables finds hairpin in postrouting; iptables marks it in the endpoint's chain.
	postChains := map[string]string{"nftables": ChainMasquerading}
	for _, mode := range []string{"nftables", "iptables"} {
		t.Run(mode, func(t *testing.T) {
			nat, filter, natChain, filterChain := modes[mode](t)
			for _, c := range cases {
				if got := outcomes(t, nat, filter, natChain, filterChain, postChains[mode], c.p); !slices.Equal(got, c.want) {
					t.Errorf("%s: %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}
