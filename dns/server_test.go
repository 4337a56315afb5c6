package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeAuthority owns cluster.local: web.shop.svc.cluster.local A 10.96.12.7, big.cluster.local
// with 100 A records, n<i>.svc.cluster.local A for i < services, NXDOMAIN with an SOA for
// the rest of the zone; panic.cluster.local panics.
type fakeAuthority struct {
	services int
	synced   atomic.Bool
	soa      mdns.RR
	web      mdns.RR
	big      []mdns.RR
	names    map[string]netip.Addr
}

func newFakeAuthority(services int) *fakeAuthority {
	a := &fakeAuthority{services: services, names: make(map[string]netip.Addr)}
	a.soa, _ = mdns.NewRR("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5")
	a.web, _ = mdns.NewRR("web.shop.svc.cluster.local. 5 IN A 10.96.12.7")
	for i := range 100 {
		rr, _ := mdns.NewRR(fmt.Sprintf("big.cluster.local. 5 IN A 10.97.0.%d", i))
		a.big = append(a.big, rr)
	}
	for i := range services {
		a.names[fmt.Sprintf("n%d.svc.cluster.local.", i)] = netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
	}
	a.synced.Store(true)
	return a
}

func (a *fakeAuthority) Synced() bool { return a.synced.Load() }

// Version is constant: the fake's answers never change, so the server keeps them.
func (a *fakeAuthority) Version() uint64 { return 1 }

func (a *fakeAuthority) Answer(req *mdns.Msg) (*mdns.Msg, bool) {
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name == "panic.cluster.local." {
		panic("a bug in the zone")
	}
	if name != "cluster.local." && !strings.HasSuffix(name, ".cluster.local.") {
		return nil, false
	}
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	with := func(rr mdns.RR) mdns.RR {
		cp := mdns.Copy(rr)
		cp.Header().Name = q.Name
		return cp
	}
	switch {
	case name == "web.shop.svc.cluster.local." && q.Qtype == mdns.TypeA:
		m.Answer = []mdns.RR{with(a.web)}
	case name == "big.cluster.local." && q.Qtype == mdns.TypeA:
		m.Answer = a.big
	case a.names[name].IsValid() && q.Qtype == mdns.TypeA:
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 5}, A: a.names[name].AsSlice()}}
	default:
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{a.soa}
	}
	return m, true
}

// startServer runs a server on 127.0.0.1 port 0 until the test ends and returns its address.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, s.Addrs()[0].String()
}

func exchange(t testing.TB, net, addr string, req *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: net, Timeout: 2 * time.Second, UDPSize: 65535}
	resp, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatalf("%s %v: %v", net, req.Question, err)
	}
	return resp
}

type countMetrics struct {
	mu      sync.Mutex
	queries map[string]int
	hits    int
	misses  int
	ups     int
}

func (m *countMetrics) Query(qtype, rcode string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.queries == nil {
		m.queries = make(map[string]int)
	}
	m.queries[qtype+" "+rcode]++
}

func (m *countMetrics) Cache(hit bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hit {
		m.hits++
	} else {
		m.misses++
	}
}

func (m *countMetrics) Upstream(time.Duration, error) {
	m.mu.Lock()
	m.ups++
	m.mu.Unlock()
}

