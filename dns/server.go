package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Config configures a Server.
type Config struct {
	// Listen are the addresses served over UDP and TCP, "host:port" with host an IP
	// address ("10.96.0.10:53", "[::1]:53"). Port 0 picks a free port, the same for UDP
	// and TCP (tests; see Addrs).
	Listen []string
	// Authority answers the cluster zone; nil: every name goes to the cache and forwarder.
	Authority Authority
	// Cache keeps forwarded answers; nil: no cache.
	Cache *Cache
	// Forwarder answers the names Authority does not own; nil: they are REFUSED.
	Forwarder *Forwarder
	// LoopProbe has Run send the Forwarder's probe once it listens, to find a forwarding
	// loop through other resolvers (Forwarder.Probe).
	LoopProbe bool
	// Metrics counts queries and cache lookups; nil: nothing is counted.
	Metrics Metrics
	// Log (default slog.Default()).
	Log *slog.Logger
	// UDPSockets is the number of UDP sockets per listen address, bound with
	// SO_REUSEPORT and each served by its own goroutine (default DefaultUDPSockets).
	UDPSockets int
	// MaxForwards bounds the UDP queries being forwarded at once (default 1000);
	// beyond it a query that must be forwarded is answered SERVFAIL.
	MaxForwards int
	// TCPIdleTimeout closes a TCP connection that sends no query for that long
	// (default 10s). At most 256 TCP connections are served at once.
	TCPIdleTimeout time.Duration
}

// Synced is an interface an Authority may implement: Synced reports whether it has
// its data (the first snapshot). The server is not Ready before.
type Synced interface {
	Synced() bool
}

// Versioned is an interface an Authority may implement: Version changes whenever its
// answers may change (0 while it has no data). The server then keeps the wire form of
// its answers over UDP, keyed by the query's bytes, and answers the same bytes again
// from it until the version changes, without parsing or packing (wireCache).
type Versioned interface {
	Version() uint64
}

const (
	// serverUDPSize is the EDNS0 buffer size the server announces.
	serverUDPSize  = 1232
	maxTCPConns    = 256
	defaultForward = 1000
)

// DefaultUDPSockets is half the CPUs Go may use, at least one: the clients, a node's
// pods, need the other half. A node-local server runs in its own scheduling group (a
// systemd service, its own session), which gets about its share of the CPUs when the
// clients are busy; more serving goroutines than that share only take turns, each waking
// for smaller batches. On 2 CPUs one socket answered 1.15-1.5x dnsmasq's queries per
// second and two sockets 0.5-0.97x (README, Cluster DNS).
func DefaultUDPSockets() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Server serves DNS over UDP and TCP: the Authority's names first, then the cache, then
// the forwarder (whose answers are cached).
type Server struct {
	cfg    Config
	log    *slog.Logger
	fwdSem chan struct{}
	tcpSem chan struct{}

	mu        sync.Mutex
	listen    []netip.AddrPort // as configured (port 0: any)
	bound     []*listener      // one per listen address, after Listen
	serving   *serving         // while Run serves
	listening atomic.Bool
}

// listener is one listen address's sockets: SO_REUSEPORT UDP sockets and a TCP listener.
type listener struct {
	want netip.AddrPort // as configured
	addr netip.AddrPort // as bound (port 0 resolved)
	udp  []*net.UDPConn
	tcp  *net.TCPListener
}

func (l *listener) close() {
	for _, c := range l.udp {
		c.Close()
	}
	l.tcp.Close()
}

// serving is what a running server starts the loops of a listener bound later with.
type serving struct {
	ctx context.Context
	wg  *sync.WaitGroup
}

