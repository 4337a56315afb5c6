package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// SpecVersion is the version of the Kubernetes DNS-Based Service Discovery specification
// the zone implements; dns-version.<zone> answers it as TXT.
const SpecVersion = "1.1.0"

// Defaults of ZoneConfig.
const (
	DefaultZone    = "cluster.local"
	DefaultZoneTTL = 5 * time.Second
	maxZoneTTL     = time.Hour
)

// ZoneConfig configures the cluster zone.
type ZoneConfig struct {
	// Zone is the cluster domain ("cluster.local" when empty).
	Zone string
	// TTL is the TTL of every record the zone answers, and its SOA's negative TTL
	// (5 s when zero). Whole seconds, at most an hour.
	TTL time.Duration
	// Logger receives warnings about Services the zone cannot name (slog.Default() when
	// nil).
	Logger *slog.Logger
}

func (c ZoneConfig) withDefaults() ZoneConfig {
	if c.Zone == "" {
		c.Zone = DefaultZone
	}
	if c.TTL == 0 {
		c.TTL = DefaultZoneTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports whether the configuration (after defaults) is usable; NewZone panics
// on one that is not, so the agent checks its flags with Validate first.
func (c ZoneConfig) Validate() error {
	c = c.withDefaults()
	zone := strings.TrimSuffix(c.Zone, ".")
	if zone == "" {
		return errors.New("dns zone: the zone is the root")
	}
	for label := range strings.SplitSeq(strings.ToLower(zone), ".") {
		if !isLabel(label) {
			return fmt.Errorf("dns zone %q: label %q is not an RFC 1123 label", c.Zone, label)
		}
	}
	if len(zone) > 200 {
		return fmt.Errorf("dns zone %q: longer than 200 characters leaves no room for names", c.Zone)
	}
	if c.TTL < time.Second || c.TTL > maxZoneTTL || c.TTL%time.Second != 0 {
		return fmt.Errorf("dns zone TTL %v: want whole seconds from 1s to %v", c.TTL, maxZoneTTL)
	}
	return nil
}

// Zone is the cluster zone: the Authority for <zone> and for the reverse names of the
// cluster's ClusterIPs and ready endpoint addresses. Update swaps in a new index of the
// cluster's names; Answer reads the current one without locks.
type Zone struct {
	zone    string // canonical: lower case, fully qualified ("cluster.local.")
	dotZone string // "." + zone
	podZone string // "pod." + zone
	soaNs   string // the SOA's names: "ns.dns." + zone, "hostmaster." + zone
	soaMbox string
	ttl     uint32
	log     *slog.Logger
	serial  atomic.Uint32
	index   atomic.Pointer[zoneIndex]
}

var (
	_ Authority = (*Zone)(nil)
	_ Versioned = (*Zone)(nil)
)

// NewZone returns a zone that answers SERVFAIL for its names until the first Update. It
// panics if cfg does not Validate.
func NewZone(cfg ZoneConfig) *Zone {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	zone := mdns.Fqdn(strings.ToLower(cfg.Zone))
	return &Zone{
		zone:    zone,
		dotZone: "." + zone,
		podZone: "pod." + zone,
		soaNs:   "ns.dns." + zone,
		soaMbox: "hostmaster." + zone,
		ttl:     uint32(cfg.TTL / time.Second),
		log:     cfg.Logger,
	}
}

// Origin is the zone's canonical name ("cluster.local.").
func (z *Zone) Origin() string { return z.zone }

// Synced reports whether the zone has had its first Update.
func (z *Zone) Synced() bool { return z.index.Load() != nil }

// Version is the serial of the zone's data: it changes with every Update (0 before the
// first).
func (z *Zone) Version() uint64 {
	if idx := z.index.Load(); idx != nil {
		return uint64(idx.serial)
	}
	return 0
}

// zoneIndex is one Update's data, indexed by lower-case fully qualified name. It is never
// changed once stored.
type zoneIndex struct {
	serial uint32
	names  map[string]*zoneNode
	// ptrs maps a reverse name (lower case, "7.12.96.10.in-addr.arpa.") to the names of
	// the address.
	ptrs map[string][]string
}

// zoneNode is one existing name. A node without records is an empty non-terminal (or a
// name whose Service has nothing to answer yet): NODATA; those share entNode. The index
// holds a few nodes per Service, so a node is kept small: addresses packed (4 or 16
// bytes each, in one slice), the rare records behind a pointer.
type zoneNode struct {
	a, aaaa []byte // IPv4 addresses, 4 bytes each; IPv6 ones, 16 bytes each
	srv     []srvTarget
	more    *nodeMore
}

// nodeMore holds the records few names have.
type nodeMore struct {
	cname string
	txt   []string
	apex  bool
}

// entNode is every name without records (empty non-terminals). Never changed.
var entNode = &zoneNode{}

// srvTarget is one SRV record of a name; the target's node gives its addresses for the
// additional section.
type srvTarget struct {
	port, weight uint16
	target       string
	node         *zoneNode
}

// Update replaces the zone's data with d (nil: a cluster without Services). The zone
// indexes d once and keeps no reference to it. Queries answered during an Update see the
// old index or the new one, never a mix. Call Update from one goroutine at a time.
func (z *Zone) Update(d *ClusterData) {
	idx := z.build(d)
	z.index.Store(idx)
	z.log.Debug("dns zone updated", "zone", z.zone, "serial", idx.serial,
		"names", len(idx.names), "reverse", len(idx.ptrs))
}

func (z *Zone) build(d *ClusterData) *zoneIndex {
	var services []Service
	if d != nil {
		services = d.Services
	}
	// Size the maps once: a name per Service, endpoint and SRV name (and its _proto
	// parent), a reverse name per address.
	names, ptrs := 4, 0
	for i := range services {
		s := &services[i]
		names += 2 + 2*len(s.Ports) + len(s.Endpoints)
		ptrs += len(s.ClusterIPs)
		for j := range s.Endpoints {
			ptrs += len(s.Endpoints[j].Addrs)
		}
	}
	b := &zoneBuilder{
		z: z,
		idx: &zoneIndex{
			serial: z.serial.Add(1),
			names:  make(map[string]*zoneNode, names),
			ptrs:   make(map[string][]string, ptrs),
		},
		byName: make(map[string]*builderEndpoint),
		seen:   make(map[nameAddr]struct{}),
	}
	idx := b.idx
	idx.names[z.zone] = &zoneNode{more: &nodeMore{apex: true}}
	idx.names["dns-version"+z.dotZone] = &zoneNode{more: &nodeMore{txt: []string{SpecVersion}}}
	idx.names["svc"+z.dotZone] = entNode
	idx.names[z.podZone] = entNode
	if d != nil {
		for _, ns := range d.Namespaces {
			if name := strings.ToLower(ns) + ".svc" + z.dotZone; idx.names[name] == nil {
				idx.names[name] = entNode
			}
		}
	}
	for i := range services {
		if err := b.addService(&services[i]); err != nil {
			z.log.Warn("dns zone: Service left out", "err", err)
		}
	}
	return idx
}

// zoneBuilder builds one zoneIndex; its scratch maps are reused from Service to Service.
type zoneBuilder struct {
	z   *Zone
	idx *zoneIndex
	// byName holds a Service's ready endpoints by name label.
	byName map[string]*builderEndpoint
	// seen keeps each address once per name: an endpoint's, and a headless Service's.
	seen map[nameAddr]struct{}
}

type builderEndpoint struct {
	name  string
	node  *zoneNode
	ports map[string]uint16
}

type nameAddr struct {
	name string
	addr netip.Addr
}

// reset empties the scratch maps for the next Service (new ones after a big Service, so
// clearing stays cheap).
func (b *zoneBuilder) reset() {
	if len(b.seen) > 256 {
		b.byName = make(map[string]*builderEndpoint)
		b.seen = make(map[nameAddr]struct{})
		return
	}
	clear(b.byName)
	clear(b.seen)
}

// addAddr adds a to node (named name) once.
func (b *zoneBuilder) addAddr(node *zoneNode, name string, a netip.Addr) {
	if _, dup := b.seen[nameAddr{name, a}]; dup {
		return
	}
	b.seen[nameAddr{name, a}] = struct{}{}
	if a.Is4() {
		b := a.As4()
		node.a = append(node.a, b[:]...)
	} else {
		b := a.As16()
		node.aaaa = append(node.aaaa, b[:]...)
	}
}

// addPTR records name as a PTR target of a's reverse name (once).
func (b *zoneBuilder) addPTR(a netip.Addr, name string) {
	rev := reverseName(a)
	for _, n := range b.idx.ptrs[rev] {
		if n == name {
			return
		}
	}
	b.idx.ptrs[rev] = append(b.idx.ptrs[rev], name)
}

// addService indexes one Service's names: the Service name, its SRV names and their
// empty non-terminals, its ready endpoints' names, and the reverse names of its addresses.
func (b *zoneBuilder) addService(s *Service) error {
	defer b.reset()
	z, idx := b.z, b.idx
	ns, name := strings.ToLower(s.Namespace), strings.ToLower(s.Name)
	if !isLabel(ns) || !isLabel(name) {
		return fmt.Errorf("service %s/%s: namespace and name must be RFC 1123 labels", s.Namespace, s.Name)
	}
	// The Service's name and its namespace's share one string.
	svcName := name + "." + ns + ".svc" + z.dotZone
	nsName := svcName[len(name)+1:]
	if !nameFits(svcName) {
		return fmt.Errorf("service %s/%s: %s is longer than a domain name may be", s.Namespace, s.Name, svcName)
	}
	if _, dup := idx.names[svcName]; dup {
		return fmt.Errorf("service %s/%s: listed twice, the first one kept", s.Namespace, s.Name)
	}
	if idx.names[nsName] == nil {
		idx.names[nsName] = entNode
	}

	if s.ExternalName != "" {
		target := mdns.Fqdn(strings.ToLower(s.ExternalName))
		if _, ok := mdns.IsDomainName(target); !ok || target == "." {
			return fmt.Errorf("service %s/%s: externalName %q is not a domain name", s.Namespace, s.Name, s.ExternalName)
		}
		idx.names[svcName] = &zoneNode{more: &nodeMore{cname: target}}
		return nil
	}

	// Ready endpoints by name (hostname, or the dashed first address), in the order given.
	var eps []*builderEndpoint
	svc := &zoneNode{}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if !ep.Ready {
			continue
		}
		addrs := cleanAddrs(ep.Addrs)
		if len(addrs) == 0 {
			continue
		}
		label := strings.ToLower(ep.Hostname)
		if !isLabel(label) {
			label = dashedAddr(addrs[0])
		}
		if len(label)+1+len(svcName)+1 > 255 { // !nameFits(label + "." + svcName)
			z.log.Warn("dns zone: endpoint name too long, endpoint left out", "service", s.Namespace+"/"+s.Name, "label", label)
			continue
		}
		e := b.byName[label]
		if e == nil {
			e = &builderEndpoint{name: label + "." + svcName, node: &zoneNode{}, ports: ep.Ports}
			b.byName[label] = e
			eps = append(eps, e)
		}
		for _, a := range addrs {
			b.addAddr(e.node, e.name, a)
			if s.Headless {
				b.addAddr(svc, svcName, a)
			}
			b.addPTR(a, e.name)
		}
	}

	if s.Headless {
		if len(eps) == 0 {
			// The spec: a headless Service without ready endpoints is NXDOMAIN.
			return nil
		}
	} else {
		for _, a := range cleanAddrs(s.ClusterIPs) {
			b.addAddr(svc, svcName, a)
			b.addPTR(a, svcName)
		}
	}
	idx.names[svcName] = svc
	for _, e := range eps {
		idx.names[e.name] = e.node
	}

	for _, p := range s.Ports {
		portLabel := strings.ToLower(p.Name)
		if portLabel == "" {
			continue // unnamed ports have no SRV record
		}
		proto, ok := srvProto(p.Protocol)
		if !isLabel(portLabel) || !ok {
			z.log.Warn("dns zone: Service port has no SRV name", "service", s.Namespace+"/"+s.Name,
				"port", p.Name, "protocol", p.Protocol)
			continue
		}
		srvName := "_" + portLabel + "." + proto + "." + svcName // one string: protoName is its tail
		protoName := srvName[len(portLabel)+2:]
		if !nameFits(srvName) {
			z.log.Warn("dns zone: SRV name too long, port left out", "service", s.Namespace+"/"+s.Name, "port", p.Name)
			continue
		}
		if idx.names[protoName] == nil {
			idx.names[protoName] = entNode
		}
		if idx.names[srvName] != nil {
			continue // the same name and protocol twice: the first port wins
		}
		switch {
		case s.Headless:
			node := &zoneNode{srv: make([]srvTarget, 0, len(eps))}
			weight := srvWeight(len(eps))
			for _, e := range eps {
				port, ok := e.ports[p.Name]
				if !ok {
					port = p.Port
				}
				node.srv = append(node.srv, srvTarget{port: port, weight: weight, target: e.name, node: e.node})
			}
			idx.names[srvName] = node
		case len(svc.a)+len(svc.aaaa) > 0:
			// The node and its one target in one allocation.
			n := &struct {
				node   zoneNode
				target [1]srvTarget
			}{target: [1]srvTarget{{port: p.Port, weight: 100, target: svcName, node: svc}}}
			n.node.srv = n.target[:]
			idx.names[srvName] = &n.node
		default:
			idx.names[srvName] = entNode
		}
	}
	return nil
}

// Answer answers a query for the zone's names and the reverse names of the addresses it
// knows; ok is false for any other name (the server forwards it).
//
//   - 0 or 2+ questions: FORMERR.
//   - class other than IN: REFUSED; opcode other than QUERY, qtype ANY (and MAILA/MAILB):
//     NOTIMP; AXFR/IXFR: REFUSED.
//   - before the first Update: SERVFAIL for names in the zone; reverse names are not
//     known yet, so ok is false.
//   - a name that exists without records of the type: NOERROR, no answer (NODATA); a name
//     that does not exist: NXDOMAIN. Both with the zone's SOA in the authority section.
//
// Answers are authoritative, owners keep the question's case, and TTLs are the zone's.
// The response has no OPT record and RA unset: EDNS0, truncation and the RA bit are the
// server's. The response is the caller's to change, except the address bytes of its A
// and AAAA records, which it shares with the zone's index.
func (z *Zone) Answer(req *mdns.Msg) (*mdns.Msg, bool) {
	if len(req.Question) != 1 {
		return new(mdns.Msg).SetRcodeFormatError(req), true
	}
	q := req.Question[0]
	qname := mdns.Fqdn(q.Name)
	name := strings.ToLower(qname)
	idx := z.index.Load()

	inZone := name == z.zone || (strings.HasSuffix(name, z.dotZone) && !escapedAt(name, len(name)-len(z.dotZone)))
	var ptrs []string
	if !inZone {
		if idx == nil || !isReverseName(name) {
			return nil, false
		}
		var known bool
		if ptrs, known = idx.ptrs[name]; !known {
			return nil, false
		}
	}

	if rcode, bad := badQuery(req, q); bad {
		return new(mdns.Msg).SetRcode(req, rcode), true
	}
	if idx == nil {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure), true
	}

	m := new(mdns.Msg).SetReply(req)
	m.Authoritative = true
	if !inZone {
		// A known reverse name: its PTRs, or NODATA for another type. The zone is not
		// the authority for in-addr.arpa, so there is no SOA to give.
		if q.Qtype == mdns.TypePTR {
			for _, target := range ptrs {
				m.Answer = append(m.Answer, &mdns.PTR{Hdr: z.hdr(qname, mdns.TypePTR), Ptr: target})
			}
		}
		return m, true
	}

	node := idx.names[name]
	if node == nil {
		node = z.podNode(name)
	}
	if node == nil {
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{z.soa(idx)}
		return m, true
	}
	z.records(m, qname, q.Qtype, node, idx)
	if len(m.Answer) == 0 {
		m.Ns = []mdns.RR{z.soa(idx)}
	}
	return m, true
}

