// Package secrets owns the data plane's live TLS secrets: named certificates
// (chain and key) and validation contexts (trusted roots, SPIFFE trust
// domain), as Envoy's SDS names them. Values arrive from two providers: the
// xDS snapshot's Secret resources (SDS over ADS, or static secrets in a
// config file) and the local identity agent, which publishes the proxy's
// SVID as "default" and its trust bundle as "ROOTCA" (Istio's names).
//
// Listeners and clusters hold a Ref per name and read its current value at
// every handshake (GetCertificate, GetClientCertificate, VerifyConnection),
// so a rotation applies to the next handshake with no listener restart and
// no effect on established connections.
//
// A name that no provider has set yet is not an error at config time: the
// chain or cluster is installed and "warms" (as Envoy's listeners and
// clusters wait for SDS), refusing handshakes with reason secret_missing
// until a provider sets it.
package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Names the identity agent publishes, as Istio's agent does.
const (
	DefaultCertName = "default"
	RootCAName      = "ROOTCA"
)

// Secret is one immutable secret value: a certificate, a validation context,
// or (from the agent) both.
type Secret struct {
	Name string
	// Cert is the certificate chain with its key; Leaf is set.
	Cert *tls.Certificate
	// Validation is set for validation-context secrets.
	Validation *Validation
	// OCSPNextUpdate is when Cert's OCSP staple expires (zero: no staple,
	// or one without a next update).
	OCSPNextUpdate time.Time
}

// Validation is a set of trusted roots, optionally bound to a SPIFFE trust
// domain. With a trust domain, peers are verified as X.509 SVIDs of that
// domain (go-spiffe x509svid.Verify); without one, as ordinary certificate
// chains to the roots.
type Validation struct {
	Roots       []*x509.Certificate
	Pool        *x509.CertPool
	TrustDomain spiffeid.TrustDomain
	bundle      *x509bundle.Bundle // Roots as TrustDomain's bundle, when set
}

// NewValidation builds a validation context from roots. A zero td takes the
// trust domain named by the roots' SPIFFE URI SAN when they agree on one
// (MeshKit's roots carry spiffe://<trust-domain>).
func NewValidation(roots []*x509.Certificate, td spiffeid.TrustDomain) (*Validation, error) {
	if len(roots) == 0 {
		return nil, errors.New("no trusted certificates")
	}
	v := &Validation{Roots: roots, Pool: x509.NewCertPool(), TrustDomain: td}
	for _, r := range roots {
		v.Pool.AddCert(r)
	}
	if td.IsZero() {
		v.TrustDomain = rootsTrustDomain(roots)
	}
	if !v.TrustDomain.IsZero() {
		v.bundle = x509bundle.FromX509Authorities(v.TrustDomain, roots)
	}
	return v, nil
}

func rootsTrustDomain(roots []*x509.Certificate) spiffeid.TrustDomain {
	var td spiffeid.TrustDomain
	for _, r := range roots {
		for _, u := range r.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			t, err := spiffeid.TrustDomainFromString(u.Host)
			if err != nil {
				continue
			}
			if !td.IsZero() && td != t {
				return spiffeid.TrustDomain{}
			}
			td = t
		}
	}
	return td
}

// Ref is a stable handle on a named secret; Load returns its current value
// (nil while no provider has set it). Refs are never invalidated, so compiled
// listeners and clusters keep theirs across config versions.
type Ref struct {
	name  string
	local atomic.Pointer[Secret] // identity agent; wins over the snapshot
	xds   atomic.Pointer[Secret]
}

// Name returns the secret's name.
func (r *Ref) Name() string { return r.name }

// Load returns the current value or nil. It never blocks.
func (r *Ref) Load() *Secret {
	if s := r.local.Load(); s != nil {
		return s
	}
	return r.xds.Load()
}

// Store holds the named secrets of one proxy. The zero value is not usable;
// build it with NewStore. It is safe for concurrent use.
type Store struct {
	mu   sync.Mutex
	refs map[string]*Ref
	// fromXDS are the names the last snapshot set, so that a secret dropped
	// from the snapshot is cleared.
	fromXDS map[string]bool
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{refs: map[string]*Ref{}, fromXDS: map[string]bool{}}
}

// Ref returns the handle for name, creating it (empty) on first use.
func (s *Store) Ref(name string) *Ref {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refLocked(name)
}

func (s *Store) refLocked(name string) *Ref {
	r := s.refs[name]
	if r == nil {
		r = &Ref{name: name}
		s.refs[name] = r
	}
	return r
}

