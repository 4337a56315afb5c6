package datastore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/internal/pki"
)

// TestConnectTLS: a client with the CA and a client certificate reads and writes a TLS
// etcd that requires client certificates.
func TestConnectTLS(t *testing.T) {
	e, files := datastoretest.StartEmbeddedTLS(t)
	if ep := e.Endpoints()[0]; !strings.HasPrefix(ep, "https://") {
		t.Fatalf("endpoint %s is not https", ep)
	}
	c, err := datastore.Connect(testCtx(t), datastore.Config{Endpoints: e.Endpoints(),
		CAFile: files.CAFile, CertFile: files.Client.CertFile, KeyFile: files.Client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Etcd().Put(testCtx(t), datastore.ResourcePrefix+"tls-test", "x"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
}

// TestConnectTLSMistakes: each TLS mistake fails Connect with an error that names it,
// not the client's bare "context deadline exceeded".
func TestConnectTLSMistakes(t *testing.T) {
	e, files := datastoretest.StartEmbeddedTLS(t)
	plain := datastoretest.StartEmbedded(t)
	https := e.Endpoints()[0]
	hostPort := strings.TrimPrefix(https, "https://")
	dir := t.TempDir()
	otherCA, err := pki.NewCA(filepath.Join(dir, "other"), "another CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := otherCA.Issue(filepath.Join(dir, "other"), "client", "stranger", pki.Client)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := files.Client.CertFile, files.Client.KeyFile
	for _, tc := range []struct {
		name string
		cfg  datastore.Config
		want string
		// refused: a mistake Connect refuses before dialling (else one a probe finds,
		// a ConnectError that says it is of TLS settings)
		refused bool
	}{
		{"no client certificate", datastore.Config{Endpoints: []string{https}, CAFile: files.CAFile},
			"the server requires a client certificate and none was given", false},
		{"wrong CA", datastore.Config{Endpoints: []string{https}, CAFile: otherCA.CertFile, CertFile: cert, KeyFile: key},
			"not signed by the CA of the etcd CA file", false},
		{"https without TLS files", datastore.Config{Endpoints: []string{https}},
			"no etcd CA file was given", false},
		{"client certificate of another CA", datastore.Config{Endpoints: []string{https}, CAFile: files.CAFile, CertFile: stranger.CertFile, KeyFile: stranger.KeyFile},
			"the server refused the client certificate", false},
		{"http to a TLS server", datastore.Config{Endpoints: []string{"http://" + hostPort}},
			"the server requires TLS and this client speaks plain HTTP", false},
		{"bare host:port to a TLS server", datastore.Config{Endpoints: []string{hostPort}},
			"the server requires TLS and this client speaks plain HTTP", false},
		{"https to a plain server", datastore.Config{Endpoints: []string{"https://" + strings.TrimPrefix(plain.Endpoints()[0], "http://")}, CAFile: files.CAFile, CertFile: cert, KeyFile: key},
			"the server does not speak TLS", false},
		{"http with TLS files", datastore.Config{Endpoints: []string{"http://" + hostPort}, CAFile: files.CAFile, CertFile: cert, KeyFile: key},
			"are http:// but etcd TLS files are given", true},
		{"http and https mixed", datastore.Config{Endpoints: []string{https, plain.Endpoints()[0]}, CAFile: files.CAFile, CertFile: cert, KeyFile: key},
			"some http://, some https://", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DialTimeout = 300 * time.Millisecond
			// The outer deadline only stops a hang from hanging the test run.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := datastore.Connect(ctx, tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "context deadline exceeded") {
				t.Errorf("Connect: %v\nwant an error naming the cause: %q", err, tc.want)
			}
			// A mistake found by probing says it is one of TLS settings: the CNI's hint
			// then points at them, not at a stopped etcd.
			if ce, ok := errors.AsType[*datastore.ConnectError](err); !tc.refused && (!ok || !ce.TLS) {
				t.Errorf("Connect: %v: want a ConnectError that says it is a TLS mistake", err)
			}
		})
	}
}
