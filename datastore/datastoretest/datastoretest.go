// Package datastoretest starts a throwaway embedded etcd (datastore/embedded) for tests
// of packages that use the datastore.
package datastoretest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/embedded"
	"github.com/tabby-net/tabby/internal/pki"
)

// StartEmbedded starts etcd in a temporary directory on free loopback ports (the kernel
// picks them, so parallel tests cannot collide) and stops it when the test ends. It
// skips fsync: a test's data need not survive a crash.
func StartEmbedded(t testing.TB) *embedded.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embedded.Config{
		// A directory etcd creates itself gets the 0700 mode it insists on.
		DataDir:       filepath.Join(t.TempDir(), "etcd"),
		ListenClient:  "http://127.0.0.1:0",
		ListenPeer:    "http://127.0.0.1:0",
		UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// Start starts an embedded etcd (see StartEmbedded) and returns a client connected to
// it; both are closed when the test ends.
func Start(t testing.TB) *datastore.Client {
	t.Helper()
	return Connect(t, StartEmbedded(t))
}

// Connect returns a client of e, closed when the test ends.
func Connect(t testing.TB, e *embedded.Etcd) *datastore.Client {
	t.Helper()
	c, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TLS are the files of a TLS etcd started by StartEmbeddedTLS.
type TLS struct {
	// CAFile signs the server's and the client's certificates.
	CAFile string
	// Client is a client certificate the server accepts.
	Client pki.Files
	// CA signs more certificates the server accepts or trusts.
	CA *pki.CA
}

// StartEmbeddedTLS starts etcd as StartEmbedded does, serving https with client
// certificates required, signed by a CA made for the test.
func StartEmbeddedTLS(t testing.TB) (*embedded.Etcd, TLS) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA(filepath.Join(dir, "pki"), "tabby test CA")
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	server, err := ca.Issue(filepath.Join(dir, "pki"), "server", "etcd", pki.Server, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	client, err := ca.Issue(filepath.Join(dir, "pki"), "client", "tabby", pki.Client)
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files := embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile}
	e, err := embedded.Start(ctx, embedded.Config{
		DataDir:       filepath.Join(dir, "etcd"),
		ListenClient:  "https://127.0.0.1:0",
		ListenPeer:    "https://127.0.0.1:0",
		ClientTLS:     files,
		PeerTLS:       files,
		UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatalf("datastoretest: %v", err)
	}
	t.Cleanup(e.Close)
	return e, TLS{CAFile: ca.CertFile, Client: client, CA: ca}
}