func TestServerAuthorityCacheForward(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.9"))
	met := &countMetrics{}
	f, err := NewForwarder(ForwarderConfig{Upstreams: []string{up.addr}, Log: quietLog(), Metrics: met})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, Config{Authority: newFakeAuthority(0), Cache: NewCache(CacheConfig{}), Forwarder: f, Metrics: met})

	resp := exchange(t, "udp", addr, query("Web.Shop.svc.cluster.local.", mdns.TypeA))
	if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].Header().Name != "Web.Shop.svc.cluster.local." || !resp.Authoritative {
		t.Errorf("authority answer: %v", resp)
	}
	resp = exchange(t, "udp", addr, query("nope.svc.cluster.local.", mdns.TypeA))
	if resp.Rcode != mdns.RcodeNameError || len(resp.Ns) != 1 {
		t.Errorf("authority NXDOMAIN: %v", resp)
	}

	for i := range 20 {
		name := "www.example.org."
		if i%2 == 1 {
			name = "WWW.Example.org."
		}
		resp := exchange(t, "udp", addr, query(name, mdns.TypeA))
		if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].(*mdns.A).A.String() != "192.0.2.9" || resp.Question[0].Name != name {
			t.Fatalf("forwarded answer %d: %v", i, resp)
		}
	}
	if n := up.seen(); n != 1 {
		t.Errorf("upstream saw %d queries for 20, want 1", n)
	}
	// A negative answer is cached too.
	for range 3 {
		if resp := exchange(t, "tcp", addr, query("nx.example.org.", mdns.TypeA)); resp.Rcode != mdns.RcodeNameError {
			t.Errorf("forwarded NXDOMAIN: %v", resp)
		}
	}
	if n := up.seen(); n != 2 {
		t.Errorf("upstream saw %d queries, want 2", n)
	}
	met.mu.Lock()
	defer met.mu.Unlock()
	if met.queries["A NOERROR"] != 21 || met.queries["A NXDOMAIN"] != 4 || met.hits != 21 || met.misses != 2 || met.ups != 2 {
		t.Errorf("metrics: %v hits %d misses %d upstream %d", met.queries, met.hits, met.misses, met.ups)
	}
}

