package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeUpstream is a miekg server on 127.0.0.1 (UDP and TCP on one port) counting the
// queries it sees.
type fakeUpstream struct {
	addr    string
	udpSeen atomic.Int32
	tcpSeen atomic.Int32
}

// startUpstream serves handler; tcp tells it which transport the query came over.
func startUpstream(t testing.TB, handler func(req *mdns.Msg, tcp bool) *mdns.Msg) *fakeUpstream {
	t.Helper()
	pc, l := udpAndTCP(t)
	u := &fakeUpstream{addr: pc.LocalAddr().String()}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		_, tcp := w.LocalAddr().(*net.TCPAddr)
		if tcp {
			u.tcpSeen.Add(1)
		} else {
			u.udpSeen.Add(1)
		}
		if resp := handler(req, tcp); resp != nil {
			w.WriteMsg(resp)
		}
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

func (u *fakeUpstream) seen() int { return int(u.udpSeen.Load() + u.tcpSeen.Load()) }

// answerA answers every A query with addr (TTL 60), everything else NXDOMAIN with an SOA.
// udpAndTCP listens on one port of 127.0.0.1 for UDP and TCP: a port UDP got may be
// taken for TCP by another process, so then it tries another.
func udpAndTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) || try == 10 {
			t.Fatal(err)
		}
	}
}

func answerA(addr string) func(*mdns.Msg, bool) *mdns.Msg {
	return func(req *mdns.Msg, _ bool) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		q := req.Question[0]
		if q.Qtype != mdns.TypeA || strings.HasPrefix(strings.ToLower(q.Name), "nx.") {
			m.Rcode = mdns.RcodeNameError
			soa, _ := mdns.NewRR(soaRR)
			m.Ns = []mdns.RR{soa}
			return m
		}
		a, _ := mdns.NewRR(q.Name + " 60 IN A " + addr)
		m.Answer = []mdns.RR{a}
		return m
	}
}

