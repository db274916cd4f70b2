// Package testca issues X.509 SVIDs from an in-memory CA for tests of the
// mTLS plumbing: a root per trust domain (carrying spiffe://<td> as URI SAN,
// as MeshKit's roots do) and leaves with any validity window, so tests can
// build expired, not-yet-valid, foreign and self-signed certificates, and OCSP
// responses for them. It is not for production use.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// CA is a self-signed root for one trust domain.
type CA struct {
	TrustDomain string
	Cert        *x509.Certificate
	key         crypto.Signer
}

// New returns a CA for td valid from an hour ago for a day.
func New(t testing.TB, td string) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: td + " test root", Organization: []string{"omnirelay test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testca: root: %v", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{TrustDomain: td, Cert: cert, key: key}
}

// Leaf describes a certificate to issue.
type Leaf struct {
	// ID is the SPIFFE ID (URI SAN); "" issues none.
	ID        string
	DNS       []string
	NotBefore time.Time
	NotAfter  time.Time
	// SelfSigned signs the leaf with its own key instead of the CA's.
	SelfSigned bool
}

// Issue returns a leaf certificate and key usable as client and server.
// Zero times default to now-1m .. now+1h.
func (ca *CA) Issue(t testing.TB, l Leaf) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = now.Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{Organization: []string{"omnirelay test"}},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     l.DNS,
	}
	if l.ID != "" {
		u, err := url.Parse(l.ID)
		if err != nil {
			t.Fatalf("testca: id %q: %v", l.ID, err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	parent, signer := ca.Cert, ca.key
	if l.SelfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatalf("testca: leaf: %v", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// RootPEM returns the root certificate as PEM.
func (ca *CA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// PEM returns a certificate's chain and key as PEM.
func PEM(t testing.TB, c *tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatalf("testca: key: %v", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func newKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: key: %v", err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("testca: serial: %v", err)
	}
	return n
}

// OCSP returns a DER OCSP response from the CA for leaf with status
// (ocsp.Good, ocsp.Revoked, ocsp.Unknown) and the given validity.
func (ca *CA) OCSP(t testing.TB, leaf *x509.Certificate, status int, thisUpdate, nextUpdate time.Time) []byte {
	t.Helper()
	tmpl := ocsp.Response{Status: status, SerialNumber: leaf.SerialNumber, ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	if status == ocsp.Revoked {
		tmpl.RevokedAt = thisUpdate
	}
	der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.key)
	if err != nil {
		t.Fatalf("testca: ocsp: %v", err)
	}
	return der
}
