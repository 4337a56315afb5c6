package pki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

// TestIssueVerifies: certificates verify against their CA for their use, at their
// addresses, and not against another CA.
func TestIssueVerifies(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir+"/a", "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA(dir+"/b", "b")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(dir+"/a", "server", "etcd1", Server, "172.31.1.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(dir+"/a", "client", "tabby", Client)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(file string) *x509.CertPool {
		pem, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(pem) {
			t.Fatalf("%s: no certificate", file)
		}
		return p
	}
	leaf := func(f Files) *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		what string
		cert Files
		opts x509.VerifyOptions
		ok   bool
	}{
		{"server at its address", server, x509.VerifyOptions{Roots: pool(ca.CertFile), DNSName: "172.31.1.1"}, true},
		{"server by name", server, x509.VerifyOptions{Roots: pool(ca.CertFile), DNSName: "localhost"}, true},
		{"server at another address", server, x509.VerifyOptions{Roots: pool(ca.CertFile), DNSName: "172.31.1.2"}, false},
		{"server as a client (a member dialling a peer)", server, x509.VerifyOptions{Roots: pool(ca.CertFile), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, true},
		{"client", client, x509.VerifyOptions{Roots: pool(ca.CertFile), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, true},
		{"client as a server", client, x509.VerifyOptions{Roots: pool(ca.CertFile)}, false},
		{"client against another CA", client, x509.VerifyOptions{Roots: pool(other.CertFile), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
	} {
		_, err := leaf(tc.cert).Verify(tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("%s: verify error %v, want ok=%v", tc.what, err, tc.ok)
		}
	}
	if fi, err := os.Stat(client.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %s: %v, mode %v; want 0600", client.KeyFile, err, fi.Mode())
	}
}