func TestServerTruncation(t *testing.T) {
	_, addr := startServer(t, Config{Authority: newFakeAuthority(0)})

	req := query("big.cluster.local.", mdns.TypeA)
	req.SetEdns0(600, false)
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Compress = true
	wire, _ := resp.Pack()
	if !resp.Truncated || len(wire) > 600 || resp.IsEdns0() == nil {
		t.Errorf("udp with 600 bytes: TC %v, %d bytes, OPT %v", resp.Truncated, len(wire), resp.IsEdns0())
	}
	// Without OPT: 512 bytes.
	resp, _, err = c.Exchange(query("big.cluster.local.", mdns.TypeA), addr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Compress = true
	if wire, _ := resp.Pack(); !resp.Truncated || len(wire) > 512 || resp.IsEdns0() != nil {
		t.Errorf("udp without EDNS: TC %v, %d bytes, OPT %v", resp.Truncated, len(wire), resp.IsEdns0())
	}
	// Large enough EDNS size: everything, and the DO bit echoed.
	big := query("big.cluster.local.", mdns.TypeA)
	big.SetEdns0(4096, true)
	resp = exchange(t, "udp", addr, big)
	if resp.Truncated || len(resp.Answer) != 100 || resp.IsEdns0() == nil || !resp.IsEdns0().Do() {
		t.Errorf("udp with 4096 bytes: TC %v, %d answers", resp.Truncated, len(resp.Answer))
	}
	// The TCP retry gets it all.
	resp = exchange(t, "tcp", addr, req)
	if resp.Truncated || len(resp.Answer) != 100 {
		t.Errorf("tcp: TC %v, %d answers", resp.Truncated, len(resp.Answer))
	}
}

func TestServerRefusesAndNotImp(t *testing.T) {
	s, addr := startServer(t, Config{Authority: newFakeAuthority(0)})
	if !s.Ready() {
		t.Error("not ready with a synced authority")
	}
	ch := query("version.bind.", mdns.TypeTXT)
	ch.Question[0].Qclass = mdns.ClassCHAOS
	notify := query("cluster.local.", mdns.TypeSOA)
	notify.Opcode = mdns.OpcodeNotify
	badvers := query("web.shop.svc.cluster.local.", mdns.TypeA)
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	for _, tc := range []struct {
		name  string
		req   *mdns.Msg
		rcode int
	}{
		{"ANY", query("web.shop.svc.cluster.local.", mdns.TypeANY), mdns.RcodeNotImplemented},
		{"CH", ch, mdns.RcodeRefused},
		{"NOTIFY", notify, mdns.RcodeNotImplemented},
		{"AXFR", query("cluster.local.", mdns.TypeAXFR), mdns.RcodeRefused},
		{"no forwarder", query("example.org.", mdns.TypeA), mdns.RcodeRefused},
		{"EDNS version 1", badvers, mdns.RcodeBadVers},
		{"authority panics", query("panic.cluster.local.", mdns.TypeA), mdns.RcodeServerFailure},
	} {
		for _, proto := range []string{"udp", "tcp"} {
			resp := exchange(t, proto, addr, tc.req)
			if resp.Rcode != tc.rcode || resp.Id != tc.req.Id {
				t.Errorf("%s over %s: rcode %s id %d, want %s id %d", tc.name, proto,
					mdns.RcodeToString[resp.Rcode], resp.Id, mdns.RcodeToString[tc.rcode], tc.req.Id)
			}
		}
	}
}

func TestServerBadPackets(t *testing.T) {
	_, addr := startServer(t, Config{Authority: newFakeAuthority(0)})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	good, _ := query("web.shop.svc.cluster.local.", mdns.TypeA).Pack()
	twoQ := query("web.shop.svc.cluster.local.", mdns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	twoQWire, _ := twoQ.Pack()
	resp := query("web.shop.svc.cluster.local.", mdns.TypeA)
	resp.Response = true
	respWire, _ := resp.Pack()
	garbage := append([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0}, []byte("\xffnot a name at all")...)
	oversized := append(append([]byte(nil), good...), []byte(strings.Repeat("\xff", 4000))...)
	oversized[11] = 5 // ARCOUNT 5 over 0xff bytes: unpackable

	for _, tc := range []struct {
		name  string
		pkt   []byte
		rcode int // -1: dropped
	}{
		{"empty", []byte{}, -1},
		{"short", []byte{0x12, 0x34, 0x01}, -1},
		{"response", respWire, -1},
		{"garbage", garbage, mdns.RcodeFormatError},
		{"truncated query", good[:len(good)-3], mdns.RcodeFormatError},
		{"two questions", twoQWire, mdns.RcodeFormatError},
		{"oversized", oversized, mdns.RcodeFormatError},
	} {
		conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := conn.Write(tc.pkt); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if tc.rcode < 0 {
			if err == nil {
				t.Errorf("%s: got a %d-byte reply, want none", tc.name, n)
			}
		} else {
			m := new(mdns.Msg)
			if err != nil || n < 12 {
				t.Errorf("%s: no reply (%v)", tc.name, err)
			} else if err := m.Unpack(buf[:n]); err != nil || m.Rcode != tc.rcode || !m.Response || (len(tc.pkt) >= 2 && m.Id != uint16(tc.pkt[0])<<8|uint16(tc.pkt[1])) {
				t.Errorf("%s: reply %v (%v), want %s", tc.name, m, err, mdns.RcodeToString[tc.rcode])
			}
		}
		// The server keeps serving.
		if r := exchange(t, "udp", addr, query("web.shop.svc.cluster.local.", mdns.TypeA)); len(r.Answer) != 1 {
			t.Fatalf("after %s: %v", tc.name, r)
		}
	}

	// Over TCP, a garbage message gets FORMERR and a dropped one ends the connection.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	co := &mdns.Conn{Conn: tc}
	co.Write(garbage)
	tc.SetDeadline(time.Now().Add(2 * time.Second))
	if m, err := co.ReadMsg(); err != nil || m.Rcode != mdns.RcodeFormatError {
		t.Errorf("tcp garbage: %v %v", m, err)
	}
	co.Write([]byte{1})
	if _, err := co.ReadMsg(); err == nil {
		t.Error("tcp: a reply to a one-byte message")
	}
}

// TestServerLoop: the only upstream is a relay back to the server itself (as an upstream
// that forwards to us would be). The query is answered SERVFAIL, the loop counted, and
// the relay sees the query once, not over and over.
func TestServerLoop(t *testing.T) {
	relay, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	var relayed atomic.Int32
	target := make(chan string, 1)
	f := newTestForwarder(t, time.Second, relay.LocalAddr().String())
	_, addr := startServer(t, Config{Forwarder: f, Cache: NewCache(CacheConfig{})})
	target <- addr
	go func() {
		to := <-target
		buf := make([]byte, 65535)
		for {
			n, from, err := relay.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			relayed.Add(1)
			pkt := append([]byte(nil), buf[:n]...)
			go func() {
				c, err := net.Dial("udp", to)
				if err != nil {
					return
				}
				defer c.Close()
				c.Write(pkt)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				b := make([]byte, 65535)
				if n, err := c.Read(b); err == nil {
					relay.WriteToUDPAddrPort(b[:n], from)
				}
			}()
		}
	}()

	resp := exchange(t, "udp", addr, query("loop.example.org.", mdns.TypeA))
	if resp.Rcode != mdns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
	}
	if f.Loops() != 1 || relayed.Load() != 1 {
		t.Errorf("loops %d, relayed %d; want 1, 1", f.Loops(), relayed.Load())
	}
}

func TestServerReadyAndBind(t *testing.T) {
	a := newFakeAuthority(0)
	a.synced.Store(false)
	s, addr := startServer(t, Config{Authority: a})
	if s.Ready() {
		t.Error("ready before the authority synced")
	}
	a.synced.Store(true)
	if !s.Ready() {
		t.Error("not ready after the authority synced")
	}
	// The address is taken (TCP): Run errors, naming it.
	s2, err := NewServer(Config{Listen: []string{addr}, UDPSockets: 1, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Run on a taken address: %v", err)
	}
	if _, err := NewServer(Config{Listen: []string{"localhost:53"}}); err == nil {
		t.Error("NewServer accepted a host name")
	}
	f := newTestForwarder(t, time.Second, "127.0.0.1:5353")
	if _, err := NewServer(Config{Listen: []string{"127.0.0.1:5353"}, Forwarder: f, Log: quietLog()}); err == nil {
		t.Error("NewServer accepted an upstream equal to its listen address")
	}
}

// TestServerSetListen: addresses added while the server runs are served, removed ones
// are closed, and those that stay keep their sockets; a bad address errors and changes
// nothing else.
func TestServerSetListen(t *testing.T) {
	s, first := startServer(t, Config{Authority: newFakeAuthority(0), UDPSockets: 2})
	q := new(mdns.Msg).SetQuestion("web.shop.svc.cluster.local.", mdns.TypeA)
	if err := s.SetListen([]string{"127.0.0.1:0", "127.0.0.2:0"}); err != nil {
		t.Fatal(err)
	}
	addrs := s.Addrs()
	if len(addrs) != 2 || addrs[0].String() != first || addrs[1].Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("after adding 127.0.0.2: bound %v, want %s kept and 127.0.0.2 added", addrs, first)
	}
	second := addrs[1].String()
	for _, addr := range []string{first, second} {
		for _, proto := range []string{"udp", "tcp"} {
			if r := exchange(t, proto, addr, q); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("%s %s: %v", proto, addr, r)
			}
		}
	}
	if err := s.SetListen([]string{"127.0.0.2:0"}); err != nil {
		t.Fatal(err)
	}
	if got := s.Addrs(); len(got) != 1 || got[0].String() != second {
		t.Fatalf("after removing 127.0.0.1: bound %v, want only %s", got, second)
	}
	exchange(t, "udp", second, q)
	c := &mdns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(q, first); err == nil {
		t.Errorf("tcp %s still answers after it was removed", first)
	}
	if err := s.SetListen([]string{"127.0.0.2:0", "nonsense"}); err == nil {
		t.Error("SetListen accepted a listen address that is not addr:port")
	}
	if got := s.Addrs(); len(got) != 1 || got[0].String() != second {
		t.Errorf("a refused SetListen changed the bound addresses: %v", got)
	}
	// An address that cannot be bound (taken over TCP) is named; the rest still change.
	taken, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = s.SetListen([]string{"127.0.0.4:0", taken.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("SetListen with a taken address: %v, want an error naming it", err)
	}
	if got := s.Addrs(); len(got) != 1 || got[0].Addr() != netip.MustParseAddr("127.0.0.4") {
		t.Errorf("after SetListen with a taken address: bound %v, want only 127.0.0.4", got)
	}
}

// FuzzServeDNS: any packet in, a parseable reply with the request's ID or nothing out,
// never a panic.
func FuzzServeDNS(f *testing.F) {
	for _, m := range []*mdns.Msg{
		query("web.shop.svc.cluster.local.", mdns.TypeA),
		query("big.cluster.local.", mdns.TypeA),
		query("nope.cluster.local.", mdns.TypeSRV),
		query("example.org.", mdns.TypeANY),
		query("10.in-addr.arpa.", mdns.TypePTR),
		query("panic.cluster.local.", mdns.TypeA),
	} {
		wire, _ := m.Pack()
		f.Add(wire, false)
		m.SetEdns0(512, true)
		wire, _ = m.Pack()
		f.Add(wire, true)
	}
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01}, false)
	s, err := NewServer(Config{Listen: []string{"127.0.0.1:0"}, Authority: newFakeAuthority(4), Cache: NewCache(CacheConfig{Size: 64}), Log: quietLog()})
	if err != nil {
		f.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	buf := make([]byte, mdns.MaxMsgSize)
	sc := &scratch{wire: new(wireCache)} // as a UDP loop's: answers kept in wire form
	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		reply := s.serve(context.Background(), pkt, src, tcp, buf, sc)
		if reply == nil {
			return
		}
		m := new(mdns.Msg)
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if !m.Response || m.Id != uint16(pkt[0])<<8|uint16(pkt[1]) {
			t.Fatalf("reply %v to a packet with id %x", m, pkt[:2])
		}
		if !tcp && len(reply) > 512 {
			opt := new(mdns.Msg)
			if opt.Unpack(pkt) != nil || opt.IsEdns0() == nil || len(reply) > int(opt.IsEdns0().UDPSize()) {
				t.Fatalf("%d-byte udp reply", len(reply))
			}
		}
	})
}