// badQuery is the rcode for a question the zone does not answer by looking the name up.
func badQuery(req *mdns.Msg, q mdns.Question) (rcode int, bad bool) {
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		return mdns.RcodeNotImplemented, true
	case q.Qclass != mdns.ClassINET:
		return mdns.RcodeRefused, true
	}
	switch q.Qtype {
	case mdns.TypeANY, mdns.TypeMAILA, mdns.TypeMAILB:
		return mdns.RcodeNotImplemented, true
	case mdns.TypeAXFR, mdns.TypeIXFR:
		return mdns.RcodeRefused, true
	}
	return 0, false
}

// records appends node's records of type qtype to m: the answer, and the SRV targets'
// addresses as additional records.
func (z *Zone) records(m *mdns.Msg, qname string, qtype uint16, node *zoneNode, idx *zoneIndex) {
	more := node.more
	if more == nil {
		more = &noMore
	}
	if more.cname != "" {
		// A CNAME owner has no other data: every type answers the CNAME; the resolver
		// follows it.
		m.Answer = append(m.Answer, &mdns.CNAME{Hdr: z.hdr(qname, mdns.TypeCNAME), Target: more.cname})
		return
	}
	switch qtype {
	case mdns.TypeA:
		m.Answer = z.appendA(m.Answer, qname, node.a)
	case mdns.TypeAAAA:
		m.Answer = z.appendAAAA(m.Answer, qname, node.aaaa)
	case mdns.TypeSRV:
		for _, t := range node.srv {
			m.Answer = append(m.Answer, &mdns.SRV{
				Hdr: z.hdr(qname, mdns.TypeSRV), Weight: t.weight, Port: t.port, Target: t.target,
			})
			m.Extra = z.appendA(m.Extra, t.target, t.node.a)
			m.Extra = z.appendAAAA(m.Extra, t.target, t.node.aaaa)
		}
	case mdns.TypeTXT:
		if more.txt != nil {
			m.Answer = append(m.Answer, &mdns.TXT{Hdr: z.hdr(qname, mdns.TypeTXT), Txt: more.txt})
		}
	case mdns.TypeSOA:
		if more.apex {
			soa := z.soa(idx)
			soa.Hdr.Name = qname
			m.Answer = append(m.Answer, soa)
		}
	}
}

