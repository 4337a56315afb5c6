package dns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	// Upstreams are "addr" or "addr:port" ("1.2.3.4", "1.2.3.4:53", "[2001:db8::1]:53");
	// port 53 when left out. Empty: the nameservers of ResolvConf.
	Upstreams []string
	// ResolvConf is read when Upstreams is empty (default /etc/resolv.conf).
	ResolvConf string
	// Timeout bounds one try at one upstream (default 2s).
	Timeout time.Duration
	// Metrics receives each try's latency and error (nil: none).
	Metrics Metrics
	// Log (default slog.Default()).
	Log *slog.Logger
}

const (
	defaultResolvConf     = "/etc/resolv.conf"
	defaultForwardTimeout = 2 * time.Second
	udpPoolSize           = 16
	// forwardUDPSize is the EDNS0 buffer size offered to upstreams (the DNS flag day's).
	forwardUDPSize = 1232
)

// Forwarder sends queries to upstream resolvers: in order, UDP first and TCP when the
// reply is truncated, the next upstream after a timeout, an error, SERVFAIL or REFUSED.
// Identical queries asked while one is on its way upstream wait for its answer rather
// than go upstream again (as CoreDNS's forward does not, but its cache's prefetch and
// dnsmasq do). It remembers the queries it has in flight so that the server can
// recognise one that comes back to it (a forwarding loop) and answer it SERVFAIL instead
// of forwarding it again; a loop through another resolver, which asks afresh, is found
// by a probe (Probe) and cannot spin, since its queries wait for the one in flight.
type Forwarder struct {
	upstreams []*upstream
	timeout   time.Duration
	metrics   Metrics
	log       *slog.Logger
	probeName string // Probe's question: a name no one else asks

	mu       sync.Mutex
	inflight map[loopKey]netip.AddrPort // forwarded query → its upstream
	flights  map[flightKey]*flight      // queries on their way upstream, by question
	nflight  atomic.Int32
	loops    atomic.Uint64
	merged   atomic.Uint64
}

// flightKey is what makes two queries the same to an upstream: the question (its name in
// lower case) and the bits that change the answer.
type flightKey struct {
	name          string
	qtype, qclass uint16
	do, cd        bool
}

// flight is one query on its way upstream; done closes when resp or err is set.
type flight struct {
	done chan struct{}
	resp *mdns.Msg
	err  error
}

type upstream struct {
	addr   netip.AddrPort
	source string // where it was configured, for messages
	pool   chan *udpConn
}

// udpConn is a UDP socket connected to one upstream, with its read buffer.
type udpConn struct {
	*net.UDPConn
	buf []byte
}

// loopKey identifies a forwarded query as it would arrive back at the server: the name,
// the type and the random ID we gave it. (Not the source port: a proxy on the way back
// may change it.)
type loopKey struct {
	name  string
	qtype uint16
	id    uint16
}

// NewForwarder returns a forwarder to cfg's upstreams; it errors when there are none
// or one cannot be parsed.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultForwardTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	f := &Forwarder{
		timeout:   cfg.Timeout,
		metrics:   cfg.Metrics,
		log:       cfg.Log,
		probeName: fmt.Sprintf("%d.%d.tabby-loop-probe.", rand.Uint64(), rand.Uint64()),
		inflight:  make(map[loopKey]netip.AddrPort),
		flights:   make(map[flightKey]*flight),
	}
	addrs, source := cfg.Upstreams, "the configured upstreams"
	if len(addrs) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = defaultResolvConf
		}
		var err error
		if addrs, err = resolvConfNameservers(path); err != nil {
			return nil, err
		}
		source = path
		if len(addrs) == 0 {
			return nil, fmt.Errorf("dns forwarder: no nameserver in %s", path)
		}
	}
	for _, s := range addrs {
		ap, err := parseUpstream(s)
		if err != nil {
			return nil, fmt.Errorf("dns forwarder: upstream from %s: %w", source, err)
		}
		f.upstreams = append(f.upstreams, &upstream{addr: ap, source: source, pool: make(chan *udpConn, udpPoolSize)})
	}
	return f, nil
}

func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is neither addr nor addr:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}

// resolvConfNameservers returns the nameserver lines of a resolv.conf.
func resolvConfNameservers(path string) ([]string, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dns forwarder: upstreams: %w", err)
	}
	defer file.Close()
	var out []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			out = append(out, fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dns forwarder: reading %s: %w", path, err)
	}
	return out, nil
}

// Upstreams returns the upstreams in the order they are tried.
func (f *Forwarder) Upstreams() []netip.AddrPort {
	out := make([]netip.AddrPort, len(f.upstreams))
	for i, u := range f.upstreams {
		out[i] = u.addr
	}
	return out
}