// NewServer checks cfg. It drops (with a warning) forwarder upstreams that are the
// server's own listen addresses, and errors when that leaves none.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.Listen) == 0 {
		return nil, errors.New("dns server: no listen address")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.UDPSockets <= 0 {
		cfg.UDPSockets = DefaultUDPSockets()
	}
	if cfg.MaxForwards <= 0 {
		cfg.MaxForwards = defaultForward
	}
	if cfg.TCPIdleTimeout <= 0 {
		cfg.TCPIdleTimeout = 10 * time.Second
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Log,
		fwdSem: make(chan struct{}, cfg.MaxForwards),
		tcpSem: make(chan struct{}, maxTCPConns),
	}
	var err error
	if s.listen, err = parseListen(cfg.Listen); err != nil {
		return nil, err
	}
	if cfg.Forwarder != nil {
		if err := cfg.Forwarder.excludeSelf(s.listen); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func parseListen(listen []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, l := range listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return nil, fmt.Errorf("dns server: listen address %q: %w", l, err)
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return out, nil
}

// listenOn binds ap's UDP sockets and its TCP listener (the port UDP got, for port 0),
// closing what it bound when one fails. Port 0 picks a UDP port that TCP may hold
// elsewhere: it picks again then.
func (s *Server) listenOn(ap netip.AddrPort) (*listener, error) {
	lc := net.ListenConfig{}
	if s.cfg.UDPSockets > 1 {
		lc.Control = reusePort
	}
	for try := 0; ; try++ {
		l, err := s.bind(lc, ap)
		if err == nil || ap.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || try == 9 {
			return l, err
		}
	}
}

func (s *Server) bind(lc net.ListenConfig, ap netip.AddrPort) (*listener, error) {
	l := &listener{want: ap, addr: ap}
	closeUDP := func() {
		for _, c := range l.udp {
			c.Close()
		}
	}
	for i := range s.cfg.UDPSockets {
		pc, err := lc.ListenPacket(context.Background(), "udp", l.addr.String())
		if err != nil {
			closeUDP()
			return nil, fmt.Errorf("dns server: listen udp %s: %w", ap, err)
		}
		c := pc.(*net.UDPConn)
		l.udp = append(l.udp, c)
		if i == 0 {
			// Port 0: the others (and TCP) take the port this one got.
			l.addr = netip.AddrPortFrom(ap.Addr(), c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
	}
	var err error
	if l.tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(l.addr)); err != nil {
		closeUDP()
		return nil, fmt.Errorf("dns server: listen tcp %s: %w", l.addr, err)
	}
	return l, nil
}

// Listen binds every listen address (UDP and TCP). Run calls it when it was not called
// before; calling it first lets the caller read Addrs before serving.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listening.Load() {
		return nil
	}
	for _, ap := range s.listen {
		l, err := s.listenOn(ap)
		if err != nil {
			s.closeLocked()
			return err
		}
		s.bound = append(s.bound, l)
	}
	s.listening.Store(true)
	return nil
}

// SetListen changes the listen addresses, before or while the server runs: it binds
// and serves the new ones and closes those no longer listed (their queries in progress
// are still answered). Addresses that stay keep their sockets. When an address cannot
// be bound the others are still changed; the error names it, and a later SetListen
// tries it again.
func (s *Server) SetListen(listen []string) error {
	want, err := parseListen(listen)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listen = want
	if !s.listening.Load() {
		return nil // Listen binds them
	}
	kept := s.bound[:0]
	for _, l := range s.bound {
		if slices.Contains(want, l.want) {
			kept = append(kept, l)
		} else {
			l.close()
		}
	}
	s.bound = kept
	var errs []error
	for _, ap := range want {
		if slices.ContainsFunc(s.bound, func(l *listener) bool { return l.want == ap }) {
			continue
		}
		l, err := s.listenOn(ap)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.bound = append(s.bound, l)
		if s.serving != nil {
			s.start(l)
		}
	}
	return errors.Join(errs...)
}

// start starts l's loops; s.mu held, s.serving set.
func (s *Server) start(l *listener) {
	ctx, wg := s.serving.ctx, s.serving.wg
	for _, c := range l.udp {
		wg.Go(func() { s.serveUDP(ctx, c, wg) })
	}
	wg.Go(func() { s.serveTCP(ctx, l.tcp, wg) })
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func (s *Server) closeLocked() {
	for _, l := range s.bound {
		l.close()
	}
	s.bound = nil
	s.listening.Store(false)
}

// Addrs returns the bound addresses (UDP and TCP share each), after Listen.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, len(s.bound))
	for i, l := range s.bound {
		out[i] = l.addr
	}
	return out
}