// podNode is the node of a name under pod.<zone> (spec 2.6, deprecated but required):
// <a>-<b>-<c>-<d>.<ns>.pod.<zone> is A <a>.<b>.<c>.<d> for any namespace, and an IPv6
// address with ':' written '-' is AAAA; <ns>.pod.<zone> exists. Nil for other names.
func (z *Zone) podNode(name string) *zoneNode {
	rel, ok := strings.CutSuffix(name, "."+z.podZone)
	if !ok {
		return nil
	}
	ipLabel, ns, two := strings.Cut(rel, ".")
	if !two {
		if !isLabel(rel) {
			return nil
		}
		return entNode
	}
	if !isLabel(ns) || strings.Contains(ns, ".") {
		return nil
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(ipLabel, "-", ".")); err == nil && a.Is4() {
		return &zoneNode{a: a.AsSlice()}
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(ipLabel, "-", ":")); err == nil && a.Is6() && a.Zone() == "" {
		return &zoneNode{aaaa: a.AsSlice()}
	}
	return nil
}

func (z *Zone) hdr(owner string, rrtype uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: owner, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: z.ttl}
}

// noMore is the nodeMore of a node without one.
var noMore nodeMore

// appendA appends an A record for each address of a node's a (4 bytes each).
func (z *Zone) appendA(rrs []mdns.RR, owner string, a []byte) []mdns.RR {
	for i := 0; i+4 <= len(a); i += 4 {
		rrs = append(rrs, &mdns.A{Hdr: z.hdr(owner, mdns.TypeA), A: net.IP(a[i : i+4 : i+4])})
	}
	return rrs
}

