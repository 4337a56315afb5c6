package embedded_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/datastore/embedded"
	"github.com/tabby-net/tabby/internal/pki"
)

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	files := embedded.TLS{CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem"}
	for _, tc := range []struct {
		cfg  embedded.Config
		want string
	}{
		{embedded.Config{ListenClient: "https://127.0.0.1:0"}, "client URL https://127.0.0.1:0 is https: it needs a certificate, its key and a CA"},
		{embedded.Config{ListenClient: "https://127.0.0.1:0", ClientTLS: embedded.TLS{CertFile: "c.pem", KeyFile: "k.pem"}}, "it needs a certificate, its key and a CA for the clients' certificates"},
		{embedded.Config{ListenPeer: "https://127.0.0.1:0"}, "peer URL https://127.0.0.1:0 is https"},
		{embedded.Config{ClientTLS: files}, "client TLS files given but the client URL http://127.0.0.1:2379 is http://"},
		{embedded.Config{ListenPeer: "unix:///x"}, `peer URL "unix:///x": want http://host:port or https://host:port`},
		{embedded.Config{ClusterState: "joining"}, `initial cluster state "joining": want new or existing`},
	} {
		tc.cfg.DataDir = filepath.Join(dir, "etcd")
		e, err := embedded.Start(context.Background(), tc.cfg)
		if err == nil {
			e.Close()
			t.Errorf("Start(%+v) succeeded", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestTLSRefusesWithoutClientCertificate is the hostile probe of etcd's HTTP API: plain
// HTTP to the client port reads nothing, nor does HTTPS without a client certificate;
// with one it does (so the probe is one that could succeed).
func TestTLSRefusesWithoutClientCertificate(t *testing.T) {
	e, files := datastoretest.StartEmbeddedTLS(t)
	hostPort := strings.TrimPrefix(e.Endpoints()[0], "https://")
	caPEM, err := os.ReadFile(files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(files.Client.CertFile, files.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	rangeAll := func(scheme string, tc *tls.Config) (int, string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := c.Post(scheme+"://"+hostPort+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"AA==","range_end":"AA=="}`))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	if code, body, err := rangeAll("http", nil); err == nil && code == http.StatusOK {
		t.Errorf("plain HTTP range: %d %s", code, body)
	} else {
		t.Logf("plain HTTP refused: %v %d %q", err, code, body)
	}
	if code, body, err := rangeAll("https", &tls.Config{RootCAs: roots}); err == nil && code == http.StatusOK {
		t.Errorf("HTTPS range without a client certificate: %d %s", code, body)
	} else {
		t.Logf("HTTPS without a client certificate refused: %v %d", err, code)
	}
	// With a certificate the request reaches etcd's HTTP gateway. (Which answers 503
	// here: on port 0 it dials the configured :0 rather than the bound port.)
	if code, body, err := rangeAll("https", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}); err != nil {
		t.Errorf("HTTPS range with a client certificate: %v %d %s", err, code, body)
	}
}

// TestGrowOneToThree grows a cluster as an operator would, over TLS for clients and
// peers: one member, then member add and a start with state existing, twice. The three
// members then keep serving with one of them stopped.
func TestGrowOneToThree(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(filepath.Join(dir, "pki"), "tabby test CA")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(filepath.Join(dir, "pki"), "client", "tabby", pki.Client)
	if err != nil {
		t.Fatal(err)
	}
	type member struct{ name, clientURL, peerURL string }
	var ms []member
	for i := 1; i <= 3; i++ {
		ms = append(ms, member{fmt.Sprintf("m%d", i), "https://" + freePort(t), "https://" + freePort(t)})
	}
	cluster := func(n int) string {
		var parts []string
		for _, m := range ms[:n] {
			parts = append(parts, m.name+"="+m.peerURL)
		}
		return strings.Join(parts, ",")
	}
	start := func(i int, state string) *embedded.Etcd {
		t.Helper()
		m := ms[i]
		server, err := ca.Issue(filepath.Join(dir, "pki"), m.name, m.name, pki.Server, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		files := embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e, err := embedded.Start(ctx, embedded.Config{
			Name: m.name, DataDir: filepath.Join(dir, m.name),
			ListenClient: m.clientURL, ListenPeer: m.peerURL, ClientTLS: files, PeerTLS: files,
			InitialCluster: cluster(i + 1), ClusterState: state, UnsafeNoFsync: true,
		})
		if err != nil {
			t.Fatalf("start %s: %v", m.name, err)
		}
		t.Cleanup(e.Close)
		return e
	}
	connect := func(members ...int) *datastore.Client {
		t.Helper()
		var eps []string
		for _, i := range members {
			eps = append(eps, ms[i].clientURL)
		}
		c, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: eps,
			CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	first := start(0, "new")
	c1 := connect(0)
	if _, err := c1.Etcd().Put(ctx, datastore.ResourcePrefix+"grow", "one"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		// etcd refuses an add ("unhealthy cluster") until every started member has been
		// connected to the others for 5s: an operator retries, as this does.
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := c1.Etcd().MemberAdd(ctx, []string{ms[i].peerURL})
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
				t.Fatalf("member add %s: %v", ms[i].name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		start(i, "existing")
	}
	list, err := c1.Etcd().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if got := strings.Join(names, ","); got != "m1,m2,m3" {
		t.Fatalf("members %q, want m1,m2,m3 all started (a member not started has no name)", got)
	}
	// The last member has the data written before it existed.
	c3 := connect(2)
	if resp, err := c3.Etcd().Get(ctx, datastore.ResourcePrefix+"grow"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "one" {
		t.Fatalf("read on m3: %v %v", resp, err)
	}
	// Two of three keep a quorum: writes go on with the first member stopped.
	first.Close()
	c23 := connect(1, 2)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := c23.Etcd().Put(wctx, datastore.ResourcePrefix+"grow", "two", clientv3.WithPrevKV()); err != nil {
		t.Fatalf("write with m1 stopped: %v", err)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