// silentUDP is an address on 127.0.0.1 that receives and never answers.
func silentUDP(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTestForwarder(t testing.TB, timeout time.Duration, upstreams ...string) *Forwarder {
	t.Helper()
	f, err := NewForwarder(ForwarderConfig{Upstreams: upstreams, Timeout: timeout, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func TestForwarderConfig(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	os.WriteFile(rc, []byte("# comment\nsearch example.org\nnameserver 192.0.2.1\nnameserver 2001:db8::1\noptions ndots:5\n"), 0o644)
	f, err := NewForwarder(ForwarderConfig{ResolvConf: rc})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("[2001:db8::1]:53")}
	if got := f.Upstreams(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("upstreams %v, want %v", got, want)
	}

	f, err = NewForwarder(ForwarderConfig{Upstreams: []string{"1.2.3.4", "1.2.3.4:5353", "[::1]:53"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Upstreams(); len(got) != 3 || got[0].String() != "1.2.3.4:53" || got[1].String() != "1.2.3.4:5353" || got[2].String() != "[::1]:53" {
		t.Errorf("upstreams %v", got)
	}

	os.WriteFile(rc, []byte("search example.org\n"), 0o644)
	if _, err := NewForwarder(ForwarderConfig{ResolvConf: rc}); err == nil {
		t.Error("no error for a resolv.conf without nameservers")
	}
	if _, err := NewForwarder(ForwarderConfig{Upstreams: []string{"dns.example.org"}}); err == nil {
		t.Error("no error for a host name upstream")
	}
	if _, err := NewForwarder(ForwarderConfig{ResolvConf: filepath.Join(dir, "missing")}); err == nil {
		t.Error("no error for a missing resolv.conf")
	}
}

func TestForwarderExcludesSelf(t *testing.T) {
	f := newTestForwarder(t, time.Second, "127.0.0.53:53", "10.96.0.10", "192.0.2.1")
	if err := f.excludeSelf([]netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53"), netip.MustParseAddrPort("0.0.0.0:53")}); err != nil {
		t.Fatal(err)
	}
	if got := f.Upstreams(); len(got) != 1 || got[0].String() != "192.0.2.1:53" {
		t.Errorf("upstreams %v, want only 192.0.2.1:53", got)
	}
	f = newTestForwarder(t, time.Second, "10.96.0.10")
	if err := f.excludeSelf([]netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("err %v, want a loop error", err)
	}
}

func TestForwarderForwards(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.7"))
	f := newTestForwarder(t, time.Second, up.addr)
	req := query("WWW.example.org.", mdns.TypeA)
	req.Id = 777
	resp, err := f.Forward(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Id != 777 || resp.Question[0].Name != "WWW.example.org." || len(resp.Answer) != 1 {
		t.Fatalf("resp %v", resp)
	}
	if a := resp.Answer[0].(*mdns.A); a.A.String() != "192.0.2.7" {
		t.Errorf("answer %v", a)
	}
	// The pooled socket is reused: many queries, one socket.
	for range 20 {
		if _, err := f.Forward(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.upstreams[0].pool); n != 1 {
		t.Errorf("%d pooled sockets after sequential queries, want 1", n)
	}
}

func TestForwarderTCPOnTruncation(t *testing.T) {
	up := startUpstream(t, func(req *mdns.Msg, tcp bool) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetReply(req)
		if !tcp {
			m.Truncated = true
			return m
		}
		for i := range 100 {
			a, _ := mdns.NewRR(req.Question[0].Name + " 60 IN A 192.0.2." + strconv.Itoa(i))
			m.Answer = append(m.Answer, a)
		}
		return m
	})
	f := newTestForwarder(t, time.Second, up.addr)
	resp, err := f.Forward(context.Background(), query("big.example.org.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(resp.Answer) != 100 {
		t.Errorf("truncated %v, %d answers; want the full TCP answer", resp.Truncated, len(resp.Answer))
	}
	if up.udpSeen.Load() != 1 || up.tcpSeen.Load() != 1 {
		t.Errorf("upstream saw %d udp, %d tcp; want 1, 1", up.udpSeen.Load(), up.tcpSeen.Load())
	}
}

func TestForwarderFailover(t *testing.T) {
	servfail := startUpstream(t, func(req *mdns.Msg, _ bool) *mdns.Msg {
		m := new(mdns.Msg)
		return m.SetRcode(req, mdns.RcodeServerFailure)
	})
	good := startUpstream(t, answerA("192.0.2.8"))
	f := newTestForwarder(t, 200*time.Millisecond, silentUDP(t), servfail.addr, good.addr)
	start := time.Now()
	resp, err := f.Forward(context.Background(), query("a.example.org.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Answer) != 1 || servfail.seen() != 1 || good.seen() != 1 {
		t.Errorf("resp %v; servfail upstream saw %d, good %d", resp, servfail.seen(), good.seen())
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > time.Second {
		t.Errorf("took %v, want one 200ms timeout", d)
	}

	// Every upstream failing: the last SERVFAIL, else the error.
	f = newTestForwarder(t, 100*time.Millisecond, silentUDP(t), servfail.addr)
	if resp, err := f.Forward(context.Background(), query("a.example.org.", mdns.TypeA)); err != nil || resp.Rcode != mdns.RcodeServerFailure {
		t.Errorf("resp %v err %v, want SERVFAIL", resp, err)
	}
	f = newTestForwarder(t, 100*time.Millisecond, silentUDP(t))
	_, err = f.Forward(context.Background(), query("a.example.org.", mdns.TypeA))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("err %v, want a timeout", err)
	}
}

func TestForwarderCancel(t *testing.T) {
	f := newTestForwarder(t, 5*time.Second, silentUDP(t))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := f.Forward(ctx, query("a.example.org.", mdns.TypeA)); err == nil {
		t.Error("no error after cancel")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Forward returned %v after its ctx was cancelled", d)
	}
}
