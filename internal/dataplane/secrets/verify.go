package secrets

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// Reasons a peer certificate is refused; they label
// omnirelay_tls_handshake_errors_total and never reach the peer, which only
// sees a bad_certificate alert.
const (
	ReasonNoClientCert  = "no_client_cert"
	ReasonExpired       = "expired"
	ReasonNotYetValid   = "not_yet_valid"
	ReasonSelfSigned    = "self_signed"
	ReasonTrustDomain   = "trust_domain"
	ReasonSAN           = "san_mismatch"
	ReasonUntrusted     = "untrusted"
	ReasonSecretMissing = "secret_missing"
	// ReasonHandshake is every other failure (protocol, version, the peer
	// refusing our certificate, a client that hangs up).
	ReasonHandshake = "handshake"
)

// VerifyError is a refused handshake with the reason it was refused.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	if e.Err == nil {
		return "tls: " + e.Reason
	}
	return "tls: " + e.Reason + ": " + e.Err.Error()
}

func (e *VerifyError) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a handshake error: a VerifyError's, else
// ReasonHandshake.
func ReasonOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ReasonHandshake
}

func refuse(reason string, err error) error { return &VerifyError{Reason: reason, Err: err} }

// SANMatcher is a compiled Envoy SubjectAltNameMatcher.
type SANMatcher struct {
	Type tlsv3.SubjectAltNameMatcher_SanType
	m    strmatch.String
}

// CompileSANMatchers compiles match_typed_subject_alt_names.
func CompileSANMatchers(ms []*tlsv3.SubjectAltNameMatcher) ([]SANMatcher, error) {
	out := make([]SANMatcher, 0, len(ms))
	for i, m := range ms {
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_URI, tlsv3.SubjectAltNameMatcher_DNS,
			tlsv3.SubjectAltNameMatcher_EMAIL, tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		default:
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d]: san_type %v is not supported", i, m.GetSanType())
		}
		sm, err := strmatch.CompileString(m.GetMatcher())
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d]: %w", i, err)
		}
		out = append(out, SANMatcher{Type: m.GetSanType(), m: sm})
	}
	return out, nil
}

func (m *SANMatcher) match(c *x509.Certificate) bool {
	switch m.Type {
	case tlsv3.SubjectAltNameMatcher_URI:
		for _, u := range c.URIs {
			if m.m.MatchString(u.String()) {
				return true
			}
		}
	case tlsv3.SubjectAltNameMatcher_DNS:
		for _, d := range c.DNSNames {
			if m.m.MatchString(d) {
				return true
			}
		}
	case tlsv3.SubjectAltNameMatcher_EMAIL:
		for _, e := range c.EmailAddresses {
			if m.m.MatchString(e) {
				return true
			}
		}
	case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		for _, ip := range c.IPAddresses {
			if m.m.MatchString(ip.String()) {
				return true
			}
		}
	}
	return false
}

// VerifyPeer checks a peer's chain (leaf first) against v and, when any are
// given, the SAN matchers (one must match). usage is the extended key usage
// the leaf needs. It returns the peer's identity: its SPIFFE ID, else "".
// Failures are *VerifyError with the reason.
func VerifyPeer(chain []*x509.Certificate, v *Validation, sans []SANMatcher, usage x509.ExtKeyUsage, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", refuse(ReasonNoClientCert, nil)
	}
	leaf := chain[0]
	// Dates and self-signature are checked before the chain so that the
	// metric names the cause rather than a generic "untrusted".
	if now.Before(leaf.NotBefore) {
		return "", refuse(ReasonNotYetValid, nil)
	}
	if now.After(leaf.NotAfter) {
		return "", refuse(ReasonExpired, nil)
	}
	if selfSigned(leaf) && !isRoot(leaf, v) {
		return "", refuse(ReasonSelfSigned, nil)
	}
	id := ""
	if !v.TrustDomain.IsZero() {
		sid, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return "", refuse(ReasonSAN, err)
		}
		if sid.TrustDomain() != v.TrustDomain {
			return "", refuse(ReasonTrustDomain, fmt.Errorf("peer trust domain %q", sid.TrustDomain()))
		}
		bundle := v.bundle
		if bundle == nil { // a Validation built without NewValidation
			bundle = x509bundle.FromX509Authorities(v.TrustDomain, v.Roots)
		}
		if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now)); err != nil {
			return "", refuse(ReasonUntrusted, err)
		}
		id = sid.String()
	} else {
		opts := x509.VerifyOptions{Roots: v.Pool, CurrentTime: now, Intermediates: x509.NewCertPool(),
			KeyUsages: []x509.ExtKeyUsage{usage}}
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(opts); err != nil {
			return "", refuse(ReasonUntrusted, err)
		}
		id = spiffeIDOf(leaf).String()
		if id == "spiffe:" {
			id = ""
		}
	}
	if len(sans) > 0 && !matchAny(sans, leaf) {
		return "", refuse(ReasonSAN, nil)
	}
	return id, nil
}

func matchAny(sans []SANMatcher, leaf *x509.Certificate) bool {
	for i := range sans {
		if sans[i].match(leaf) {
			return true
		}
	}
	return false
}

func selfSigned(c *x509.Certificate) bool {
	// CheckSignatureFrom would insist that the parent be a CA; a
	// self-signed leaf is not one.
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// isRoot reports whether a self-signed leaf is itself one of the trusted
// roots (a pinned self-signed server certificate, as Envoy allows).
func isRoot(c *x509.Certificate, v *Validation) bool {
	for _, r := range v.Roots {
		if r.Equal(c) {
			return true
		}
	}
	return false
}

// hostMatches is Go's hostname check, used when a client verifies a server
// without SAN matchers or a trust domain.
func hostMatches(leaf *x509.Certificate, serverName string) error {
	if serverName == "" {
		return nil
	}
	if ip := net.ParseIP(serverName); ip != nil {
		return leaf.VerifyHostname(ip.String())
	}
	return leaf.VerifyHostname(serverName)
}
