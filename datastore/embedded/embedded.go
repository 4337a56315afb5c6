// Package embedded runs the etcd server inside a tabby process: a single-member cluster
// that tabby-node can host and tests start (through datastore/datastoretest), or one member
// of a multi-member cluster. It owns the server's configuration, its TLS, its readiness
// wait and its logs; clients reach it through datastore.Connect like any other etcd. Only
// programs that serve etcd import it: it links etcd's server, raft and storage, which a
// client has no use for.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/internal/zapslog"
)

// Config configures an etcd server run inside a tabby process.
type Config struct {
	DataDir string // required; created if missing
	Name    string // member name; default "tabby"
	// ListenClient and ListenPeer are http:// or https:// URLs; defaults
	// http://127.0.0.1:2379 and http://127.0.0.1:2380. The member advertises them as they
	// are, so in a cluster they must be addresses the others reach. Port 0 picks a free
	// port (see Endpoints): for a single member only.
	ListenClient, ListenPeer string
	// ClientTLS is required with an https ListenClient, and then complete: the server's
	// certificate and key, and the CA that signs the client certificates it accepts (no
	// certificate, no access). PeerTLS is the same for an https ListenPeer: each member's
	// certificate serves its peers and authenticates it to them.
	ClientTLS, PeerTLS TLS
	// InitialCluster is etcd's --initial-cluster: name=peerURL for every member the
	// cluster starts with, comma-separated; empty means this member alone.
	InitialCluster string
	// ClusterState is "new" (the default: the members of InitialCluster start a cluster)
	// or "existing" (join a running cluster that has added this member: tabbyctl etcd
	// member add). A data directory that holds a member already ignores both.
	ClusterState string
	// UnsafeNoFsync skips fsync: for tests, where losing data on a crash does not matter.
	UnsafeNoFsync bool
	// Logger receives etcd's warnings and errors; nil means slog.Default().
	Logger *slog.Logger
}

// TLS are the PEM files of one side of a member's TLS.
type TLS struct {
	CertFile, KeyFile string
	// CAFile verifies the other side's certificate.
	CAFile string
}

func (t TLS) empty() bool { return t == TLS{} }

// readyTimeout bounds how long Start waits for etcd to serve.
const readyTimeout = 60 * time.Second

// Etcd is a running embedded etcd.
type Etcd struct {
	etcd      *embed.Etcd
	endpoints []string
	mute      *atomic.Bool
	closeOnce sync.Once
}