// Ready reports whether the server is listening and its Authority has its data (an
// Authority that does not implement Synced always has).
func (s *Server) Ready() bool {
	if !s.listening.Load() {
		return false
	}
	if sy, ok := s.cfg.Authority.(Synced); ok {
		return sy.Synced()
	}
	return true
}

// Run serves until ctx ends, then closes its sockets and returns nil once every
// query in progress is done. It errors when it cannot bind, naming the address.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	s.mu.Lock()
	s.serving = &serving{ctx: ctx, wg: &wg}
	for _, l := range s.bound {
		s.start(l)
	}
	s.mu.Unlock()
	if f := s.cfg.Forwarder; f != nil && s.cfg.LoopProbe {
		wg.Go(func() { f.Probe(ctx) })
	}
	<-ctx.Done()
	s.mu.Lock()
	s.serving = nil // no loop starts after this: wg.Wait below is safe
	s.closeLocked()
	s.mu.Unlock()
	wg.Wait()
	return nil
}

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves at most.
const (
	udpBatch   = 32
	udpInSize  = 8192 // larger queries (none are) are dropped
	udpOutSize = 4096 // larger replies are packed into a new buffer
)

// serveUDP reads queries in batches (recvmmsg), answers those it can at once and sends
// those replies in one batch (sendmmsg); forwarded queries are answered from their
// own goroutines.
func (s *Server) serveUDP(ctx context.Context, c *net.UDPConn, wg *sync.WaitGroup) {
	mm, err := newMmsg(c, udpBatch, udpInSize)
	if err != nil {
		s.log.Error("dns server: udp socket", "addr", c.LocalAddr(), "err", err)
		return
	}
	outBufs := make([][]byte, udpBatch)
	for i := range outBufs {
		outBufs[i] = make([]byte, udpOutSize)
	}
	sc := &scratch{wire: new(wireCache)}
	onErr := func(err error) {
		if ctx.Err() == nil {
			s.log.Debug("dns server: udp write", "addr", c.LocalAddr(), "err", err)
		}
	}
	for {
		n, err := mm.read()
		if err != nil {
			if s.closed(ctx, err, "udp read", c.LocalAddr()) {
				return
			}
			continue
		}
		for i := range n {
			src := mm.addr(i)
			if !src.IsValid() || mm.trunc[i] {
				continue
			}
			reply, r := s.local(mm.bufs[i][:mm.n[i]], src, false, outBufs[i], sc)
			if r != nil {
				select {
				case s.fwdSem <- struct{}{}:
					wg.Go(func() {
						defer func() { <-s.fwdSem }()
						buf := bufPool.Get().(*[]byte)
						defer bufPool.Put(buf)
						if reply := s.remote(ctx, r, *buf, new(scratch)); reply != nil {
							c.WriteToUDPAddrPort(reply, r.src)
						}
					})
					continue
				default:
					reply = s.encode(r, s.rcode(r.msg, mdns.RcodeServerFailure), outBufs[i], sc)
				}
			}
			if reply == nil {
				continue
			}
			mm.reply(i, reply)
		}
		mm.flush(onErr)
	}
}

// closed handles an error of a serving loop's read or accept: true when the socket was
// closed (the loop ends), else it is logged and the loop goes on after a moment.
func (s *Server) closed(ctx context.Context, err error, op string, addr net.Addr) bool {
	if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
		return true
	}
	s.log.Warn("dns server: "+op, "addr", addr, "err", err)
	time.Sleep(10 * time.Millisecond)
	return false
}

func (s *Server) serveTCP(ctx context.Context, l *net.TCPListener, wg *sync.WaitGroup) {
	for {
		conn, err := l.AcceptTCP()
		if err != nil {
			if s.closed(ctx, err, "tcp accept", l.Addr()) {
				return
			}
			continue
		}
		select {
		case s.tcpSem <- struct{}{}:
		default:
			conn.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-s.tcpSem }()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			s.serveConn(ctx, conn)
		})
	}
}

