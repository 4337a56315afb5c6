package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// IPTablesChainPrefix starts the name of every chain of the iptables mode: tabby's chain
// prefix tby- (DESIGN.md, "Names on the host") and k- for kube-proxy, whose KUBE-
// chains these are, renamed and lower-cased (KUBE-SVC-<hash> is tby-k-svc-<hash>). Every
// other tby- chain is policy's: felix tells the two writers' chains apart by this prefix
// alone (felix.ChainOwner). Every name is at most 28 characters, the kernel's limit.
const IPTablesChainPrefix = "tby-k-"

// The fixed chains of the iptables mode. tby-k-services is in both tables: in nat it
// sends each frontend to its Service chain, in filter it rejects new connections to
// Services without endpoints (and drops those of externalTrafficPolicy Local without a
// local one).
const (
	IPTChainServices    = IPTablesChainPrefix + "services"
	IPTChainNodePorts   = IPTablesChainPrefix + "nodeports"
	IPTChainPostrouting = IPTablesChainPrefix + "postrouting"
	IPTChainMarkMasq    = IPTablesChainPrefix + "mark-masq"
	// IPTChainMasqOutside marks for masquerade what comes from outside the pod CIDRs
	// (only with pod CIDRs).
	IPTChainMasqOutside = IPTablesChainPrefix + "masq-outside"
)

// The per-port chains of the iptables mode: their role, then a hash (iptName).
const (
	iptRoleService  = "svc" // a Service port: picks an endpoint (kube-proxy's KUBE-SVC-)
	iptRoleEndpoint = "sep" // an endpoint: masquerades hairpin, DNATs (KUBE-SEP-)
	iptRoleExternal = "ext" // external traffic: NodePort, and frontends with externalTrafficPolicy Local (KUBE-EXT-)
	iptRoleLocal    = "svl" // externalTrafficPolicy Local: picks a local endpoint (KUBE-SVL-)
)

// IPTHook is a jump from a kernel chain into the proxy's chains.
type IPTHook struct {
	Table, Chain, Target string
}

// IPTablesHooks are the iptables mode's hooks: DNAT of new connections from workloads
// (nat PREROUTING) and from the node (nat OUTPUT), masquerade in nat POSTROUTING, and the
// reject check on every path (filter INPUT, FORWARD, OUTPUT).
var IPTablesHooks = []IPTHook{
	{"nat", "PREROUTING", IPTChainServices},
	{"nat", "OUTPUT", IPTChainServices},
	{"nat", "POSTROUTING", IPTChainPostrouting},
	{"filter", "INPUT", IPTChainServices},
	{"filter", "FORWARD", IPTChainServices},
	{"filter", "OUTPUT", IPTChainServices},
}

// IPTList names a list chain: one rule per frontend or NodePort, in text order between a
// fixed head and tail, so that one Service's change deletes and inserts its own lines
// rather than rewriting the chain.
type IPTList struct {
	Table, Chain string
}

// The list chains.
var (
	IPTListServices  = IPTList{"nat", IPTChainServices}
	IPTListNodePorts = IPTList{"nat", IPTChainNodePorts}
	IPTListReject    = IPTList{"filter", IPTChainServices}
)

// IPTables is the proxy's part of one family's nat and filter tables: the rule texts
// (what follows "-A <chain> ") of every tby-k- chain. RenderIPTables makes it.
type IPTables struct {
	IPv6 bool
	// Chains holds each table's chains ("nat", "filter") other than the lists.
	Chains map[string]map[string][]string
	// Lists holds the body of each list chain, sorted.
	Lists map[IPTList][]string
	// Head and Tail are the fixed rules before and after each list's body.
	Head, Tail map[IPTList][]string
}

// Rules returns the whole rule list of table's chain, a list's head, body and tail
// included; nil for a chain it does not have.
func (t *IPTables) Rules(table, chain string) []string {
	l := IPTList{table, chain}
	if body, ok := t.Lists[l]; ok {
		return slices.Concat(t.Head[l], body, t.Tail[l])
	}
	return t.Chains[table][chain]
}

// Tables returns, per table, the names of every chain with its whole rule list.
func (t *IPTables) Tables() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for table, chains := range t.Chains {
		out[table] = maps.Clone(chains)
	}
	for l := range t.Lists {
		out[l.Table][l.Chain] = t.Rules(l.Table, l.Chain)
	}
	return out
}

type iptWords struct {
	v6       bool
	host     string // "/32" or "/128"
	loopback string
	reject   string // ICMP port unreachable of the family
	pods     []string
}

func (c RenderConfig) iptWords() iptWords {
	w := iptWords{host: "/32", loopback: "127.0.0.0/8", reject: "icmp-port-unreachable"}
	if c.IPv6 {
		w = iptWords{v6: true, host: "/128", loopback: "::1/128", reject: "icmp6-port-unreachable"}
	}
	for _, p := range c.podCIDRs() {
		w.pods = append(w.pods, p.String())
	}
	return w
}