// appendAAAA appends an AAAA record for each address of a node's aaaa (16 bytes each).
func (z *Zone) appendAAAA(rrs []mdns.RR, owner string, aaaa []byte) []mdns.RR {
	for i := 0; i+16 <= len(aaaa); i += 16 {
		rrs = append(rrs, &mdns.AAAA{Hdr: z.hdr(owner, mdns.TypeAAAA), AAAA: net.IP(aaaa[i : i+16 : i+16])})
	}
	return rrs
}

// soa is a new copy of the zone's SOA (callers may change what they are given). Its TTL
// and minimum are the zone's TTL, so NXDOMAIN and NODATA are cached as long as answers.
func (z *Zone) soa(idx *zoneIndex) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     z.hdr(z.zone, mdns.TypeSOA),
		Ns:      z.soaNs,
		Mbox:    z.soaMbox,
		Serial:  idx.serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  z.ttl,
	}
}

// srvProto is the SRV protocol label of a Service port's protocol (TCP when empty, as in
// Kubernetes).
func srvProto(p string) (string, bool) {
	switch strings.ToUpper(p) {
	case "", "TCP":
		return "_tcp", true
	case "UDP":
		return "_udp", true
	case "SCTP":
		return "_sctp", true
	}
	return "", false
}

// srvWeight shares 100 among n targets of equal priority (at least 1 each).
func srvWeight(n int) uint16 {
	if n <= 0 || n >= 100 {
		return 1
	}
	return uint16(100 / n)
}