// excludeSelf drops the upstreams that are the server's own listen addresses (each such
// upstream is a forwarding loop), with a warning; it errors when none is left. A
// listen address on the unspecified address matches every local address on its port.
func (f *Forwarder) excludeSelf(listen []netip.AddrPort) error {
	var local []netip.Addr
	isSelf := func(u netip.AddrPort) bool {
		for _, l := range listen {
			if l.Port() != u.Port() {
				continue
			}
			if l.Addr() == u.Addr() {
				return true
			}
			if !l.Addr().IsUnspecified() {
				continue
			}
			if u.Addr().IsLoopback() || u.Addr().IsUnspecified() {
				return true
			}
			if local == nil {
				local = localAddrs()
			}
			for _, a := range local {
				if a == u.Addr() {
					return true
				}
			}
		}
		return false
	}
	kept := f.upstreams[:0:0]
	var dropped []string
	for _, u := range f.upstreams {
		if isSelf(u.addr) {
			f.log.Warn("dns: upstream is one of our own listen addresses, a forwarding loop: not used",
				"upstream", u.addr, "from", u.source)
			dropped = append(dropped, u.addr.String())
			continue
		}
		kept = append(kept, u)
	}
	if len(kept) == 0 {
		return fmt.Errorf("dns forwarder: every upstream (%s) is one of the server's own listen addresses: a forwarding loop",
			strings.Join(dropped, ", "))
	}
	f.upstreams = kept
	return nil
}

func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return []netip.Addr{}
	}
	out := []netip.Addr{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// Forward sends req to the upstreams and returns the first good answer, with req's ID
// and question. After every upstream failed it returns the last SERVFAIL/REFUSED answer
// if there was one, else the last error. A query the same as one already on its way
// upstream waits for that one's answer (or error).
func (f *Forwarder) Forward(ctx context.Context, req *mdns.Msg) (*mdns.Msg, error) {
	if len(req.Question) != 1 {
		return nil, errors.New("dns forwarder: a query needs exactly one question")
	}
	q0 := req.Question[0]
	k := flightKey{name: strings.ToLower(q0.Name), qtype: q0.Qtype, qclass: q0.Qclass, cd: req.CheckingDisabled}
	if opt := req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	f.mu.Lock()
	if fl, ok := f.flights[k]; ok {
		f.mu.Unlock()
		f.merged.Add(1)
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("dns forwarder: %s: %w", q0.Name, ctx.Err())
		}
		if fl.err != nil {
			return nil, fl.err
		}
		resp := *fl.resp // shared RRs: the server never changes them
		resp.Id, resp.Question = req.Id, req.Question
		return &resp, nil
	}
	fl := &flight{done: make(chan struct{})}
	f.flights[k] = fl
	f.mu.Unlock()
	fl.resp, fl.err = f.forward(ctx, req)
	f.mu.Lock()
	delete(f.flights, k)
	f.mu.Unlock()
	close(fl.done)
	return fl.resp, fl.err
}

// Merged returns how many queries waited for an identical one's answer.
func (f *Forwarder) Merged() uint64 { return f.merged.Load() }

// forward is Forward for a query no other is waiting on.
func (f *Forwarder) forward(ctx context.Context, req *mdns.Msg) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.MsgHdr = req.MsgHdr
	q.Id = mdns.Id()
	q.Question = req.Question
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(forwardUDPSize, do)
	wire, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("dns forwarder: packing %s: %w", req.Question[0].Name, err)
	}

	var last *mdns.Msg
	var lastErr error
	for i, u := range f.upstreams {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dns forwarder: %s: %w", req.Question[0].Name, err)
		}
		start := time.Now()
		resp, err := f.exchange(ctx, u, q, wire)
		if f.metrics != nil {
			f.metrics.Upstream(time.Since(start), err)
		}
		if err != nil {
			f.log.Debug("dns: upstream failed", "upstream", u.addr, "name", req.Question[0].Name, "err", err)
			lastErr = err
			continue
		}
		resp.Id = req.Id
		resp.Question = req.Question
		if (resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused) && i < len(f.upstreams)-1 {
			last = resp
			continue
		}
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	return nil, lastErr
}

// exchange tries one upstream: UDP, then TCP if the UDP reply is truncated.
func (f *Forwarder) exchange(ctx context.Context, u *upstream, q *mdns.Msg, wire []byte) (*mdns.Msg, error) {
	deadline := time.Now().Add(f.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	resp, err := f.exchangeUDP(ctx, u, q, wire, deadline)
	if err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return resp, nil
	}
	return f.exchangeTCP(ctx, u, q, wire, time.Now().Add(f.timeout))
}