// ParseSnapshot checks and converts xDS secrets without publishing them, so
// that a runtime can reject a version before anything changes.
func ParseSnapshot(secs []*tlsv3.Secret) (map[string]*Secret, error) {
	out := make(map[string]*Secret, len(secs))
	for _, sec := range secs {
		v, err := FromProto(sec)
		if err != nil {
			return nil, err
		}
		out[v.Name] = v
	}
	return out, nil
}

// SetSnapshot publishes the secrets of an applied snapshot (from
// ParseSnapshot). Secrets the previous snapshot had and this one lacks are
// cleared; values set by the identity agent are untouched and keep winning.
func (s *Store) SetSnapshot(secs map[string]*Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.fromXDS {
		if secs[name] == nil {
			s.refs[name].xds.Store(nil)
		}
	}
	s.fromXDS = make(map[string]bool, len(secs))
	for name, v := range secs {
		s.refLocked(name).xds.Store(v)
		s.fromXDS[name] = true
	}
}

// SetIdentity publishes the proxy's SVID as "default" and its trust bundle
// as "ROOTCA", as the identity agent obtains them. td is the SVID's trust
// domain; peers are verified as SVIDs of it.
func (s *Store) SetIdentity(cert *tls.Certificate, roots []*x509.Certificate, td spiffeid.TrustDomain) error {
	if cert == nil || len(cert.Certificate) == 0 {
		return errors.New("secrets: identity without a certificate")
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("secrets: identity certificate: %w", err)
		}
		c := *cert
		c.Leaf = leaf
		cert = &c
	}
	val, err := NewValidation(roots, td)
	if err != nil {
		return fmt.Errorf("secrets: identity bundle: %w", err)
	}
	s.Ref(DefaultCertName).local.Store(&Secret{Name: DefaultCertName, Cert: cert})
	s.Ref(RootCAName).local.Store(&Secret{Name: RootCAName, Validation: val})
	return nil
}

// FromProto converts one xDS Secret. Only tls_certificate and
// validation_context secrets are supported.
func FromProto(sec *tlsv3.Secret) (*Secret, error) {
	name := sec.GetName()
	if name == "" {
		return nil, errors.New("secret: name is required")
	}
	out := &Secret{Name: name}
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		cert, next, err := certFromProto(t.TlsCertificate)
		if err != nil {
			return nil, fmt.Errorf("secret %q: tls_certificate: %w", name, err)
		}
		out.Cert, out.OCSPNextUpdate = cert, next
	case *tlsv3.Secret_ValidationContext:
		v, err := ValidationFromProto(t.ValidationContext)
		if err != nil {
			return nil, fmt.Errorf("secret %q: validation_context: %w", name, err)
		}
		out.Validation = v
	default:
		return nil, fmt.Errorf("secret %q: only tls_certificate and validation_context secrets are supported", name)
	}
	return out, nil
}

// CertFromProto loads a TlsCertificate's chain and key, and its OCSP
// staple when it has one.
func CertFromProto(tc *tlsv3.TlsCertificate) (*tls.Certificate, error) {
	cert, _, err := certFromProto(tc)
	return cert, err
}

// certFromProto is CertFromProto that also returns the staple's next update.
func certFromProto(tc *tlsv3.TlsCertificate) (*tls.Certificate, time.Time, error) {
	certPEM, err := ReadDataSource(tc.GetCertificateChain())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("certificate_chain: %w", err)
	}
	keyPEM, err := ReadDataSource(tc.GetPrivateKey())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("private_key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, time.Time{}, err
	}
	var next time.Time
	if tc.GetOcspStaple() != nil {
		der, err := ReadDataSource(tc.GetOcspStaple())
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("ocsp_staple: %w", err)
		}
		if next, err = loadStaple(der, &cert); err != nil {
			return nil, time.Time{}, fmt.Errorf("ocsp_staple: %w", err)
		}
		cert.OCSPStaple = der
	}
	return &cert, next, nil
}

// ValidationFromProto loads a CertificateValidationContext's trusted_ca.
// The trust domain is the one the roots name (see NewValidation).
func ValidationFromProto(vc *tlsv3.CertificateValidationContext) (*Validation, error) {
	caPEM, err := ReadDataSource(vc.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("trusted_ca: %w", err)
	}
	roots, err := ParsePEMCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("trusted_ca: %w", err)
	}
	return NewValidation(roots, spiffeid.TrustDomain{})
}

// ParsePEMCerts parses every CERTIFICATE block; other blocks are skipped.
func ParsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificates")
	}
	return out, nil
}

// spiffeIDOf returns the leaf's SPIFFE ID, or the zero ID.
func spiffeIDOf(c *x509.Certificate) spiffeid.ID {
	id, err := x509svid.IDFromCert(c)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// ReadDataSource returns the bytes of an xDS DataSource (file, inline bytes
// or string, environment variable).
func ReadDataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("environment variable %q not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, errors.New("empty data source")
}