// cleanAddrs drops invalid addresses, unmaps IPv4-mapped IPv6 ones and drops zones.
func cleanAddrs(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		if !a.IsValid() {
			continue
		}
		out = append(out, a.Unmap().WithZone(""))
	}
	return out
}

// dashedAddr is an endpoint's generated hostname: its address with '.' or ':' as '-'
// (10-244-1-5, fd00--5), as CoreDNS names endpoints without a hostname.
func dashedAddr(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// reverseName is a's name under in-addr.arpa or ip6.arpa, as mdns.ReverseAddr writes it
// (lower-case nibbles), in one allocation.
func reverseName(a netip.Addr) string {
	const hex = "0123456789abcdef"
	if a.Is4() {
		b := a.As4()
		buf := make([]byte, 0, len("255.255.255.255.in-addr.arpa."))
		for i := 3; i >= 0; i-- {
			buf = strconv.AppendUint(buf, uint64(b[i]), 10)
			buf = append(buf, '.')
		}
		return string(append(buf, "in-addr.arpa."...))
	}
	b := a.As16()
	buf := make([]byte, 0, 32*2+len("ip6.arpa."))
	for i := 15; i >= 0; i-- {
		buf = append(buf, hex[b[i]&0xf], '.', hex[b[i]>>4], '.')
	}
	return string(append(buf, "ip6.arpa."...))
}

// nameFits reports whether a fully qualified name of plain labels fits the 255 octets
// of a domain name on the wire.
func nameFits(name string) bool { return len(name)+1 <= 255 }

// escapedAt reports whether the byte at i of a presentation-format name is escaped (an
// odd number of backslashes before it): "a\.cluster.local." is the label "a.cluster"
// under local., not a name in cluster.local.
func escapedAt(name string, i int) bool {
	n := 0
	for i--; i >= 0 && name[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func isReverseName(name string) bool {
	return strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa.")
}

// isLabel reports whether s (lower case) is an RFC 1123 label: 1-63 of [a-z0-9-], not
// starting or ending with '-'.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