func (f *Forwarder) exchangeUDP(ctx context.Context, u *upstream, q *mdns.Msg, wire []byte, deadline time.Time) (*mdns.Msg, error) {
	var c *udpConn
	select {
	case c = <-u.pool:
	default:
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.addr))
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.addr, err)
		}
		c = &udpConn{UDPConn: conn, buf: make([]byte, mdns.MaxMsgSize)}
	}
	defer f.track(q, u.addr)()
	if ctx.Done() != nil { // a cancelled ctx ends the wait at once
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
		defer stop()
	}
	resp, err := c.exchange(q, wire, deadline)
	if err != nil {
		c.Close() // it may still receive the late reply: never reuse it
		return nil, fmt.Errorf("upstream %s over udp: %w", u.addr, err)
	}
	select {
	case u.pool <- c:
	default:
		c.Close()
	}
	return resp, nil
}

// exchange writes wire and reads until q's answer arrives; replies to other queries
// (a stale one after a timeout, a spoofed one) are skipped.
func (c *udpConn) exchange(q *mdns.Msg, wire []byte, deadline time.Time) (*mdns.Msg, error) {
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	for {
		n, err := c.Read(c.buf)
		if err != nil {
			return nil, err
		}
		resp := new(mdns.Msg)
		if resp.Unpack(c.buf[:n]) != nil || !answers(q, resp) {
			continue
		}
		return resp, nil
	}
}

// answers reports whether resp is the reply to q: same ID, same question up to case.
func answers(q, resp *mdns.Msg) bool {
	if resp.Id != q.Id || !resp.Response || len(resp.Question) != 1 {
		return false
	}
	a, b := q.Question[0], resp.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func (f *Forwarder) exchangeTCP(ctx context.Context, u *upstream, q *mdns.Msg, wire []byte, deadline time.Time) (*mdns.Msg, error) {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "tcp", u.addr.String())
	if err != nil {
		return nil, fmt.Errorf("upstream %s over tcp: %w", u.addr, err)
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	defer f.track(q, u.addr)()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("upstream %s over tcp: %w", u.addr, err)
	}
	co := &mdns.Conn{Conn: conn}
	if _, err := co.Write(wire); err != nil {
		return nil, fmt.Errorf("upstream %s over tcp: %w", u.addr, err)
	}
	for {
		resp, err := co.ReadMsg()
		if err != nil {
			return nil, fmt.Errorf("upstream %s over tcp: %w", u.addr, err)
		}
		if answers(q, resp) {
			return resp, nil
		}
	}
}

// track records q as in flight to up until the returned func is called.
func (f *Forwarder) track(q *mdns.Msg, up netip.AddrPort) func() {
	k := loopKey{name: strings.ToLower(q.Question[0].Name), qtype: q.Question[0].Qtype, id: q.Id}
	f.mu.Lock()
	f.inflight[k] = up
	f.mu.Unlock()
	f.nflight.Add(1)
	return func() {
		f.nflight.Add(-1)
		f.mu.Lock()
		delete(f.inflight, k)
		f.mu.Unlock()
	}
}

// isLoop reports whether req, received by the server from src, is a query this
// forwarder sent and is still waiting for (an upstream led straight back to us), or its
// probe (Probe), which only a loop through some resolver brings here. The first loop is
// logged as an error; Loops counts them all.
func (f *Forwarder) isLoop(req *mdns.Msg, src netip.AddrPort) bool {
	if f == nil || len(req.Question) != 1 {
		return false
	}
	name := strings.ToLower(req.Question[0].Name)
	var up netip.AddrPort
	switch {
	case name == f.probeName:
		// The probe came back: through which upstream is not known.
	case f.nflight.Load() == 0:
		return false
	default:
		k := loopKey{name: name, qtype: req.Question[0].Qtype, id: req.Id}
		f.mu.Lock()
		u, ok := f.inflight[k]
		f.mu.Unlock()
		if !ok {
			return false
		}
		up = u
	}
	if f.loops.Add(1) == 1 {
		f.log.Error("dns: forwarding loop: a query sent upstream came back to this server; such queries are answered SERVFAIL",
			"upstream", up, "from", src, "name", req.Question[0].Name)
	}
	return true
}

// Probe asks the upstreams for a name made up for the purpose (HINFO, as CoreDNS's loop
// plugin does): an upstream that forwards it back to this server through any chain of
// resolvers shows a loop, which isLoop then reports. Its own answer does not matter.
func (f *Forwarder) Probe(ctx context.Context) {
	q := new(mdns.Msg)
	q.SetQuestion(f.probeName, mdns.TypeHINFO)
	f.Forward(ctx, q)
}

// Loops returns how many forwarded queries came back to the server (0: no loop seen).
func (f *Forwarder) Loops() uint64 { return f.loops.Load() }

// Close closes the pooled upstream sockets.
func (f *Forwarder) Close() {
	for _, u := range f.upstreams {
		for {
			select {
			case c := <-u.pool:
				c.Close()
				continue
			default:
			}
			break
		}
	}
}