// serveConn answers the queries of one TCP connection, one after the other.
func (s *Server) serveConn(ctx context.Context, conn *net.TCPConn) {
	defer conn.Close()
	src := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	in := make([]byte, mdns.MaxMsgSize)
	out := make([]byte, mdns.MaxMsgSize)
	var sc scratch
	var prefix [2]byte
	for {
		if err := conn.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(conn, prefix[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(prefix[:]))
		if _, err := io.ReadFull(conn, in[:n]); err != nil {
			return
		}
		reply := s.serve(ctx, in[:n], src, true, out, &sc)
		if reply == nil {
			return // a packet dropped over UDP ends the connection
		}
		binary.BigEndian.PutUint16(prefix[:], uint16(len(reply)))
		bufs := net.Buffers{prefix[:], reply}
		if _, err := bufs.WriteTo(conn); err != nil {
			return
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, mdns.MaxMsgSize); return &b }}

// scratch is what one serving goroutine reuses from query to query, so that answering
// from the authority or the cache allocates little.
type scratch struct {
	req request
	msg mdns.Msg // the request, unpacked
	out mdns.Msg // the reply, as packed
	opt mdns.OPT // the reply's OPT (packing writes to it: never shared)
	// wire keeps the Authority's and the Cache's answers in wire form (a UDP loop's;
	// nil elsewhere).
	wire *wireCache
	// qtype and rcode are the labels encode counted the last reply under.
	qtype, rcode string
}

// request is a parsed query on its way to an answer.
type request struct {
	msg  *mdns.Msg
	src  netip.AddrPort
	tcp  bool
	size int       // the largest reply the client takes
	opt  *mdns.OPT // the client's, nil without EDNS0
}

// serve answers one packet, forwarding in the caller's goroutine if need be; nil: drop.
func (s *Server) serve(ctx context.Context, raw []byte, src netip.AddrPort, tcp bool, buf []byte, sc *scratch) []byte {
	reply, r := s.local(raw, src, tcp, buf, sc)
	if r != nil {
		return s.remote(ctx, r, buf, sc)
	}
	return reply
}

// local answers one packet as far as it can without the network: the reply in wire
// form in buf (nil: drop), or the request when it must be forwarded (a copy that does
// not share sc).
func (s *Server) local(raw []byte, src netip.AddrPort, tcp bool, buf []byte, sc *scratch) ([]byte, *request) {
	if len(raw) < 12 || raw[2]&0x80 != 0 {
		return nil, nil // no header, or a response: never answered
	}
	// Read the version before answering: an answer from a newer index kept under an
	// older version is only thrown away early.
	var version uint64
	if v, ok := s.cfg.Authority.(Versioned); ok {
		version = v.Version()
	}
	wire := sc.wire // replies kept in wire form: UDP's only
	if tcp {
		wire = nil
	}
	if wire != nil {
		if reply, w := wire.get(raw, version, buf, s.cfg.Cache); reply != nil {
			if m := s.cfg.Metrics; m != nil {
				if w.cached {
					m.Cache(true)
				}
				m.Query(w.qtype, w.rcode)
			}
			return reply, nil
		}
	}
	msg := &sc.msg
	if err := msg.Unpack(raw); err != nil {
		return s.formerr(raw, buf), nil
	}
	r := &sc.req
	*r = request{msg: msg, src: src, tcp: tcp, size: mdns.MinMsgSize}
	if tcp {
		r.size = mdns.MaxMsgSize
	}
	for _, rr := range msg.Extra {
		if opt, ok := rr.(*mdns.OPT); ok {
			if r.opt != nil {
				r.opt = nil
				return s.encode(r, s.rcode(msg, mdns.RcodeFormatError), buf, sc), nil
			}
			r.opt = opt
		}
	}
	if r.opt != nil && !tcp {
		r.size = max(int(r.opt.UDPSize()), mdns.MinMsgSize)
	}
	switch {
	case msg.Opcode != mdns.OpcodeQuery:
		return s.encode(r, s.rcode(msg, mdns.RcodeNotImplemented), buf, sc), nil
	case len(msg.Question) != 1:
		return s.encode(r, s.rcode(msg, mdns.RcodeFormatError), buf, sc), nil
	case r.opt != nil && r.opt.Version() != 0:
		return s.encode(r, s.rcode(msg, mdns.RcodeBadVers), buf, sc), nil
	case msg.Question[0].Qclass != mdns.ClassINET:
		return s.encode(r, s.rcode(msg, mdns.RcodeRefused), buf, sc), nil
	}
	switch msg.Question[0].Qtype {
	case mdns.TypeANY:
		return s.encode(r, s.rcode(msg, mdns.RcodeNotImplemented), buf, sc), nil
	case mdns.TypeAXFR, mdns.TypeIXFR:
		return s.encode(r, s.rcode(msg, mdns.RcodeRefused), buf, sc), nil
	}
	if s.cfg.Forwarder.isLoop(msg, src) {
		return s.encode(r, s.rcode(msg, mdns.RcodeServerFailure), buf, sc), nil
	}
	if s.cfg.Authority != nil {
		if resp, ok := s.authority(msg); ok && resp != nil {
			reply := s.encode(r, resp, buf, sc)
			if version != 0 && wire != nil && (sc.rcode == "NOERROR" || sc.rcode == "NXDOMAIN") {
				wire.put(raw, reply, version, wireReply{qtype: sc.qtype, rcode: sc.rcode})
			}
			return reply, nil
		}
	}
	if c := s.cfg.Cache; c != nil {
		resp, changes := c.get(msg)
		if m := s.cfg.Metrics; m != nil {
			m.Cache(resp != nil)
		}
		if resp != nil {
			reply := s.encode(r, resp, buf, sc)
			if wire != nil && sc.rcode != "" {
				wire.put(raw, reply, version, wireReply{qtype: sc.qtype, rcode: sc.rcode, until: changes, cached: true})
			}
			return reply, nil
		}
	}
	if s.cfg.Forwarder == nil {
		return s.encode(r, s.rcode(msg, mdns.RcodeRefused), buf, sc), nil
	}
	fr, fm := *r, *msg
	fr.msg = &fm
	return nil, &fr
}

// authority asks the Authority; a panic in it is logged and answered SERVFAIL, never
// taken down with the server.
func (s *Server) authority(req *mdns.Msg) (resp *mdns.Msg, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("dns server: the authority panicked", "question", req.Question, "panic", p)
			resp, ok = s.rcode(req, mdns.RcodeServerFailure), true
		}
	}()
	return s.cfg.Authority.Answer(req)
}

