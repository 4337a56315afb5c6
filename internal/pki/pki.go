// Package pki makes a certificate authority and certificates it signs, written as PEM
// files: what tabby-lab up --etcd-tls gives its etcd members, agents, CNI and tabbyctl,
// and what tests of etcd TLS use. It is for labs and tests, not for production keys: the
// CA's key stays on disk beside the certificates.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// validity is how long every certificate made here is valid.
const validity = 10 * 365 * 24 * time.Hour

// CA is a certificate authority that signs certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertFile is the CA certificate, the file clients and servers verify with.
	CertFile string
}

// Files are the PEM files of one certificate and its key.
type Files struct {
	CertFile, KeyFile string
}

// Usage says what a certificate is for.
type Usage int

const (
	// Server certificates are presented by an etcd member to its clients and peers. They
	// are good for client authentication too: a member dials its peers, and etcd's gRPC
	// gateway dials its own client port, with the same certificate.
	Server Usage = iota
	// Client certificates are presented by an agent, tabby-cni or tabbyctl to etcd.
	Client
)

// NewCA makes a CA named name in dir (created if missing): dir/ca.pem and dir/ca-key.pem.
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA %s: key: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA %s: certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA %s: certificate: %w", name, err)
	}
	f, err := write(dir, "ca", der, key)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", name, err)
	}
	return &CA{cert: cert, key: key, CertFile: f.CertFile}, nil
}

// Issue makes a certificate for name (its common name, and a DNS name unless it is an
// address) valid for the addresses and names in hosts, signed by the CA, as
// dir/<file>.pem and dir/<file>-key.pem.
func (ca *CA) Issue(dir, file, name string, use Usage, hosts ...string) (Files, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("certificate %s: key: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch use {
	case Server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return Files{}, fmt.Errorf("certificate %s: unknown usage %d", name, use)
	}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Files{}, fmt.Errorf("certificate %s: %w", name, err)
	}
	f, err := write(dir, file, der, key)
	if err != nil {
		return Files{}, fmt.Errorf("certificate %s: %w", name, err)
	}
	return f, nil
}

// write puts a certificate and its key in dir as <name>.pem and <name>-key.pem (0600).
func write(dir, name string, der []byte, key *ecdsa.PrivateKey) (Files, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Files{}, fmt.Errorf("key: %w", err)
	}
	f := Files{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return Files{}, err
	}
	if err := os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return Files{}, err
	}
	return f, nil
}

// serial is a random 128-bit serial number, as RFC 5280 asks (unique per CA).
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(fmt.Sprintf("pki: random serial: %v", err)) // crypto/rand does not fail on Linux
	}
	return n
}
