package dns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// quiet drops the warnings about the fixture's bad Services.
var quiet = slog.New(slog.DiscardHandler)

// fixture is a cluster with every kind of name the zone answers.
func fixture() *ClusterData {
	a := netip.MustParseAddr
	return &ClusterData{Services: []Service{
		{
			// ClusterIP, dual-stack, named and unnamed ports, one ready and one
			// not-ready endpoint.
			Namespace: "shop", Name: "web",
			ClusterIPs: []netip.Addr{a("10.96.12.7"), a("fd00:96::c7")},
			Ports: []Port{
				{Name: "http", Protocol: "TCP", Port: 80},
				{Name: "metrics", Protocol: "UDP", Port: 9000},
				{Protocol: "TCP", Port: 8080},
			},
			Endpoints: []Endpoint{
				{Addrs: []netip.Addr{a("10.244.1.5")}, Ready: true, Ports: map[string]uint16{"http": 8080}},
				{Addrs: []netip.Addr{a("10.244.2.9")}, Ready: false},
			},
		},
		{
			// Headless: a hostname, a generated name, an IPv6-only endpoint without
			// endpoint ports, and a not-ready endpoint with a hostname.
			Namespace: "shop", Name: "db", Headless: true,
			Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}},
			Endpoints: []Endpoint{
				{Addrs: []netip.Addr{a("10.244.1.10")}, Hostname: "db-0", Ready: true, Ports: map[string]uint16{"pg": 5432}},
				{Addrs: []netip.Addr{a("10.244.2.11")}, Ready: true, Ports: map[string]uint16{"pg": 15432}},
				{Addrs: []netip.Addr{a("10.244.3.12")}, Hostname: "db-2", Ready: false, Ports: map[string]uint16{"pg": 5432}},
				{Addrs: []netip.Addr{a("fd00:244::12")}, Ready: true},
			},
		},
		{Namespace: "shop", Name: "ext", ExternalName: "www.Example.org"},
		{
			// Headless with no ready endpoint: NXDOMAIN, as the spec says.
			Namespace: "shop", Name: "idle", Headless: true,
			Ports:     []Port{{Name: "http", Port: 80}},
			Endpoints: []Endpoint{{Addrs: []netip.Addr{a("10.244.4.4")}, Hostname: "idle-0"}},
		},
		{
			// A ClusterIP Service whose address is not allocated yet: the names exist.
			Namespace: "shop", Name: "pending",
			Ports: []Port{{Name: "http", Port: 80}},
		},
		{
			Namespace: "kube-system", Name: "kube-dns",
			ClusterIPs: []netip.Addr{a("10.96.0.10")},
			Ports: []Port{
				{Name: "dns", Protocol: "UDP", Port: 53},
				{Name: "dns-tcp", Protocol: "TCP", Port: 53},
			},
		},
		{
			Namespace: "lab", Name: "v6",
			ClusterIPs: []netip.Addr{a("fd00:96::1")},
			Ports:      []Port{{Name: "http", Protocol: "TCP", Port: 80}},
		},
		{
			// Headless with one dual-stack endpoint: both addresses under one name.
			Namespace: "lab", Name: "pair", Headless: true,
			Ports:     []Port{{Name: "http", Port: 80}},
			Endpoints: []Endpoint{{Addrs: []netip.Addr{a("10.244.5.5"), a("fd00:244::55")}, Hostname: "pair-0", Ready: true}},
		},
		// Left out, with a warning: not DNS labels.
		{Namespace: "shop", Name: "Bad_Name", ClusterIPs: []netip.Addr{a("10.96.99.99")}},
		{Namespace: "shop", Name: "badext", ExternalName: "bad..name"},
	}}
}

const soa = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"

// zoneCase is one query and the answer expected, as CoreDNS's plugin/kubernetes tables
// have them. forward means Answer returns ok false.
type zoneCase struct {
	qname   string
	qtype   uint16
	rcode   int
	answer  []string
	ns      []string
	extra   []string
	forward bool
}

