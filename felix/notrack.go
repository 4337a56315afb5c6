package felix

import (
	"net/netip"
	"slices"
)

// Names of tabby's state in the IPv4 raw table.
const (
	ChainRawPrerouting = "tby-raw-prerouting"
	ChainRawOutput     = "tby-raw-output"
)

// RenderDNSNotrack computes the raw table state that exempts the node-local DNS server's
// traffic from connection tracking, as NodeLocal DNSCache does: queries to addrs on port
// 53 (UDP and TCP) arriving from workloads (PREROUTING) or sent by the host itself
// (OUTPUT), and the server's replies from those addresses (OUTPUT). Untracked, the
// parallel A and AAAA queries of one socket cannot race in conntrack, which is what drops
// one of them and makes a client wait out a 5-second timeout. No addresses: an empty
// state, so the chains and hooks go. IPv4 only. Pure; never nil.
func RenderDNSNotrack(addrs []netip.Addr) *FilterState {
	fs := &FilterState{Chains: map[string][]string{}, IPSets: map[string]*IPSet{}}
	var v4 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		}
	}
	if len(v4) == 0 {
		return fs
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	v4 = slices.Compact(v4)
	pre, out := &chainBuilder{name: ChainRawPrerouting}, &chainBuilder{name: ChainRawOutput}
	for _, a := range v4 {
		for _, proto := range []string{"udp", "tcp"} {
			pre.add("-d " + a.String() + "/32 -p " + proto + " -m " + proto + " --dport 53 -j NOTRACK")
			out.add("-d " + a.String() + "/32 -p " + proto + " -m " + proto + " --dport 53 -j NOTRACK")
			out.add("-s " + a.String() + "/32 -p " + proto + " -m " + proto + " --sport 53 -j NOTRACK")
		}
	}
	fs.Chains[pre.name], fs.Chains[out.name] = pre.rules, out.rules
	fs.Hooks = []Hook{{Chain: "PREROUTING", Target: ChainRawPrerouting}, {Chain: "OUTPUT", Target: ChainRawOutput}}
	return fs
}
