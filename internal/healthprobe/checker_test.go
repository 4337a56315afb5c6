package healthprobe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

// TestCheckerTCP: a listening port passes, a closed one fails, and the probe dials the
// endpoint's address through the dial function it was given.
func TestCheckerTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	var dialed []string
	c := NewChecker(func(ctx context.Context, network, a string) (net.Conn, error) {
		dialed = append(dialed, network+" "+a)
		return (&net.Dialer{}).DialContext(ctx, network, a)
	})
	tcp := api.HealthCheck{Interval: time.Second, Threshold: 2}
	if err := c.Check(context.Background(), addr, tcp); err != nil {
		t.Errorf("listening port: %v", err)
	}
	l.Close()
	if err := c.Check(context.Background(), addr, tcp); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v, want connection refused", err)
	}
	if want := "tcp " + addr.String(); len(dialed) != 2 || dialed[0] != want {
		t.Errorf("dialed %q, want %q twice", dialed, want)
	}
}

// TestCheckerHTTP: 2xx and 3xx pass (no redirect followed), other codes fail naming
// the status, and each probe opens a new connection.
func TestCheckerHTTP(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("fine"))
		case "/moved":
			http.Redirect(w, r, "http://192.0.2.1/elsewhere", http.StatusFound)
		default:
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	c := NewChecker(nil)
	for path, want := range map[string]string{"/ok": "", "/moved": "", "/sick": "HTTP 503 Service Unavailable"} {
		err := c.Check(context.Background(), addr, api.HealthCheck{Path: path, Interval: time.Second, Threshold: 1})
		if (err == nil) != (want == "") || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("GET %s: %v, want %q", path, err, want)
		}
	}
	if conns.Load() != 3 {
		t.Errorf("%d connections for 3 probes, want one each", conns.Load())
	}
}

// TestCheckerTimeout: an endpoint that does not answer fails once the probe's timeout
// (the interval, at most 1 s) has passed.
func TestCheckerTimeout(t *testing.T) {
	c := NewChecker(func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	for _, hc := range []api.HealthCheck{{Interval: 100 * time.Millisecond, Threshold: 1}, {Path: "/", Interval: 100 * time.Millisecond, Threshold: 1}} {
		err := c.Check(context.Background(), netip.MustParseAddrPort("10.65.0.2:8080"), hc)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s probe of a silent endpoint: %v, want the deadline exceeded", hc, err)
		}
	}
}
