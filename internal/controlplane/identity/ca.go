// Package identity owns MeshKit's workload identity: the certificate
// authority of a trust domain, the join tokens and node records that decide
// who may get a certificate, and the Identity gRPC service that signs X.509
// SVIDs (SPIFFE IDs in a URI SAN) from certificate signing requests.
//
// The CA is either generated on first start and kept in the store (so that
// every replica sharing the store signs with the same root, and a restart
// keeps it), or loaded from operator-provided files (a root, or an
// intermediate with its chain up to the root). All certificate work is
// crypto/x509; SPIFFE IDs are parsed and checked with go-spiffe.
package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// CAKey is the store key of a generated CA (PEM: certificate, then the
// PKCS#8 private key, unencrypted in this increment).
const CAKey = "/identity/ca"

// RootLifetime is how long a generated root is valid.
const RootLifetime = 365 * 24 * time.Hour

// CA signs SVIDs of one trust domain. It is immutable once built and safe
// for concurrent use.
type CA struct {
	td     spiffeid.TrustDomain
	signer crypto.Signer
	// chain is the signing certificate first, then its issuers up to and
	// including the self-signed root.
	chain []*x509.Certificate
	roots []*x509.Certificate
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate is the certificate that signs SVIDs.
func (ca *CA) Certificate() *x509.Certificate { return ca.chain[0] }

// Roots are the trust domain's root certificates: the trust bundle.
func (ca *CA) Roots() []*x509.Certificate { return ca.roots }

// Bundle is the trust bundle as go-spiffe's bundle type.
func (ca *CA) Bundle() *x509bundle.Bundle { return x509bundle.FromX509Authorities(ca.td, ca.roots) }

// RootPool is the trust bundle as a pool for tls.Config.
func (ca *CA) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range ca.roots {
		p.AddCert(c)
	}
	return p
}

// RootsPEM is the trust bundle in PEM, what a proxy takes as --identity-ca.
func (ca *CA) RootsPEM() []byte {
	var out []byte
	for _, c := range ca.roots {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// LoadOrCreateCA returns the CA kept in the store under CAKey, generating
// and storing a self-signed root (ECDSA P-256, RootLifetime) when there is
// none, its key in clear (LoadOrCreateSealedCA seals it). Replicas starting
// together race on a create-only Put: the first writer wins and the others
// load its CA.
func LoadOrCreateCA(ctx context.Context, st store.Store, td spiffeid.TrustDomain, now time.Time) (*CA, error) {
	return LoadOrCreateSealedCA(ctx, st, td, now, nil)
}

// LoadCAFiles loads an operator-provided CA: certFile holds the signing
// certificate first, then any intermediates, ending with the self-signed
// root; keyFile holds the signing certificate's private key (PKCS#8, PKCS#1
// or SEC 1 PEM).
func LoadCAFiles(td spiffeid.TrustDomain, certFile, keyFile string, now time.Time) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("identity: CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("identity: CA key: %w", err)
	}
	ca, err := buildCA(td, certPEM, keyPEM, now)
	if err != nil {
		return nil, fmt.Errorf("identity: CA from %s and %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

func parseStoredCA(td spiffeid.TrustDomain, data []byte, now time.Time) (*CA, error) {
	ca, err := buildCA(td, data, data, now)
	if err != nil {
		return nil, fmt.Errorf("identity: stored CA (%s): %w", CAKey, err)
	}
	return ca, nil
}

// generateRoot returns PEM: the root certificate, then its PKCS#8 key.
func generateRoot(td spiffeid.TrustDomain, now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"OmniRelay"}, CommonName: "OmniRelay MeshKit root " + td.Name()},
		// The trust domain's own ID marks the root as this domain's
		// authority, and lets an agent find the domain from its bundle.
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: self-sign CA: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode CA key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...), nil
}

// buildCA reads the certificates of certPEM and the first private key of
// keyPEM (they may be the same document) and checks that they make a CA
// that can sign now.
func buildCA(td spiffeid.TrustDomain, certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	var chain []*x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	signer, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the first certificate is not a CA allowed to sign certificates")
	}
	if !publicKeysEqual(leaf.PublicKey, signer.Public()) {
		return nil, errors.New("the private key does not match the first certificate")
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("the CA certificate is valid %s to %s, not now",
			leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	root := chain[len(chain)-1]
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, errors.New("the chain must end with its self-signed root")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("certificate %d is not signed by certificate %d: %w", i+1, i+2, err)
		}
	}
	return &CA{td: td, signer: signer, chain: chain, roots: []*x509.Certificate{root}}, nil
}

func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key block")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("identity: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// checkCSRKey accepts the key types TLS peers handle: ECDSA P-256/P-384,
// Ed25519 and RSA of 2048 bits or more.
func checkCSRKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s not accepted (P-256 or P-384)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits not accepted (2048 or more)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T not accepted", pub)
	}
	return nil
}

// issue signs an SVID for pub with the single URI SAN id. The node ID goes
// in the subject's common name: the CA vouches for it, and a renewal reads
// it back from the client certificate.
// issue signs an SVID valid for ttl from now. A renewal passes the end of the
// certificate it replaces as after: the new one ends later, even when both
// round to the same second (lifetimes of a few seconds, in tests).
func (ca *CA) issue(pub crypto.PublicKey, id spiffeid.ID, nodeID string, now time.Time, ttl time.Duration, after time.Time) (*x509.Certificate, error) {
	return ca.issueWithHosts(pub, id, nodeID, now, ttl, after, nil, nil)
}

// issueWithHosts is issue with DNS and IP SANs besides the SPIFFE ID: only
// MeshKit's own serving certificates carry them, for clients that check the
// host name they dialled (Envoy, gRPC proxyless) rather than the SPIFFE ID.
func (ca *CA) issueWithHosts(pub crypto.PublicKey, id spiffeid.ID, nodeID string, now time.Time, ttl time.Duration, after time.Time,
	dns []string, ips []net.IP) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	// Backdate a little for clocks behind ours, but not so much that a
	// short-lived SVID's half-life moves.
	backdate := min(30*time.Second, ttl/10)
	// Certificates hold whole seconds: round the end up.
	notAfter := now.Add(ttl + time.Second - 1).Truncate(time.Second)
	if !after.IsZero() && !notAfter.After(after) && after.Before(now.Add(2*ttl)) {
		notAfter = after.Add(time.Second).Truncate(time.Second)
	}
	if caEnd := ca.chain[0].NotAfter; notAfter.After(caEnd) {
		notAfter = caEnd
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"OmniRelay"}, CommonName: nodeID},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.chain[0], pub, ca.signer)
	if err != nil {
		return nil, fmt.Errorf("identity: sign SVID for %s: %w", id, err)
	}
	return x509.ParseCertificate(der)
}