// remote forwards r, caches the answer and returns the reply in wire form in buf.
func (s *Server) remote(ctx context.Context, r *request, buf []byte, sc *scratch) []byte {
	resp, err := s.cfg.Forwarder.Forward(ctx, r.msg)
	if err != nil {
		s.log.Debug("dns server: forwarding failed", "name", r.msg.Question[0].Name, "err", err)
		resp = s.rcode(r.msg, mdns.RcodeServerFailure)
		resp.RecursionAvailable = true
	}
	if s.cfg.Cache != nil && ctx.Err() == nil {
		s.cfg.Cache.Set(r.msg, resp)
	}
	return s.encode(r, resp, buf, sc)
}

// rcode returns an empty answer to req with rcode.
func (s *Server) rcode(req *mdns.Msg, rcode int) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	return m
}

// encode packs resp as the reply to r into buf: r's ID, our OPT when the client sent
// one (never the Authority's or an upstream's), truncated with TC to the client's size
// over UDP. resp itself is not changed. It counts the query.
func (s *Server) encode(r *request, resp *mdns.Msg, buf []byte, sc *scratch) []byte {
	m := &sc.out
	*m = *resp
	m.Id = r.msg.Id
	m.Response = true
	if s.cfg.Forwarder != nil {
		m.RecursionAvailable = true
	}
	for i, rr := range m.Extra {
		if rr.Header().Rrtype == mdns.TypeOPT {
			extra := make([]mdns.RR, 0, len(m.Extra))
			extra = append(extra, m.Extra[:i]...)
			for _, rr := range m.Extra[i+1:] {
				if rr.Header().Rrtype != mdns.TypeOPT {
					extra = append(extra, rr)
				}
			}
			m.Extra = extra
			break
		}
	}
	if r.opt != nil {
		sc.opt = mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT, Class: serverUDPSize}}
		if r.opt.Do() {
			sc.opt.SetDo()
		}
		m.Extra = append(m.Extra[:len(m.Extra):len(m.Extra)], &sc.opt)
	} else if m.Rcode > 0xF {
		m.Rcode = mdns.RcodeServerFailure // an extended rcode needs EDNS0
	}
	// Compression costs a map per message: only for the ones that need it.
	m.Compress = false
	out, err := m.PackBuffer(buf)
	if err == nil && len(out) > mdns.MinMsgSize {
		m.Compress = true
		out, err = m.PackBuffer(buf)
	}
	if err == nil && !r.tcp && len(out) > r.size {
		m.Truncate(r.size)
		out, err = m.PackBuffer(buf)
	}
	if err != nil {
		s.log.Warn("dns server: packing a reply", "name", r.msg.Question, "err", err)
		sc.qtype, sc.rcode = "", "" // nothing to keep in wire form
		return s.header(r.msg.Id, r.msg.Opcode, r.msg.RecursionDesired, mdns.RcodeServerFailure, buf)
	}
	sc.qtype, sc.rcode = "NONE", mdns.RcodeToString[m.Rcode]
	if len(r.msg.Question) == 1 {
		if sc.qtype = mdns.TypeToString[r.msg.Question[0].Qtype]; sc.qtype == "" {
			sc.qtype = "OTHER"
		}
	}
	if mt := s.cfg.Metrics; mt != nil {
		mt.Query(sc.qtype, sc.rcode)
	}
	return out
}