// Start starts etcd and waits until it serves clients, or fails: a port in use is an
// error naming the address.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded etcd: data directory required")
	}
	if cfg.Name == "" {
		cfg.Name = "tabby"
	}
	client, err := listenURL("client", cfg.ListenClient, "http://127.0.0.1:2379", cfg.ClientTLS)
	if err != nil {
		return nil, err
	}
	peer, err := listenURL("peer", cfg.ListenPeer, "http://127.0.0.1:2380", cfg.PeerTLS)
	if err != nil {
		return nil, err
	}
	switch cfg.ClusterState {
	case "":
		cfg.ClusterState = embed.ClusterStateFlagNew
	case embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting:
	default:
		return nil, fmt.Errorf("embedded etcd: initial cluster state %q: want new or existing", cfg.ClusterState)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mute := new(atomic.Bool)

	ec := embed.NewConfig()
	ec.Name, ec.Dir = cfg.Name, cfg.DataDir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.ClientTLSInfo, ec.PeerTLSInfo = tlsInfo(cfg.ClientTLS), tlsInfo(cfg.PeerTLS)
	ec.InitialCluster, ec.ClusterState = cfg.InitialCluster, cfg.ClusterState
	ec.InitialClusterToken = "tabby"
	if ec.InitialCluster == "" {
		ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
		if isLoopback(peer) {
			// A member alone whose peers could not reach it has no peer to lose
			// contact with, so a short election timeout costs nothing and makes startup
			// take ~0.1s instead of ~1s. A member that may have peers keeps etcd's
			// defaults (100ms, 1s), which a busy host's scheduling delays do not turn
			// into elections.
			ec.TickMs, ec.ElectionMs = 10, 100
		}
	}
	// Resource churn (workload endpoints) would otherwise grow the history forever;
	// watchers relist if they fall behind a compaction.
	ec.AutoCompactionMode, ec.AutoCompactionRetention = embed.CompactorModePeriodic, "1h"
	// tabbyctl applies a whole directory in one transaction; etcd's default of 128 ops
	// would cap that at about 60 resources.
	ec.MaxTxnOps = 10000
	// and its default request limit (1.5 MiB) at about 2,000 small ones.
	ec.MaxRequestBytes = datastore.MaxRequestBytes
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(zapslog.NewCore(log.With("component", "etcd"), zapcore.WarnLevel, mute,
		// Every start of a local single-member etcd says these; none is a problem here.
		"Running http and grpc server on single port. This is not recommended for production.",
		"simple token is not cryptographically signed",
		// The storage version monitor runs before the first raft term is stored on a
		// fresh data directory, and succeeds on its next round.
		"Failed to detect schema version",
		"failed to update storage version",
	)))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd (client %s, peer %s): %w", client, peer, err)
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err = <-e.Err():
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("not ready after %s", readyTimeout)
	}
	if err != nil {
		mute.Store(true)
		e.Close()
		return nil, fmt.Errorf("start embedded etcd (client %s): %w", client, err)
	}
	em := &Etcd{etcd: e, mute: mute}
	for _, l := range e.Clients {
		em.endpoints = append(em.endpoints, client.Scheme+"://"+l.Addr().String())
	}
	return em, nil
}

// listenURL parses a listen URL (def when empty) and checks that it has TLS files exactly
// when it is https.
func listenURL(what, s, def string, files TLS) (*url.URL, error) {
	if s == "" {
		s = def
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("embedded etcd: %s URL %q: want http://host:port or https://host:port", what, s)
	}
	switch {
	case u.Scheme == "https" && (files.CertFile == "" || files.KeyFile == "" || files.CAFile == ""):
		return nil, fmt.Errorf("embedded etcd: %s URL %s is https: it needs a certificate, its key and a CA for the %ss' certificates (without that CA anyone who reaches the port is served)", what, s, what)
	case u.Scheme == "http" && !files.empty():
		return nil, fmt.Errorf("embedded etcd: %s TLS files given but the %s URL %s is http://: use https://", what, what, s)
	}
	return u, nil
}

func isLoopback(u *url.URL) bool {
	a, err := netip.ParseAddr(u.Hostname())
	return u.Hostname() == "localhost" || (err == nil && a.IsLoopback())
}

// tlsInfo is etcd's TLS configuration for files: client certificates required, signed by
// the CA.
func tlsInfo(files TLS) transport.TLSInfo {
	if files.empty() {
		return transport.TLSInfo{}
	}
	return transport.TLSInfo{
		CertFile: files.CertFile, KeyFile: files.KeyFile,
		TrustedCAFile: files.CAFile, ClientCertAuth: true,
	}
}

// Endpoints are the client URLs to Connect to, with the ports actually bound.
func (e *Etcd) Endpoints() []string { return e.endpoints }

// Err delivers an error if etcd fails while running.
func (e *Etcd) Err() <-chan error { return e.etcd.Err() }

// Stopped is closed when the etcd server stops serving: after Close, or when this member
// was removed from its cluster.
func (e *Etcd) Stopped() <-chan struct{} { return e.etcd.Server.StopNotify() }

// Close stops etcd; connected clients see it as unavailable. etcd's graceful stop waits
// about 5s for clients' open watch streams, so close local clients first. Closing again
// does nothing (a test that stops etcd early, and its cleanup).
func (e *Etcd) Close() {
	e.closeOnce.Do(func() {
		// etcd logs its orderly shutdown's closed listeners as errors.
		e.mute.Store(true)
		e.etcd.Close()
	})
}
