package healthprobe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"

	"github.com/tabby-net/tabby/api"
)

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Checker runs probes through its dial function.
type Checker struct {
	dial DialFunc
	http *http.Client
}

// NewChecker returns a Checker that dials with dial (nil: a net.Dialer).
func NewChecker(dial DialFunc) *Checker {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return &Checker{dial: dial, http: &http.Client{
		// A fresh connection per probe: a reused one would not notice a new server.
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
		// 3xx passes, as in Kubernetes; a probe follows no redirect.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// maxBody is how much of an HTTP answer's body a probe reads before closing it.
const maxBody = 4 << 10

// Check probes addr once with hc, within hc.Timeout(): tcp passes when a connection
// opens, http when a GET of hc.Path answers 2xx or 3xx. The error says why it failed.
func (c *Checker) Check(ctx context.Context, addr netip.AddrPort, hc api.HealthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout())
	defer cancel()
	if hc.Path == "" {
		conn, err := c.dial(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+hc.Path, nil)
	if err != nil {
		return fmt.Errorf("http probe of %s%s: %w", addr, hc.Path, err)
	}
	req.Header.Set("User-Agent", "tabby-node/healthprobe")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s%s: HTTP %s", addr, hc.Path, resp.Status)
	}
	return nil
}