var zoneCases = []zoneCase{
	// The schema version.
	{qname: "dns-version.cluster.local.", qtype: mdns.TypeTXT, answer: []string{`dns-version.cluster.local. 5 IN TXT "1.1.0"`}},
	{qname: "dns-version.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},

	// A ClusterIP Service.
	{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"web.shop.svc.cluster.local. 5 IN A 10.96.12.7"}},
	{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"web.shop.svc.cluster.local. 5 IN AAAA fd00:96::c7"}},
	{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeTXT, ns: []string{soa}},
	{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, ns: []string{soa}},
	{qname: "kube-dns.kube-system.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{qname: "kube-dns.kube-system.svc.cluster.local.", qtype: mdns.TypeAAAA, ns: []string{soa}},
	{qname: "v6.lab.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"v6.lab.svc.cluster.local. 5 IN AAAA fd00:96::1"}},
	{qname: "v6.lab.svc.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},

	// Case: matched without it, kept in the owner names, not in the SRV target.
	{qname: "WeB.ShOp.SVC.Cluster.LOCAL.", qtype: mdns.TypeA, answer: []string{"WeB.ShOp.SVC.Cluster.LOCAL. 5 IN A 10.96.12.7"}},
	{qname: "_HTTP._Tcp.Web.Shop.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_HTTP._Tcp.Web.Shop.svc.cluster.local. 5 IN SRV 0 100 80 web.shop.svc.cluster.local."},
		extra:  []string{"web.shop.svc.cluster.local. 5 IN A 10.96.12.7", "web.shop.svc.cluster.local. 5 IN AAAA fd00:96::c7"}},
	{qname: "NOPE.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// SRV for named ports of a ClusterIP Service: the Service is the target.
	{qname: "_http._tcp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_http._tcp.web.shop.svc.cluster.local. 5 IN SRV 0 100 80 web.shop.svc.cluster.local."},
		extra:  []string{"web.shop.svc.cluster.local. 5 IN A 10.96.12.7", "web.shop.svc.cluster.local. 5 IN AAAA fd00:96::c7"}},
	{qname: "_metrics._udp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_metrics._udp.web.shop.svc.cluster.local. 5 IN SRV 0 100 9000 web.shop.svc.cluster.local."},
		extra:  []string{"web.shop.svc.cluster.local. 5 IN A 10.96.12.7", "web.shop.svc.cluster.local. 5 IN AAAA fd00:96::c7"}},
	{qname: "_dns._udp.kube-dns.kube-system.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."},
		extra:  []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{qname: "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."},
		extra:  []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{qname: "_http._tcp.v6.lab.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_http._tcp.v6.lab.svc.cluster.local. 5 IN SRV 0 100 80 v6.lab.svc.cluster.local."},
		extra:  []string{"v6.lab.svc.cluster.local. 5 IN AAAA fd00:96::1"}},
	// ... NODATA for the SRV name's other types, NXDOMAIN for the wrong protocol and
	// names of unnamed ports, NODATA for the _proto empty non-terminal.
	{qname: "_http._tcp.web.shop.svc.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "_metrics._tcp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "_8080._tcp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "_tcp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, ns: []string{soa}},
	{qname: "_udp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, ns: []string{soa}},
	{qname: "_sctp.web.shop.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// A ClusterIP Service's ready endpoint has a name too (as in CoreDNS); the not-ready
	// one has none.
	{qname: "10-244-1-5.web.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"10-244-1-5.web.shop.svc.cluster.local. 5 IN A 10.244.1.5"}},
	{qname: "10-244-2-9.web.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// Headless: the ready endpoints, by hostname or generated name; not-ready left out.
	{qname: "db.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{
		"db.shop.svc.cluster.local. 5 IN A 10.244.1.10",
		"db.shop.svc.cluster.local. 5 IN A 10.244.2.11",
	}},
	{qname: "db.shop.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"db.shop.svc.cluster.local. 5 IN AAAA fd00:244::12"}},
	{qname: "db-0.db.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"db-0.db.shop.svc.cluster.local. 5 IN A 10.244.1.10"}},
	{qname: "DB-0.db.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"DB-0.db.shop.svc.cluster.local. 5 IN A 10.244.1.10"}},
	{qname: "db-0.db.shop.svc.cluster.local.", qtype: mdns.TypeAAAA, ns: []string{soa}},
	{qname: "10-244-2-11.db.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"10-244-2-11.db.shop.svc.cluster.local. 5 IN A 10.244.2.11"}},
	{qname: "fd00-244--12.db.shop.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"fd00-244--12.db.shop.svc.cluster.local. 5 IN AAAA fd00:244::12"}},
	{qname: "db-2.db.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "10-244-3-12.db.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "_pg._tcp.db.shop.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{
			"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.shop.svc.cluster.local.",
			"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 33 15432 10-244-2-11.db.shop.svc.cluster.local.",
			"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 33 5432 fd00-244--12.db.shop.svc.cluster.local.",
		},
		extra: []string{
			"db-0.db.shop.svc.cluster.local. 5 IN A 10.244.1.10",
			"10-244-2-11.db.shop.svc.cluster.local. 5 IN A 10.244.2.11",
			"fd00-244--12.db.shop.svc.cluster.local. 5 IN AAAA fd00:244::12",
		}},
	{qname: "pair.lab.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"pair.lab.svc.cluster.local. 5 IN AAAA fd00:244::55"}},
	{qname: "pair-0.pair.lab.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"pair-0.pair.lab.svc.cluster.local. 5 IN A 10.244.5.5"}},
	{qname: "_http._tcp.pair.lab.svc.cluster.local.", qtype: mdns.TypeSRV,
		answer: []string{"_http._tcp.pair.lab.svc.cluster.local. 5 IN SRV 0 100 80 pair-0.pair.lab.svc.cluster.local."},
		extra: []string{
			"pair-0.pair.lab.svc.cluster.local. 5 IN A 10.244.5.5",
			"pair-0.pair.lab.svc.cluster.local. 5 IN AAAA fd00:244::55",
		}},
	// Headless without a ready endpoint: NXDOMAIN, SRV names included.
	{qname: "idle.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "idle-0.idle.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "_http._tcp.idle.shop.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// No address allocated yet: the names exist, without records.
	{qname: "pending.shop.svc.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "_http._tcp.pending.shop.svc.cluster.local.", qtype: mdns.TypeSRV, ns: []string{soa}},

	// ExternalName: a CNAME for every type; the resolver follows it.
	{qname: "ext.shop.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"ext.shop.svc.cluster.local. 5 IN CNAME www.example.org."}},
	{qname: "Ext.Shop.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"Ext.Shop.svc.cluster.local. 5 IN CNAME www.example.org."}},
	{qname: "ext.shop.svc.cluster.local.", qtype: mdns.TypeCNAME, answer: []string{"ext.shop.svc.cluster.local. 5 IN CNAME www.example.org."}},
	{qname: "x.ext.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	// Services left out.
	{qname: "bad_name.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "badext.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// Existing names without records (NODATA) against names that do not exist.
	{qname: "cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "cluster.local.", qtype: mdns.TypeNS, ns: []string{soa}},
	{qname: "Cluster.Local.", qtype: mdns.TypeSOA, answer: []string{strings.Replace(soa, "cluster.local.", "Cluster.Local.", 1)}},
	{qname: "svc.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "shop.svc.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "kube-system.svc.cluster.local.", qtype: mdns.TypeSRV, ns: []string{soa}},
	{qname: "nons.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "web.nons.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "nothing.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "x.web.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "web.shop.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	// Escaped dots: "a\.cluster" is one label under local., "a\\" one in the zone.
	{qname: `a\.cluster.local.`, qtype: mdns.TypeA, forward: true},
	{qname: `a\\.cluster.local.`, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: `web\.shop.svc.cluster.local.`, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	// No wildcards (optional in the spec, deprecated).
	{qname: "*.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},

	// Pod names (spec 2.6): any dashed address in any namespace.
	{qname: "10-244-1-5.shop.pod.cluster.local.", qtype: mdns.TypeA, answer: []string{"10-244-1-5.shop.pod.cluster.local. 5 IN A 10.244.1.5"}},
	{qname: "10-244-1-5.any.pod.cluster.local.", qtype: mdns.TypeAAAA, ns: []string{soa}},
	{qname: "fd00--5.shop.pod.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"fd00--5.shop.pod.cluster.local. 5 IN AAAA fd00::5"}},
	{qname: "1--2-3.shop.pod.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"1--2-3.shop.pod.cluster.local. 5 IN AAAA 1::2:3"}},
	{qname: "10-244-1-256.shop.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "web.shop.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "10-244-1-5.a.b.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
	{qname: "shop.pod.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},
	{qname: "pod.cluster.local.", qtype: mdns.TypeA, ns: []string{soa}},

	// PTR: ClusterIPs and ready endpoint addresses; unknown addresses are forwarded.
	{qname: "7.12.96.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{"7.12.96.10.in-addr.arpa. 5 IN PTR web.shop.svc.cluster.local."}},
	{qname: "7.12.96.10.IN-ADDR.ARPA.", qtype: mdns.TypePTR, answer: []string{"7.12.96.10.IN-ADDR.ARPA. 5 IN PTR web.shop.svc.cluster.local."}},
	{qname: "7.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", qtype: mdns.TypePTR,
		answer: []string{"7.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web.shop.svc.cluster.local."}},
	{qname: "7.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.D.F.ip6.arpa.", qtype: mdns.TypePTR,
		answer: []string{"7.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.D.F.ip6.arpa. 5 IN PTR web.shop.svc.cluster.local."}},
	{qname: "5.1.244.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{"5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.web.shop.svc.cluster.local."}},
	{qname: "10.1.244.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{"10.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.shop.svc.cluster.local."}},
	{qname: "2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.", qtype: mdns.TypePTR,
		answer: []string{"2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa. 5 IN PTR fd00-244--12.db.shop.svc.cluster.local."}},
	{qname: "10.0.96.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{"10.0.96.10.in-addr.arpa. 5 IN PTR kube-dns.kube-system.svc.cluster.local."}},
	{qname: "7.12.96.10.in-addr.arpa.", qtype: mdns.TypeA},                   // known address, other type: NODATA
	{qname: "9.2.244.10.in-addr.arpa.", qtype: mdns.TypePTR, forward: true},  // not ready
	{qname: "12.3.244.10.in-addr.arpa.", qtype: mdns.TypePTR, forward: true}, // not ready
	{qname: "4.4.244.10.in-addr.arpa.", qtype: mdns.TypePTR, forward: true},  // idle's endpoint, not ready
	{qname: "1.1.1.1.in-addr.arpa.", qtype: mdns.TypePTR, forward: true},
	{qname: "12.96.10.in-addr.arpa.", qtype: mdns.TypePTR, forward: true},
	{qname: "in-addr.arpa.", qtype: mdns.TypeSOA, forward: true},

	// Names outside the zone are not the zone's.
	{qname: "example.org.", qtype: mdns.TypeA, forward: true},
	{qname: "web.shop.svc.cluster.local.example.org.", qtype: mdns.TypeA, forward: true},
	{qname: "notcluster.local.", qtype: mdns.TypeA, forward: true},
	{qname: "local.", qtype: mdns.TypeSOA, forward: true},
	{qname: ".", qtype: mdns.TypeNS, forward: true},

	// Questions the zone does not look up.
	{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeANY, rcode: mdns.RcodeNotImplemented},
	{qname: "cluster.local.", qtype: mdns.TypeAXFR, rcode: mdns.RcodeRefused},
	{qname: "cluster.local.", qtype: mdns.TypeIXFR, rcode: mdns.RcodeRefused},
	{qname: "7.12.96.10.in-addr.arpa.", qtype: mdns.TypeANY, rcode: mdns.RcodeNotImplemented},
}

func TestZoneAnswer(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	z.Update(fixture())
	for _, tc := range zoneCases {
		t.Run(mdns.TypeToString[tc.qtype]+" "+tc.qname, func(t *testing.T) {
			req := new(mdns.Msg).SetQuestion(tc.qname, tc.qtype)
			resp, ok := z.Answer(req)
			checkAnswer(t, req, resp, ok, tc)
		})
	}
}

// checkAnswer compares resp with tc: rcode, flags and each section in order.
func checkAnswer(t *testing.T, req, resp *mdns.Msg, ok bool, tc zoneCase) {
	t.Helper()
	if tc.forward {
		if ok || resp != nil {
			t.Fatalf("Answer = %v, %v; want nil, false (forwarded)", resp, ok)
		}
		return
	}
	if !ok || resp == nil {
		t.Fatalf("Answer = %v, %v; want an answer", resp, ok)
	}
	if _, err := resp.Pack(); err != nil {
		t.Fatalf("response does not pack: %v\n%v", err, resp)
	}
	if resp.Rcode != tc.rcode {
		t.Errorf("rcode %s, want %s\n%v", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tc.rcode], resp)
	}
	if !resp.Response || resp.Id != req.Id || resp.RecursionDesired != req.RecursionDesired {
		t.Errorf("header: response %v, id %d (req %d), rd %v (req %v)", resp.Response, resp.Id, req.Id,
			resp.RecursionDesired, req.RecursionDesired)
	}
	// Looked-up answers are authoritative; refusals are not.
	looked := tc.rcode == mdns.RcodeSuccess || tc.rcode == mdns.RcodeNameError
	if resp.Authoritative != looked {
		t.Errorf("AA %v, want %v", resp.Authoritative, looked)
	}
	if len(resp.Question) != 1 || resp.Question[0] != req.Question[0] {
		t.Errorf("question %v, want %v", resp.Question, req.Question)
	}
	checkSection(t, "answer", resp.Answer, tc.answer)
	checkSection(t, "authority", resp.Ns, tc.ns)
	checkSection(t, "additional", resp.Extra, tc.extra)
}

func checkSection(t *testing.T, section string, got []mdns.RR, want []string) {
	t.Helper()
	var g, w []string
	for _, rr := range got {
		g = append(g, rr.String())
	}
	for _, s := range want {
		rr, err := mdns.NewRR(s)
		if err != nil {
			t.Fatalf("bad test RR %q: %v", s, err)
		}
		w = append(w, rr.String())
	}
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("%s:\n%s\nwant:\n%s", section, strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

func TestZoneBeforeUpdate(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	if z.Synced() {
		t.Fatal("Synced before the first Update")
	}
	for _, tc := range []zoneCase{
		{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeServerFailure},
		{qname: "nothing.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeServerFailure},
		{qname: "dns-version.cluster.local.", qtype: mdns.TypeTXT, rcode: mdns.RcodeServerFailure},
		{qname: "Cluster.Local.", qtype: mdns.TypeSOA, rcode: mdns.RcodeServerFailure},
		// Unknown until the first Update: forwarded.
		{qname: "7.12.96.10.in-addr.arpa.", qtype: mdns.TypePTR, forward: true},
		{qname: "example.org.", qtype: mdns.TypeA, forward: true},
		// Refusals do not wait for data.
		{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeANY, rcode: mdns.RcodeNotImplemented},
	} {
		req := new(mdns.Msg).SetQuestion(tc.qname, tc.qtype)
		resp, ok := z.Answer(req)
		if !tc.forward && resp != nil && resp.Rcode == mdns.RcodeServerFailure {
			// SERVFAIL is not authoritative: checkAnswer's AA rule covers NOERROR
			// and NXDOMAIN only.
			if resp.Authoritative {
				t.Errorf("%s: SERVFAIL with AA", tc.qname)
			}
		}
		t.Run(tc.qname, func(t *testing.T) { checkAnswer(t, req, resp, ok, tc) })
	}
	z.Update(nil)
	if !z.Synced() {
		t.Fatal("not Synced after Update(nil)")
	}
	req := new(mdns.Msg).SetQuestion("web.shop.svc.cluster.local.", mdns.TypeA)
	resp, ok := z.Answer(req)
	checkAnswer(t, req, resp, ok, zoneCase{rcode: mdns.RcodeNameError, ns: []string{soa}})
}

func TestZoneBadRequests(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	z.Update(fixture())

	q := func(name string, qtype, class uint16) mdns.Question {
		return mdns.Question{Name: name, Qtype: qtype, Qclass: class}
	}
	for _, tc := range []struct {
		name      string
		questions []mdns.Question
		opcode    int
		rcode     int
		forward   bool
	}{
		{name: "no question", rcode: mdns.RcodeFormatError},
		{name: "two questions", rcode: mdns.RcodeFormatError, questions: []mdns.Question{
			q("web.shop.svc.cluster.local.", mdns.TypeA, mdns.ClassINET),
			q("db.shop.svc.cluster.local.", mdns.TypeA, mdns.ClassINET),
		}},
		{name: "class CH", rcode: mdns.RcodeRefused, questions: []mdns.Question{q("web.shop.svc.cluster.local.", mdns.TypeA, mdns.ClassCHAOS)}},
		{name: "class ANY", rcode: mdns.RcodeRefused, questions: []mdns.Question{q("web.shop.svc.cluster.local.", mdns.TypeA, mdns.ClassANY)}},
		{name: "class CH reverse", rcode: mdns.RcodeRefused, questions: []mdns.Question{q("7.12.96.10.in-addr.arpa.", mdns.TypePTR, mdns.ClassCHAOS)}},
		{name: "class CH outside", forward: true, questions: []mdns.Question{q("version.bind.", mdns.TypeTXT, mdns.ClassCHAOS)}},
		{name: "notify", opcode: mdns.OpcodeNotify, rcode: mdns.RcodeNotImplemented, questions: []mdns.Question{q("cluster.local.", mdns.TypeSOA, mdns.ClassINET)}},
		{name: "update", opcode: mdns.OpcodeUpdate, rcode: mdns.RcodeNotImplemented, questions: []mdns.Question{q("cluster.local.", mdns.TypeSOA, mdns.ClassINET)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &mdns.Msg{Question: tc.questions}
			req.Id = 4242
			req.Opcode = tc.opcode
			resp, ok := z.Answer(req)
			if tc.forward {
				if ok {
					t.Fatalf("Answer = %v, true; want forwarded", resp)
				}
				return
			}
			if !ok {
				t.Fatal("forwarded; want an answer")
			}
			if resp.Rcode != tc.rcode || resp.Id != req.Id || !resp.Response {
				t.Errorf("rcode %s id %d response %v; want %s id %d response",
					mdns.RcodeToString[resp.Rcode], resp.Id, resp.Response, mdns.RcodeToString[tc.rcode], req.Id)
			}
			if len(resp.Answer)+len(resp.Ns)+len(resp.Extra) > 0 && tc.rcode != mdns.RcodeSuccess {
				t.Errorf("records in a %s: %v", mdns.RcodeToString[resp.Rcode], resp)
			}
			if _, err := resp.Pack(); err != nil {
				t.Errorf("response does not pack: %v", err)
			}
		})
	}
}

// TestZoneUpdate: a Service removed is NXDOMAIN and one added answers after the next
// Update, the SOA serial moves, and a response already given keeps its records.
func TestZoneUpdate(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	d := fixture()
	z.Update(d)
	req := new(mdns.Msg).SetQuestion("web.shop.svc.cluster.local.", mdns.TypeA)
	before, _ := z.Answer(req)

	changed := &ClusterData{Services: append([]Service{{
		Namespace: "shop", Name: "cart", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.12.8")},
	}}, d.Services[1:]...)}
	z.Update(changed)
	soa2 := strings.Replace(soa, " 1 7200", " 2 7200", 1)
	resp, ok := z.Answer(req)
	checkAnswer(t, req, resp, ok, zoneCase{rcode: mdns.RcodeNameError, ns: []string{soa2}})
	req = new(mdns.Msg).SetQuestion("cart.shop.svc.cluster.local.", mdns.TypeA)
	resp, ok = z.Answer(req)
	checkAnswer(t, req, resp, ok, zoneCase{answer: []string{"cart.shop.svc.cluster.local. 5 IN A 10.96.12.8"}})
	req = new(mdns.Msg).SetQuestion("7.12.96.10.in-addr.arpa.", mdns.TypePTR)
	if resp, ok := z.Answer(req); ok {
		t.Errorf("PTR of a removed ClusterIP answered: %v", resp)
	}

	checkSection(t, "earlier answer", before.Answer, []string{"web.shop.svc.cluster.local. 5 IN A 10.96.12.7"})
	// The data given is not kept: changing it changes nothing.
	changed.Services[0].ClusterIPs[0] = netip.MustParseAddr("10.96.12.9")
	req = new(mdns.Msg).SetQuestion("cart.shop.svc.cluster.local.", mdns.TypeA)
	resp, _ = z.Answer(req)
	checkSection(t, "after changing the data", resp.Answer, []string{"cart.shop.svc.cluster.local. 5 IN A 10.96.12.8"})
}

func TestZoneConfig(t *testing.T) {
	z := NewZone(ZoneConfig{Zone: "Tabby.Example.", TTL: 30 * time.Second, Logger: quiet})
	z.Update(fixture())
	if z.Origin() != "tabby.example." {
		t.Errorf("Origin %q", z.Origin())
	}
	soa := "tabby.example. 30 IN SOA ns.dns.tabby.example. hostmaster.tabby.example. 1 7200 1800 86400 30"
	for _, tc := range []zoneCase{
		{qname: "web.shop.svc.tabby.example.", qtype: mdns.TypeA, answer: []string{"web.shop.svc.tabby.example. 30 IN A 10.96.12.7"}},
		{qname: "dns-version.tabby.example.", qtype: mdns.TypeTXT, answer: []string{`dns-version.tabby.example. 30 IN TXT "1.1.0"`}},
		{qname: "nope.svc.tabby.example.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, ns: []string{soa}},
		{qname: "7.12.96.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{"7.12.96.10.in-addr.arpa. 30 IN PTR web.shop.svc.tabby.example."}},
		{qname: "web.shop.svc.cluster.local.", qtype: mdns.TypeA, forward: true},
	} {
		req := new(mdns.Msg).SetQuestion(tc.qname, tc.qtype)
		resp, ok := z.Answer(req)
		t.Run(tc.qname, func(t *testing.T) { checkAnswer(t, req, resp, ok, tc) })
	}

	for _, cfg := range []ZoneConfig{
		{Zone: "."},
		{Zone: "bad_zone.local"},
		{Zone: "a..b"},
		{Zone: strings.Repeat("a.", 101) + "local"},
		{TTL: -time.Second},
		{TTL: 1500 * time.Millisecond},
		{TTL: 2 * time.Hour},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", cfg)
		}
	}
	if err := (ZoneConfig{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("NewZone with a bad config did not panic")
		}
	}()
	NewZone(ZoneConfig{Zone: "bad_zone"})
}

// FuzzZoneAnswer: any message that unpacks gets no panic, and any answer packs.
func FuzzZoneAnswer(f *testing.F) {
	for _, tc := range zoneCases {
		m := new(mdns.Msg).SetQuestion(tc.qname, tc.qtype)
		m.SetEdns0(1232, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	synced := NewZone(ZoneConfig{Logger: quiet})
	synced.Update(fixture())
	unsynced := NewZone(ZoneConfig{Logger: quiet})
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		for _, z := range []*Zone{synced, unsynced} {
			resp, ok := z.Answer(req)
			if !ok {
				if resp != nil {
					t.Fatalf("ok false with a response: %v", resp)
				}
				continue
			}
			if resp == nil {
				t.Fatal("ok true without a response")
			}
			if _, err := resp.Pack(); err != nil {
				t.Fatalf("response does not pack: %v\nrequest: %v\nresponse: %v", err, req, resp)
			}
		}
	})
}

// BenchmarkZoneAnswer answers A queries over 10,000 Services (100 namespaces of 100):
// hits and NXDOMAINs. It also reports the time of one Update of that cluster and the
// heap its index holds (index-MB).
func BenchmarkZoneAnswer(b *testing.B) {
	d := &ClusterData{}
	for i := range 10000 {
		ns, n := i/100, i%100
		d.Services = append(d.Services, Service{
			Namespace:  fmt.Sprintf("ns-%d", ns),
			Name:       fmt.Sprintf("svc-%d", n),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports:      []Port{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "metrics", Protocol: "TCP", Port: 9090}},
			Endpoints: []Endpoint{
				{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})}, Ready: true},
				{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)})}, Ready: true},
			},
		})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	z := NewZone(ZoneConfig{Logger: quiet})
	z.Update(d)
	runtime.GC()
	runtime.ReadMemStats(&after)
	indexMB := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)

	queries := func(format string) []*mdns.Msg {
		var qs []*mdns.Msg
		for i := 0; i < 10000; i += 7 {
			qs = append(qs, new(mdns.Msg).SetQuestion(fmt.Sprintf(format, i%100, i/100), mdns.TypeA))
		}
		return qs
	}
	run := func(b *testing.B, qs []*mdns.Msg, rcode int) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			resp, ok := z.Answer(qs[i%len(qs)])
			if !ok || resp.Rcode != rcode {
				b.Fatalf("Answer = %v, %v", resp, ok)
			}
			i++
		}
	}
	b.Run("hit", func(b *testing.B) { run(b, queries("svc-%d.ns-%d.svc.cluster.local."), mdns.RcodeSuccess) })
	b.Run("nxdomain", func(b *testing.B) { run(b, queries("nope-%d.ns-%d.svc.cluster.local."), mdns.RcodeNameError) })
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			z.Update(d)
		}
		b.ReportMetric(indexMB, "index-MB")
	})
}

// TestZoneLongNames: names that would not fit 255 octets are left out, and every answer
// still packs.
func TestZoneLongNames(t *testing.T) {
	zone := strings.Repeat("z", 60) + "." + strings.Repeat("y", 60) + ".local"
	ns, name := strings.Repeat("n", 50), strings.Repeat("s", 50)
	z := NewZone(ZoneConfig{Zone: zone, Logger: quiet})
	z.Update(&ClusterData{Services: []Service{
		{
			Namespace: ns, Name: name, Headless: true,
			Ports: []Port{{Name: "http", Port: 80}, {Name: strings.Repeat("p", 20), Port: 81}},
			Endpoints: []Endpoint{
				{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Hostname: strings.Repeat("h", 30), Ready: true},
				{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Hostname: "h", Ready: true},
			},
		},
		{Namespace: strings.Repeat("m", 63), Name: strings.Repeat("t", 63), ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}},
	}})
	svc := name + "." + ns + ".svc." + zone + "."
	for _, tc := range []struct {
		qname   string
		qtype   uint16
		rcode   int
		answers int
	}{
		{svc, mdns.TypeA, mdns.RcodeSuccess, 1}, // only the endpoint whose name fits
		{"h." + svc, mdns.TypeA, mdns.RcodeSuccess, 1},
		{"_http._tcp." + svc, mdns.TypeSRV, mdns.RcodeSuccess, 1},
		{"_" + strings.Repeat("p", 20) + "._tcp." + svc, mdns.TypeSRV, mdns.RcodeNameError, 0},
		{"1.0.0.10.in-addr.arpa.", mdns.TypePTR, -1, 0}, // left out: forwarded
		{"1.0.96.10.in-addr.arpa.", mdns.TypePTR, -1, 0},
	} {
		resp, ok := z.Answer(new(mdns.Msg).SetQuestion(tc.qname, tc.qtype))
		if tc.rcode < 0 {
			if ok {
				t.Errorf("%s: answered, want forwarded: %v", tc.qname, resp)
			}
			continue
		}
		if !ok || resp.Rcode != tc.rcode || len(resp.Answer) != tc.answers {
			t.Errorf("%s: %v, %v; want %s with %d answers", tc.qname, resp, ok, mdns.RcodeToString[tc.rcode], tc.answers)
			continue
		}
		if _, err := resp.Pack(); err != nil {
			t.Errorf("%s: response does not pack: %v", tc.qname, err)
		}
	}
}

// TestZoneConcurrent: queries during Updates see one index or the other (run with -race).
func TestZoneConcurrent(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	z.Update(fixture())
	without := fixture()
	without.Services = without.Services[1:]
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 2000 {
				resp, ok := z.Answer(new(mdns.Msg).SetQuestion("web.shop.svc.cluster.local.", mdns.TypeA))
				if !ok || (resp.Rcode == mdns.RcodeSuccess) != (len(resp.Answer) == 1) {
					t.Errorf("torn answer: %v", resp)
					return
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			z.Update(without)
		} else {
			z.Update(fixture())
		}
	}
	wg.Wait()
}

func TestReverseName(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.96.12.7", "255.255.255.255", "1.20.255.3", "::", "::1", "fd00:96::c7", "2001:db8:ffff:abcd:1234:5678:9abc:def0"} {
		want, err := mdns.ReverseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := reverseName(netip.MustParseAddr(s)); got != want {
			t.Errorf("reverseName(%s) = %q, want %q", s, got, want)
		}
	}
}

// TestZoneNamespaces: "<namespace>.svc.<zone>" of a namespace without Services is NODATA
// (it exists, as CoreDNS answers), one of no namespace NXDOMAIN; names below an empty
// namespace stay NXDOMAIN.
func TestZoneNamespaces(t *testing.T) {
	z := NewZone(ZoneConfig{Logger: quiet})
	d := fixture()
	d.Namespaces = []string{"shop", "Empty"}
	z.Update(d)
	for _, tc := range []struct {
		qname string
		rcode int
	}{
		{"empty.svc.cluster.local.", mdns.RcodeSuccess},
		{"EMPTY.svc.cluster.local.", mdns.RcodeSuccess},
		{"shop.svc.cluster.local.", mdns.RcodeSuccess},
		{"nope.svc.cluster.local.", mdns.RcodeNameError},
		{"web.empty.svc.cluster.local.", mdns.RcodeNameError},
	} {
		resp, ok := z.Answer(new(mdns.Msg).SetQuestion(tc.qname, mdns.TypeA))
		if !ok || resp.Rcode != tc.rcode || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
			t.Errorf("%s: %v %v, want %s, no answer, the SOA", tc.qname, resp, ok, mdns.RcodeToString[tc.rcode])
		}
	}
}
