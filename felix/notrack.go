package felix

import (
	"net/netip"
	"slices"
)

// Names of tabby's state in the raw tables (the same in IPv4 and IPv6).
const (
	ChainRawPrerouting = "tby-raw-prerouting"
	ChainRawOutput     = "tby-raw-output"
)

// RenderDNSNotrack computes the raw table state that exempts the node-local DNS server's
// traffic from connection tracking, as NodeLocal DNSCache does: queries to addrs on port
// 53 (UDP and TCP) arriving from workloads (PREROUTING) or sent by the host itself
// (OUTPUT), and the server's replies from those addresses (OUTPUT). Untracked, the
// parallel A and AAAA queries of one socket cannot race in conntrack, which is what drops
// one of them and makes a client wait out a 5-second timeout. The IPv4 addresses' rules
// are the state's, the IPv6 ones' its IPv6 field's (ip6tables raw). No addresses of a
// family: an empty state for it, so its chains and hooks go. Pure; never nil, nor its
// IPv6 field.
func RenderDNSNotrack(addrs []netip.Addr) *FilterState {
	fs := renderNotrack(addrs, netip.Addr.Is4, 32)
	fs.IPv6 = renderNotrack(addrs, netip.Addr.Is6, 128)
	return fs
}

// renderNotrack is RenderDNSNotrack's state for the addresses of one family (in, of
// prefix length bits).
func renderNotrack(addrs []netip.Addr, in func(netip.Addr) bool, bits int) *FilterState {
	fs := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	var family []netip.Addr
	for _, a := range addrs {
		if in(a) {
			family = append(family, a)
		}
	}
	if len(family) == 0 {
		return fs
	}
	slices.SortFunc(family, netip.Addr.Compare)
	family = slices.Compact(family)
	pre, out := &chainBuilder{name: ChainRawPrerouting}, &chainBuilder{name: ChainRawOutput}
	for _, a := range family {
		host := netip.PrefixFrom(a, bits).String()
		for _, proto := range []string{"udp", "tcp"} {
			pre.add("-d " + host + " -p " + proto + " -m " + proto + " --dport 53 -j NOTRACK")
			out.add("-d " + host + " -p " + proto + " -m " + proto + " --dport 53 -j NOTRACK")
			out.add("-s " + host + " -p " + proto + " -m " + proto + " --sport 53 -j NOTRACK")
		}
	}
	fs.Chains[pre.name], fs.Chains[out.name] = pre.rules, out.rules
	fs.Hooks = []Hook{{Chain: "PREROUTING", Target: ChainRawPrerouting}, {Chain: "OUTPUT", Target: ChainRawOutput}}
	return fs
}
