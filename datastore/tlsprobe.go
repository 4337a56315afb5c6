package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// probeTimeout bounds each step (connect, handshake, wait for an alert) of probing one
// endpoint after Connect failed.
const probeTimeout = time.Second

// diagnose looks for the cause of Connect's failed first read that the gRPC client hides
// behind its deadline: TLS on one side only, a server certificate the CA does not verify,
// a client certificate the server wants and did not get or does not trust, a refused
// connection. It probes every endpoint with the client's own TLS configuration (nil:
// plain) and returns one line per endpoint it can explain, or "" when none has a fault it
// can see (a cluster without quorum, say), and whether a fault was one of TLS settings.
// The endpoints are probed at once: a few seconds at most, however many members are down.
func diagnose(ctx context.Context, endpoints []string, tc *tls.Config) (why string, tlsFault bool) {
	whys := make([]string, len(endpoints))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, ep := range endpoints {
		wg.Go(func() {
			if f := probe(ctx, ep, tc); f.why != "" {
				whys[i] = ep + ": " + f.why
				mu.Lock()
				tlsFault = tlsFault || f.tls
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return strings.Join(slices.DeleteFunc(whys, func(s string) bool { return s == "" }), "; "), tlsFault
}

// fault is what a probe found wrong with an endpoint: why ("" for nothing), and whether
// it is a mismatch of TLS settings rather than a server that is down or out of reach.
type fault struct {
	why string
	tls bool
}

// probe explains what is wrong with one endpoint.
func probe(ctx context.Context, ep string, tc *tls.Config) fault {
	hostPort := ep
	useTLS := tc != nil // a bare host:port speaks TLS when there is a TLS configuration
	switch {
	case strings.HasPrefix(ep, "https://"):
		hostPort, useTLS = strings.TrimPrefix(ep, "https://"), true
	case strings.HasPrefix(ep, "http://"):
		hostPort, useTLS = strings.TrimPrefix(ep, "http://"), false
	}
	if !useTLS {
		// Plain HTTP/2 to a TLS port fails only by timing out: see whether it speaks TLS.
		if speaksTLS(ctx, hostPort) {
			return fault{"the server requires TLS and this client speaks plain HTTP: use an https:// endpoint with the etcd CA, client certificate and key files", true}
		}
		return fault{why: dialFault(ctx, hostPort)}
	}
	raw, err := dial(ctx, hostPort)
	if err != nil {
		return fault{why: err.Error()}
	}
	defer raw.Close()
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(hostPort)
	}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if err := conn.Handshake(); err != nil {
		return fault{handshakeFault(err, tc), true}
	}
	// Under TLS 1.3 the server checks the client's certificate after the client has
	// finished its handshake: a refusal arrives as an alert on the first read. A server
	// that accepted the client waits for it to speak, and the read times out.
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		var alert tls.AlertError
		if errors.As(err, &alert) || strings.Contains(err.Error(), "remote error") {
			return fault{clientCertFault(err, tc), true}
		}
	}
	return fault{}
}

// handshakeFault names the cause of a failed TLS handshake.
func handshakeFault(err error, tc *tls.Config) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &record):
		return "the server does not speak TLS: use an http:// endpoint, or serve etcd over https"
	case errors.Is(err, io.EOF):
		// etcd's plain listener hangs up on a TLS hello.
		return "the server does not speak TLS (it closed the connection on the TLS hello): use an http:// endpoint, or serve etcd over https"
	case errors.As(err, &unknownCA) && tc.RootCAs == nil:
		return "TLS: the server's certificate is not signed by a CA this host trusts, and no etcd CA file was given (--etcd-ca-cert-file, etcd_ca_cert_file): " + err.Error()
	case errors.As(err, &unknownCA):
		return "TLS: the server's certificate is not signed by the CA of the etcd CA file (wrong CA?): " + err.Error()
	case errors.As(err, &hostname):
		return "TLS: the server's certificate is not valid for this endpoint's address: " + err.Error()
	case strings.Contains(err.Error(), "remote error"):
		return clientCertFault(err, tc)
	}
	return "TLS handshake: " + err.Error()
}

// clientCertFault names the cause of the server's refusal of the client's certificate.
func clientCertFault(err error, tc *tls.Config) string {
	if len(tc.Certificates) == 0 && tc.GetClientCertificate == nil {
		return "TLS: the server requires a client certificate and none was given (--etcd-cert-file and --etcd-key-file, etcd_cert_file and etcd_key_file): " + err.Error()
	}
	return "TLS: the server refused the client certificate (is it signed by the CA the server trusts for clients?): " + err.Error()
}

// speaksTLS says whether the server at hostPort answers a TLS handshake.
func speaksTLS(ctx context.Context, hostPort string) bool {
	raw, err := dial(ctx, hostPort)
	if err != nil {
		return false
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // only asks whether it speaks TLS
	conn.SetDeadline(time.Now().Add(probeTimeout))
	err = conn.Handshake()
	var alert tls.AlertError
	return err == nil || errors.As(err, &alert) || strings.Contains(fmt.Sprint(err), "remote error")
}

// dialFault is the reason a TCP connection to hostPort fails, or "".
func dialFault(ctx context.Context, hostPort string) string {
	c, err := dial(ctx, hostPort)
	if err != nil {
		return err.Error()
	}
	c.Close()
	return ""
}

func dial(ctx context.Context, hostPort string) (net.Conn, error) {
	d := net.Dialer{Timeout: probeTimeout}
	return d.DialContext(ctx, "tcp", hostPort)
}