// BenchmarkServerUDP: cluster-name queries over loopback from parallel clients, each
// with up to 32 queries outstanding (as dnsperf does).
func BenchmarkServerUDP(b *testing.B) {
	const services = 1000
	_, addr := startServer(b, Config{Authority: newFakeAuthority(services)})
	var queries [services][]byte
	for i := range queries {
		queries[i], _ = query(fmt.Sprintf("n%d.svc.cluster.local.", i), mdns.TypeA).Pack()
	}
	const window = 32
	b.SetParallelism(1)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("udp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 1500)
		outstanding, i := 0, 0
		for pb.Next() {
			c.Write(queries[i%services])
			i++
			if outstanding++; outstanding < window {
				continue
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				outstanding = 0 // lost: move on
				continue
			}
			outstanding--
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for ; outstanding > 0; outstanding-- {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "qps")
}

// TestServeForBench serves the fake authority with DNS_BENCH_SERVICES names
// (n<i>.svc.cluster.local) on DNS_BENCH_LISTEN until killed; bench/dns-qps.sh runs it
// from the test binary. Skipped unless DNS_BENCH_LISTEN is set; DNS_BENCH_SECONDS stops
// it after that long (for -test.cpuprofile); DNS_BENCH_SOCKETS sets Config.UDPSockets;
// DNS_BENCH_UPSTREAM (addr:port) adds a forwarder to it and a cache.
func TestServeForBench(t *testing.T) {
	listen := os.Getenv("DNS_BENCH_LISTEN")
	if listen == "" {
		t.Skip("DNS_BENCH_LISTEN is not set")
	}
	services, err := strconv.Atoi(os.Getenv("DNS_BENCH_SERVICES"))
	if err != nil {
		t.Fatalf("DNS_BENCH_SERVICES: %v", err)
	}
	sockets, _ := strconv.Atoi(os.Getenv("DNS_BENCH_SOCKETS")) // 0: the default
	cfg := Config{Listen: []string{listen}, Authority: newFakeAuthority(services), UDPSockets: sockets, Log: quietLog()}
	if up := os.Getenv("DNS_BENCH_UPSTREAM"); up != "" {
		if cfg.Forwarder, err = NewForwarder(ForwarderConfig{Upstreams: []string{up}, Log: quietLog()}); err != nil {
			t.Fatal(err)
		}
		cfg.Cache = NewCache(CacheConfig{Size: 2 * services})
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if secs, err := strconv.Atoi(os.Getenv("DNS_BENCH_SECONDS")); err == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(secs)*time.Second)
		defer cancel()
	}
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestServerUpstreamDown: a forwarder that gets no answer gives SERVFAIL (cached
// briefly), cluster names still answer, and queries beyond MaxForwards get SERVFAIL at
// once instead of waiting.
func TestServerUpstreamDown(t *testing.T) {
	f := newTestForwarder(t, time.Second, silentUDP(t))
	cache := NewCache(CacheConfig{})
	_, addr := startServer(t, Config{Authority: newFakeAuthority(0), Forwarder: f, Cache: cache, MaxForwards: 1})

	slow := make(chan *mdns.Msg)
	go func() {
		c := &mdns.Client{Timeout: 2 * time.Second}
		resp, _, _ := c.Exchange(query("first.example.org.", mdns.TypeA), addr)
		slow <- resp
	}()
	time.Sleep(100 * time.Millisecond) // the first is being forwarded
	start := time.Now()
	if resp := exchange(t, "udp", addr, query("second.example.org.", mdns.TypeA)); resp.Rcode != mdns.RcodeServerFailure || time.Since(start) > 500*time.Millisecond {
		t.Errorf("beyond MaxForwards: %s after %v, want SERVFAIL at once", mdns.RcodeToString[resp.Rcode], time.Since(start))
	}
	if resp := exchange(t, "udp", addr, query("web.shop.svc.cluster.local.", mdns.TypeA)); len(resp.Answer) != 1 {
		t.Errorf("cluster name while the upstream is down: %v", resp)
	}
	if resp := <-slow; resp == nil || resp.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("upstream down: %v, want SERVFAIL", resp)
	}
	start = time.Now()
	if resp := exchange(t, "udp", addr, query("first.example.org.", mdns.TypeA)); resp.Rcode != mdns.RcodeServerFailure || time.Since(start) > 500*time.Millisecond {
		t.Errorf("again: %s after %v, want the cached SERVFAIL", mdns.RcodeToString[resp.Rcode], time.Since(start))
	}
}

// TestServerWireCache: over UDP the zone's answers are kept in wire form and the same
// query is answered from them, with its own ID and in the case it asked in, counted in
// the metrics, until the zone changes; queries that differ only in EDNS0 or case are
// kept apart; a forwarded name never is.
func TestServerWireCache(t *testing.T) {
	zone := NewZone(ZoneConfig{Logger: quietLog()})
	web := func(ip string) *ClusterData {
		return &ClusterData{Services: []Service{{Namespace: "shop", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr(ip)}}}}
	}
	zone.Update(web("10.96.0.10"))
	up := startUpstream(t, answerA("192.0.2.9"))
	met := &countMetrics{}
	s, err := NewServer(Config{Listen: []string{"127.0.0.1:0"}, Authority: zone, Forwarder: newTestForwarder(t, time.Second, up.addr), Metrics: met, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	sc := &scratch{wire: new(wireCache)}
	buf := make([]byte, 4096)
	ask := func(name string, id uint16, edns bool) *mdns.Msg {
		t.Helper()
		q := query(name, mdns.TypeA)
		q.Id = id
		if edns {
			q.SetEdns0(1232, false)
		}
		raw, _ := q.Pack()
		reply := s.serve(context.Background(), raw, src, false, buf, sc)
		m := new(mdns.Msg)
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("%s: reply does not parse: %v", name, err)
		}
		if m.Id != id {
			t.Fatalf("%s: reply id %d, want %d", name, m.Id, id)
		}
		return m
	}
	addrOf := func(m *mdns.Msg) string {
		if len(m.Answer) != 1 {
			return fmt.Sprint(m.Answer)
		}
		return m.Answer[0].Header().Name + " " + m.Answer[0].(*mdns.A).A.String()
	}
	for i, tc := range []struct {
		name string
		edns bool
		want string
	}{
		{"web.shop.svc.cluster.local.", false, "web.shop.svc.cluster.local. 10.96.0.10"},
		{"web.shop.svc.cluster.local.", false, "web.shop.svc.cluster.local. 10.96.0.10"}, // kept
		{"WEB.shop.svc.cluster.local.", false, "WEB.shop.svc.cluster.local. 10.96.0.10"},
		{"web.shop.svc.cluster.local.", true, "web.shop.svc.cluster.local. 10.96.0.10"},
	} {
		m := ask(tc.name, uint16(100+i), tc.edns)
		if got := addrOf(m); got != tc.want {
			t.Errorf("query %d %s: answer %s, want %s", i, tc.name, got, tc.want)
		}
		if (m.IsEdns0() != nil) != tc.edns {
			t.Errorf("query %d %s: OPT in the reply %v, want %v", i, tc.name, m.IsEdns0() != nil, tc.edns)
		}
	}
	if n := len(sc.wire.entries); n != 3 {
		t.Errorf("%d replies kept, want 3 (two cases, with and without EDNS0)", n)
	}
	if got := ask("www.example.org.", 7, false); addrOf(got) != "www.example.org. 192.0.2.9" || len(sc.wire.entries) != 3 {
		t.Errorf("forwarded: %s, %d replies kept (want the upstream's answer, not kept)", addrOf(got), len(sc.wire.entries))
	}
	zone.Update(web("10.96.0.11"))
	if got := addrOf(ask("web.shop.svc.cluster.local.", 9, false)); got != "web.shop.svc.cluster.local. 10.96.0.11" {
		t.Errorf("after the zone changed: %s, want the new address", got)
	}
	met.mu.Lock()
	defer met.mu.Unlock()
	if met.queries["A NOERROR"] != 6 {
		t.Errorf("metrics %v: want 6 A NOERROR, the kept answers counted too", met.queries)
	}
}

// TestServerWireCacheCachedAnswers: a cached upstream answer is kept in wire form within
// the second of its entry's age, so repeats skip parsing and packing, but its TTL still
// counts down each second and it goes with the entry; each repeat is a cache hit.
func TestServerWireCacheCachedAnswers(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.9")) // TTL 60
	clk := newFakeClock()
	met := &countMetrics{}
	s, err := NewServer(Config{Listen: []string{"127.0.0.1:0"}, Authority: NewZone(ZoneConfig{Logger: quietLog()}),
		Cache: NewCache(CacheConfig{Now: clk.Now}), Forwarder: newTestForwarder(t, time.Second, up.addr), Metrics: met, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	sc := &scratch{wire: new(wireCache)}
	buf := make([]byte, 4096)
	ask := func(id uint16) (ttl uint32) {
		t.Helper()
		q := query("www.example.org.", mdns.TypeA)
		q.Id = id
		raw, _ := q.Pack()
		m := new(mdns.Msg)
		if err := m.Unpack(s.serve(context.Background(), raw, src, false, buf, sc)); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if m.Id != id || len(m.Answer) != 1 {
			t.Fatalf("reply %v to query %d", m, id)
		}
		return m.Answer[0].Header().Ttl
	}
	if ttl := ask(1); ttl != 60 || up.seen() != 1 {
		t.Fatalf("first: TTL %d, upstream asked %d times; want 60, 1", ttl, up.seen())
	}
	if ttl := ask(2); ttl != 60 || len(sc.wire.entries) != 1 {
		t.Fatalf("from the cache: TTL %d, %d replies kept; want 60, 1", ttl, len(sc.wire.entries))
	}
	clk.Advance(300 * time.Millisecond)
	if ttl := ask(3); ttl != 60 {
		t.Errorf("within the second: TTL %d, want 60", ttl)
	}
	clk.Advance(time.Second)
	if ttl := ask(4); ttl != 59 {
		t.Errorf("a second older: TTL %d, want 59 (the kept reply must not outlive its TTLs)", ttl)
	}
	if ttl := ask(5); ttl != 59 {
		t.Errorf("kept again: TTL %d, want 59", ttl)
	}
	clk.Advance(60 * time.Second)
	if ttl := ask(6); ttl != 60 || up.seen() != 2 {
		t.Errorf("after the entry expired: TTL %d, upstream asked %d times; want 60, 2", ttl, up.seen())
	}
	met.mu.Lock()
	defer met.mu.Unlock()
	if met.hits != 4 || met.misses != 2 || met.queries["A NOERROR"] != 6 {
		t.Errorf("metrics: %d hits, %d misses, %v; want 4 hits, 2 misses, 6 A NOERROR", met.hits, met.misses, met.queries)
	}
}

// TestServerLoopThroughResolver: the upstream is a resolver that asks this server again,
// with a query of its own (a loop no query ID gives away). The probe finds the loop, and
// a client's query for an outside name gets SERVFAIL without spinning: the looped query
// waits for the one on its way upstream, so the resolver is asked once.
func TestServerLoopThroughResolver(t *testing.T) {
	var self atomic.Value // the server's address, once it listens
	var asked sync.Map    // name -> *atomic.Int32: what the resolver was asked
	resolver := startUpstream(t, func(req *mdns.Msg, _ bool) *mdns.Msg {
		n, _ := asked.LoadOrStore(strings.ToLower(req.Question[0].Name), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		addr, _ := self.Load().(string)
		q := new(mdns.Msg)
		q.SetQuestion(req.Question[0].Name, req.Question[0].Qtype)
		resp, err := mdns.Exchange(q, addr)
		if err != nil {
			return nil
		}
		resp.Id = req.Id
		return resp
	})
	f := newTestForwarder(t, time.Second, resolver.addr)
	s, err := NewServer(Config{Listen: []string{"127.0.0.1:0"}, Forwarder: f, Cache: NewCache(CacheConfig{}), LoopProbe: true, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	self.Store(addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for f.Loops() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the probe found no loop within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp := exchange(t, "udp", addr, query("loop.example.org.", mdns.TypeA))
	if resp.Rcode != mdns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
	}
	if n, ok := asked.Load("loop.example.org."); !ok || n.(*atomic.Int32).Load() != 1 {
		t.Errorf("the resolver was asked for loop.example.org. %v times, want once (no spinning)", n)
	}
	if f.Merged() == 0 {
		t.Error("the looped query did not wait for the one in flight")
	}
}

// TestForwarderMerges: identical queries asked together go upstream once, each answered
// with its own ID and question; a query that differs (type, DO bit) goes on its own.
func TestForwarderMerges(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(req *mdns.Msg, tcp bool) *mdns.Msg {
		<-release
		return answerA("192.0.2.9")(req, tcp)
	})
	f := newTestForwarder(t, 5*time.Second, up.addr)
	type result struct {
		resp *mdns.Msg
		err  error
		id   uint16
		name string
	}
	results := make(chan result)
	ask := func(name string, qtype uint16, do bool) {
		q := query(name, qtype)
		if do {
			q.SetEdns0(1232, true)
		}
		go func() {
			resp, err := f.Forward(context.Background(), q)
			results <- result{resp, err, q.Id, name}
		}()
	}
	for i := range 10 {
		name := "www.example.org."
		if i%2 == 1 {
			name = "WWW.example.org."
		}
		ask(name, mdns.TypeA, false)
	}
	ask("www.example.org.", mdns.TypeAAAA, false)
	ask("www.example.org.", mdns.TypeA, true)
	// Every query is asked before the upstream answers: the first of each kind is there,
	// the rest wait behind it.
	deadline := time.Now().Add(5 * time.Second)
	for up.seen() < 3 || f.Merged() < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw %d, merged %d; want 3 and 9", up.seen(), f.Merged())
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for range 12 {
		r := <-results
		if r.err != nil || r.resp.Id != r.id || r.resp.Question[0].Name != r.name {
			t.Errorf("%s: %v, %v (want id %d)", r.name, r.resp, r.err, r.id)
		}
	}
	if n := up.seen(); n != 3 {
		t.Errorf("upstream saw %d queries, want 3 (A, AAAA, A with DO)", n)
	}
}
