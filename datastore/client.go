// Package datastore owns tabby's etcd access: typed CRUD with revisions, transactions and
// watch with resync. It is an etcd client only: the etcd server a single-host cluster
// runs lives in datastore/embedded, so programs that only talk to etcd do not link it.
package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/tabby-net/tabby/datastore/internal/zapslog"
)

// DefaultEndpoint is where Connect looks for etcd when Config.Endpoints is empty.
const DefaultEndpoint = "http://127.0.0.1:2379"

// MaxRequestBytes is the largest request tabby sends etcd: a write (and a transaction
// with all its compares and writes) larger than this is refused before it is sent
// (ErrTooLarge). The embedded etcd accepts requests this large; it is etcd's recommended
// maximum (its default is 1.5 MiB: an external etcd needs --max-request-bytes=10485760 to
// take tabby's largest transactions).
const MaxRequestBytes = 10 << 20

// grpcOverheadBytes is what gRPC framing adds to a request, as etcd reckons it: the client
// may send MaxRequestBytes of keys and values with this on top.
const grpcOverheadBytes = 512 << 10

// DefaultDialTimeout bounds Connect when Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Config says how to reach etcd.
type Config struct {
	// Endpoints are "host:port" or "http(s)://host:port"; empty means DefaultEndpoint.
	Endpoints []string
	// CAFile, CertFile and KeyFile configure TLS: CAFile verifies the server, CertFile and
	// KeyFile (both or neither) authenticate the client.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds Connect's check that the cluster answers; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives the client's and its watchers' logs; nil means slog.Default().
	Logger *slog.Logger
	// Observe, when set, is told of every unary request to etcd: its gRPC method's short
	// name ("Range", "Txn", "LeaseGrant"), how long it took and its error (metrics).
	Observe func(method string, d time.Duration, err error)

	interceptor grpc.UnaryClientInterceptor // tests' fault injection (export_test.go)
}

// Client is a connection to etcd with typed access to tabby's resources. It is safe for
// concurrent use.
type Client struct {
	etcd *clientv3.Client
	log  *slog.Logger

	mu     sync.Mutex
	checks []WriteCheck // see AddWriteCheck
	hooks  []writeHook  // fixed at Connect: builtinHooks
}

// Connect dials etcd and checks, within cfg.DialTimeout, that the cluster answers a
// linearizable read of one key (so it has a leader); an unreachable cluster is an error
// naming the endpoints, never a hang.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		endpoints = []string{DefaultEndpoint}
	}
	schemes := map[string]bool{}
	for _, ep := range endpoints {
		scheme, err := checkEndpoint(ep)
		if err != nil {
			return nil, err
		}
		schemes[scheme] = true
	}
	// The etcd client takes plain or TLS from the first endpoint for all of them, and
	// drops the TLS files for http://: either would fail later as a mere timeout.
	if schemes["http"] && schemes["https"] {
		return nil, fmt.Errorf("etcd endpoints %s: some http://, some https://: give every member with the scheme it serves", strings.Join(endpoints, ","))
	}
	if len(cfg.Endpoints) > 0 && schemes["http"] && (cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "") {
		return nil, fmt.Errorf("etcd endpoints %s are http:// but etcd TLS files are given: use https:// endpoints for a TLS etcd", strings.Join(endpoints, ","))
	}
	secure := schemes["https"]
	tlsCfg, err := loadTLS(cfg, secure)
	if err != nil {
		return nil, err
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: timeout,
		TLS:         tlsCfg,
		// The client logs every retry at warn level; only its errors are worth reading.
		Logger:      zap.New(zapslog.NewCore(log.With("component", "etcd-client"), zapcore.ErrorLevel, nil)),
		DialOptions: slices.Concat(reconnectOptions(timeout), observeOptions(cfg.Observe), interceptorOptions(cfg.interceptor)),
		// The client's default (2 MiB) would refuse a transaction the server accepts.
		MaxCallSendMsgSize: MaxRequestBytes + grpcOverheadBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	c := &Client{etcd: etcd, log: log, hooks: builtinHooks()}

	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.ping(pingCtx); err != nil {
		etcd.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(endpoints, ","), ctx.Err())
		}
		// The client only times out: a probe of each endpoint names what it can see.
		prefix := fmt.Sprintf("etcd at %s unreachable after %s: ", strings.Join(endpoints, ","), timeout)
		if why, tlsFault := diagnose(ctx, endpoints, tlsCfg); why != "" {
			return nil, &ConnectError{msg: prefix + why, TLS: tlsFault, err: err}
		}
		return nil, &ConnectError{msg: prefix + err.Error(), err: err}
	}
	return c, nil
}