// RenderIPTables returns the iptables mode's chains of one family for st, kube-proxy's
// layout:
//
//	nat tby-k-services      -d <frontend> -p tcp -m tcp --dport 80 -j tby-k-svc-<hash>  (per frontend)
//	                        -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j tby-k-nodeports  (last)
//	nat tby-k-nodeports     -p tcp -m tcp --dport 30080 -j tby-k-ext-<hash>
//	nat tby-k-svc-<hash>    -j tby-k-masq-outside (with pod CIDRs), affinity checks, then
//	                        -m statistic --mode random --probability 1/(n-i) -j tby-k-sep-<hash>
//	nat tby-k-sep-<hash>    -s <endpoint> -j tby-k-mark-masq (hairpin), [-m recent --set], DNAT
//	nat tby-k-ext-<hash>    Cluster: mark, then tby-k-svc; Local: pods and the node to
//	                        tby-k-svc (the node masqueraded), the rest to tby-k-svl-<hash>
//	nat tby-k-svl-<hash>    like tby-k-svc over the local endpoints, source kept
//	filter tby-k-services   new connections without an endpoint: REJECT (tcp-reset for TCP);
//	                        externalTrafficPolicy Local without a local endpoint: DROP
//
// Masquerade is a mark (RenderConfig.MasqueradeMark) that tby-k-postrouting turns into
// MASQUERADE, as the nftables mode does it. Pure.
func RenderIPTables(st *LBState, c RenderConfig) *IPTables {
	w := c.iptWords()
	t := &IPTables{IPv6: c.IPv6, Chains: map[string]map[string][]string{"nat": {}, "filter": {}}, Lists: map[IPTList][]string{},
		Head: map[IPTList][]string{}, Tail: map[IPTList][]string{}}
	mark := c.MasqueradeMark
	if mark == 0 {
		mark = DefaultMasqueradeMark
	}
	m := fmt.Sprintf("%#x", mark)
	nat := t.Chains["nat"]
	nat[IPTChainMarkMasq] = []string{"-j MARK --set-xmark " + m + "/" + m}
	nat[IPTChainPostrouting] = []string{
		"-m mark ! --mark " + m + "/" + m + " -j RETURN",
		"-j MARK --set-xmark 0x0/" + m,
		"-j MASQUERADE --random-fully",
	}
	if len(w.pods) > 0 {
		var rules []string
		for _, p := range w.pods {
			rules = append(rules, "-s "+p+" -j RETURN")
		}
		nat[IPTChainMasqOutside] = append(rules, "-j "+IPTChainMarkMasq)
	}
	for _, l := range []IPTList{IPTListServices, IPTListNodePorts, IPTListReject} {
		t.Lists[l] = nil
	}
	t.Tail[IPTListServices] = []string{"-m addrtype --dst-type LOCAL ! -d " + w.loopback + " -j " + IPTChainNodePorts}
	t.Head[IPTListReject] = []string{"-m conntrack ! --ctstate NEW -j RETURN"}
	for i := range st.Ports {
		t.addPort(&st.Ports[i], w)
	}
	for l := range t.Lists {
		slices.Sort(t.Lists[l])
	}
	return t
}

// iptName is a chain name: the prefix, role (iptRoleService, ...) and 16 characters of a
// hash of the port key (and backend) in [a-z2-7], as kube-proxy names its chains; 26
// characters.
func iptName(role string, k PortKey, b *Backend) string {
	s := k.String()
	if b != nil {
		s += "|" + b.String()
	}
	sum := sha256.Sum256([]byte(s))
	return IPTablesChainPrefix + role + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])[:16])
}

// Probability is the text of `-m statistic --mode random --probability` for 1/n as
// iptables-save prints it: the kernel keeps it as a fraction of 2^31, printed with 11
// decimals (1/3: 0.33333333349).
func Probability(n int) string {
	v := math.Round(float64(0x80000000) / float64(n))
	return strconv.FormatFloat(v/float64(0x80000000), 'f', 11, 64)
}

// matchPort is "-p tcp -m tcp --dport 80".
func matchPort(proto string, port uint16) string {
	return "-p " + proto + " -m " + proto + " --dport " + strconv.Itoa(int(port))
}

// addPort adds one Service port's chains and list lines in w's family.
func (t *IPTables) addPort(p *PortLB, w iptWords) {
	var fronts []string
	for _, a := range p.Frontends {
		if a.Is6() == w.v6 {
			fronts = append(fronts, a.String()+w.host)
		}
	}
	np := p.hasNodePortOf(w.v6)
	if len(fronts) == 0 && !np {
		return
	}
	proto := strings.ToLower(string(p.Protocol))
	svcMatch := matchPort(proto, p.Port)
	npMatch := "-m addrtype --dst-type LOCAL ! -d " + w.loopback + " " + matchPort(proto, p.NodePort)
	backends := p.BackendsOf(w.v6)
	if len(backends) == 0 {
		rej := "-j REJECT --reject-with " + w.reject
		if proto == "tcp" {
			rej = "-j REJECT --reject-with tcp-reset"
		}
		for _, f := range fronts {
			t.Lists[IPTListReject] = append(t.Lists[IPTListReject], "-d "+f+" "+svcMatch+" "+rej)
		}
		if np {
			t.Lists[IPTListReject] = append(t.Lists[IPTListReject], npMatch+" "+rej)
		}
		return
	}
	nat := t.Chains["nat"]
	seps := make(map[Backend]string, len(backends))
	for i := range backends {
		b := &backends[i]
		sep := iptName(iptRoleEndpoint, p.Key, b)
		seps[*b] = sep
		dnat := "-p " + proto
		if p.Affinity > 0 {
			dnat += " -m recent --set --name " + sep
		}
		nat[sep] = []string{
			"-s " + b.Addr.String() + w.host + " -j " + IPTChainMarkMasq,
			dnat + " -j DNAT --to-destination " + b.String(),
		}
	}
	svc := iptName(iptRoleService, p.Key, nil)
	var rules []string
	if len(w.pods) > 0 {
		rules = append(rules, "-j "+IPTChainMasqOutside)
	}
	nat[svc] = append(rules, pickRules(p, backends, seps)...)
	target := svc
	if p.ExternalLocal {
		ext := iptName(iptRoleExternal, p.Key, nil)
		var rules []string
		for _, c := range w.pods {
			rules = append(rules, "-s "+c+" -j "+svc)
		}
		rules = append(rules, "-m addrtype --src-type LOCAL -j "+IPTChainMarkMasq, "-m addrtype --src-type LOCAL -j "+svc)
		var local []Backend
		for _, b := range p.LocalBackends {
			if _, ok := seps[b]; ok {
				local = append(local, b)
			}
		}
		if len(local) > 0 {
			svl := iptName(iptRoleLocal, p.Key, nil)
			nat[svl] = pickRules(p, local, seps)
			rules = append(rules, "-j "+svl)
		} else {
			// No local endpoint: the nat chain falls through, and filter drops the
			// connection (DROP is not allowed in nat).
			for _, f := range fronts {
				t.Lists[IPTListReject] = append(t.Lists[IPTListReject], "-d "+f+" "+svcMatch+" -j DROP")
			}
			if np {
				t.Lists[IPTListReject] = append(t.Lists[IPTListReject], npMatch+" -j DROP")
			}
		}
		nat[ext] = rules
		target = ext
	} else if np {
		// externalTrafficPolicy Cluster: a NodePort is masqueraded whatever the source,
		// so that the reply of an endpoint on another node comes back through this one.
		nat[iptName(iptRoleExternal, p.Key, nil)] = []string{"-j " + IPTChainMarkMasq, "-j " + svc}
	}
	for _, f := range fronts {
		t.Lists[IPTListServices] = append(t.Lists[IPTListServices], "-d "+f+" "+svcMatch+" -j "+target)
	}
	if np {
		t.Lists[IPTListNodePorts] = append(t.Lists[IPTListNodePorts], matchPort(proto, p.NodePort)+" -j "+iptName(iptRoleExternal, p.Key, nil))
	}
}

// pickRules send a connection to one of backends: with affinity, a client seen within
// the timeout to its endpoint first; then endpoint i with probability 1/(n-i), the last
// one whatever is left.
func pickRules(p *PortLB, backends []Backend, seps map[Backend]string) []string {
	var rules []string
	if p.Affinity > 0 {
		secs := strconv.Itoa(int(p.Affinity.Seconds()))
		for _, b := range backends {
			rules = append(rules, "-m recent --rcheck --seconds "+secs+" --reap --name "+seps[b]+" -j "+seps[b])
		}
	}
	n := len(backends)
	for i, b := range backends {
		if i < n-1 {
			rules = append(rules, "-m statistic --mode random --probability "+Probability(n-i)+" -j "+seps[b])
		} else {
			rules = append(rules, "-j "+seps[b])
		}
	}
	return rules
}

// IPTablesChange is a change of some Service ports in the iptables mode: the rules of the
// ports that differ, before and after (IPTablesChangeOf).
type IPTablesChange struct {
	Before, After *IPTables
}

// IPTablesChangeOf renders only the ports that differ between old and st (both sorted by
// Key, as Desired returns them): a one-Service change in a table of 10k Services renders
// one Service.
func IPTablesChangeOf(old, st *LBState, c RenderConfig) IPTablesChange {
	before, after := ChangedPorts(old, st)
	return IPTablesChange{Before: RenderIPTables(before, c), After: RenderIPTables(after, c)}
}
