package datastore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore"
)

func TestConnectUnreachable(t *testing.T) {
	addr := freePort(t) // closed again: nothing listens there
	for _, ep := range []string{addr, "http://" + addr} {
		// The outer deadline only stops a hang from hanging the test run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{ep}, DialTimeout: 300 * time.Millisecond})
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("Connect to %s succeeded", ep)
		}
		// The client's own error is "context deadline exceeded"; the probe after it names the cause.
		want := "etcd at " + ep + " unreachable after 300ms: " + ep + ": dial tcp " + addr + ": connect: connection refused"
		if err.Error() != want {
			t.Errorf("Connect to %s: %q, want %q", ep, err, want)
		}
		if ce, ok := errors.AsType[*datastore.ConnectError](err); !ok || ce.TLS {
			t.Errorf("Connect to %s: %#v, want a ConnectError that is not a TLS mistake", ep, err)
		}
	}
}

func TestConnectConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg  datastore.Config
		want string
	}{
		{datastore.Config{Endpoints: []string{"localhost"}}, `etcd endpoint "localhost": want host:port`},
		{datastore.Config{Endpoints: []string{"ftp://h:1"}}, `etcd endpoint "ftp://h:1"`},
		{datastore.Config{CAFile: filepath.Join(dir, "ca.pem")}, "etcd CA file: open " + filepath.Join(dir, "ca.pem")},
		{datastore.Config{CertFile: filepath.Join(dir, "c.pem")}, "give both files or neither"},
		{datastore.Config{CertFile: filepath.Join(dir, "c.pem"), KeyFile: "k"}, "etcd client certificate file: open " + filepath.Join(dir, "c.pem")},
	} {
		_, err := datastore.Connect(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Connect(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}