// wireCache keeps replies in wire form, keyed by the query's bytes after its ID (flags,
// counts, question and OPT record), for one UDP serving loop (no locks): the Authority's,
// and the Cache's. A reply is a function of those bytes, of the Authority's version and,
// for a cached upstream answer, of the second of the entry's age (its TTLs): the same
// query gets the same reply with its own ID, in the case it asked in, until the version
// changes or, for a cached answer, its TTLs would. It holds one version's replies;
// wireCacheMax bounds it.
type wireCache struct {
	version uint64
	entries map[string]wireReply
}

type wireReply struct {
	reply        []byte
	qtype, rcode string    // the metric labels
	until        time.Time // for a cached upstream answer: when its TTLs change
	cached       bool      // from the Cache: a hit to count
}

const (
	wireCacheMax   = 1 << 15
	wireCacheQuery = 512 // longer queries are not kept
)

// get copies the reply to raw into buf with raw's ID, or returns nil. cache is the clock
// of replies that came from it. The entry is returned by value: a pointer to it would
// escape, an allocation a query.
func (c *wireCache) get(raw []byte, version uint64, buf []byte, cache *Cache) ([]byte, wireReply) {
	if c.version != version || len(raw) > wireCacheQuery {
		return nil, wireReply{}
	}
	w, ok := c.entries[string(raw[2:])]
	if !ok || len(w.reply) > len(buf) || w.cached && !cache.now().Before(w.until) {
		return nil, wireReply{}
	}
	out := buf[:len(w.reply)]
	copy(out, w.reply)
	out[0], out[1] = raw[0], raw[1]
	return out, w
}

// put keeps w with a copy of reply as the answer to raw under version, dropping what an
// older version left.
func (c *wireCache) put(raw, reply []byte, version uint64, w wireReply) {
	if len(raw) > wireCacheQuery {
		return
	}
	if c.version != version || c.entries == nil || len(c.entries) >= wireCacheMax {
		c.version, c.entries = version, make(map[string]wireReply, min(2*len(c.entries)+16, wireCacheMax))
	}
	w.reply = slices.Clone(reply)
	c.entries[string(raw[2:])] = w
}

// formerr answers a packet whose header is readable but whose rest is not.
func (s *Server) formerr(raw, buf []byte) []byte {
	id := binary.BigEndian.Uint16(raw)
	if m := s.cfg.Metrics; m != nil {
		m.Query("NONE", "FORMERR")
	}
	return s.header(id, int(raw[2]>>3)&0xF, raw[2]&1 != 0, mdns.RcodeFormatError, buf)
}

// header writes a reply that is only a header (no question) into buf.
func (s *Server) header(id uint16, opcode int, rd bool, rcode int, buf []byte) []byte {
	out := buf[:12]
	clear(out)
	binary.BigEndian.PutUint16(out, id)
	out[2] = 0x80 | byte(opcode&0xF)<<3
	if rd {
		out[2] |= 1
	}
	out[3] = byte(rcode & 0xF)
	return out
}