// A ConnectError is Connect's failure to reach etcd in time. TLS says a probe of the
// endpoints found a mismatch of TLS settings (a configuration to fix) rather than a
// server that is down or out of reach, so a caller's hint can say which to look at.
type ConnectError struct {
	msg string
	TLS bool
	err error
}

func (e *ConnectError) Error() string { return e.msg }
func (e *ConnectError) Unwrap() error { return e.err }

// reconnectMaxDelay caps the wait between attempts to reconnect to an etcd that went away.
// gRPC's default grows to 120 s: after a one-minute outage an agent found etcd back only
// tens of seconds after it returned, its watches and readiness waiting on the connection.
// One refused connection a second per client is nothing to etcd.
const reconnectMaxDelay = time.Second

// reconnectOptions make the client retry a lost connection quickly and at least every
// reconnectMaxDelay; an attempt may take up to the dial timeout (a TLS handshake on a
// busy machine).
func reconnectOptions(dialTimeout time.Duration) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMaxDelay},
		MinConnectTimeout: dialTimeout,
	})}
}

// observeOptions times every unary request for observe (none when it is nil).
func observeOptions(observe func(string, time.Duration, error)) []grpc.DialOption {
	if observe == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			start := time.Now()
			err := invoke(ctx, method, req, reply, cc, opts...)
			observe(method[strings.LastIndexByte(method, '/')+1:], time.Since(start), err)
			return err
		})}
}

func interceptorOptions(i grpc.UnaryClientInterceptor) []grpc.DialOption {
	if i == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(i)}
}

// checkEndpoint accepts "host:port" and "http(s)://host:port" and returns the scheme
// ("" for none).
func checkEndpoint(ep string) (scheme string, err error) {
	hostPort := ep
	for _, s := range []string{"https", "http"} {
		if rest, ok := strings.CutPrefix(ep, s+"://"); ok {
			hostPort, scheme = rest, s
			break
		}
	}
	if host, port, err := net.SplitHostPort(hostPort); err != nil || host == "" || port == "" {
		return "", fmt.Errorf("etcd endpoint %q: want host:port or http(s)://host:port", ep)
	}
	return scheme, nil
}

// loadTLS builds the client TLS config from the files in cfg; nil when neither a file
// nor an https endpoint asks for TLS.
func loadTLS(cfg Config, secure bool) (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" && !secure {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s: no PEM certificates in it", cfg.CAFile)
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("etcd client certificate and key: give both files or neither")
	}
	if cfg.CertFile != "" {
		certPEM, err := os.ReadFile(cfg.CertFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate file: %w", err)
		}
		keyPEM, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client key file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %s with key %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Close releases the connection; watchers started from c end.
func (c *Client) Close() error { return c.etcd.Close() }

// Ping checks, within timeout, that the cluster answers a linearizable read (so it is
// reachable and has a leader): the agent's readiness asks it.
func (c *Client) Ping(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.ping(ctx); err != nil {
		return fmt.Errorf("etcd at %s: %w", strings.Join(c.etcd.Endpoints(), ","), err)
	}
	return nil
}

// ping is a linearizable read of one key: not a count of the prefix, which walks every
// resource's key, on every tabby-cni and tabbyctl run and every readiness check.
func (c *Client) ping(ctx context.Context) error {
	_, err := c.etcd.Get(ctx, ResourcePrefix, clientv3.WithKeysOnly())
	return err
}

// Etcd is the raw etcd client, for packages (IPAM) that keep their own keys outside
// ResourcePrefix.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }
