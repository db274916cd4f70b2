package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"
)

// cipherSuitesTLS12 are the TLS 1.2 suites offered: ECDHE key exchange with
// AEAD ciphers only. TLS 1.3 suites are Go's (not configurable).
var cipherSuitesTLS12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CipherSuitesTLS12 returns the TLS 1.2 cipher suites OmniRelay offers.
func CipherSuitesTLS12() []uint16 { return append([]uint16(nil), cipherSuitesTLS12...) }

// Params describe one side of a TLS context whose certificates or validation
// context come from the store (an Envoy Downstream/UpstreamTlsContext with
// SDS secret configs), possibly mixed with inline ones.
type Params struct {
	// Certs are tried in order: inline Static first, then the SDS refs.
	Static []tls.Certificate
	Certs  []*Ref
	// Validation verifies the peer from an SDS secret; StaticValidation
	// from an inline validation context. Validation wins when both are set
	// and its secret is present. Neither: the peer is not verified.
	Validation       *Ref
	StaticValidation *Validation
	// SANs must match the peer's certificate (one of them) when not empty.
	SANs []SANMatcher
	// RequireClientCert refuses clients without a certificate (server side).
	RequireClientCert bool
	MinVersion        uint16
	NextProtos        []string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// OCSPPolicy applies to certificates with OCSP staples (server side).
	OCSPPolicy OCSPPolicy
	// staticOCSPNext[i] is when Static[i]'s staple expires (Compile sets
	// it; missing entries mean no expiry).
	staticOCSPNext []time.Time
}

func (p *Params) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Params) validation() (*Validation, error) {
	if p.Validation != nil {
		if s := p.Validation.Load(); s != nil && s.Validation != nil {
			return s.Validation, nil
		}
		if p.StaticValidation == nil {
			return nil, refuse(ReasonSecretMissing, errors.New("validation context "+p.Validation.Name()+" not received"))
		}
	}
	return p.StaticValidation, nil
}

func (p *Params) verifies() bool { return p.Validation != nil || p.StaticValidation != nil }

func (p *Params) base() *tls.Config {
	cfg := &tls.Config{MinVersion: p.MinVersion, CipherSuites: cipherSuitesTLS12}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	cfg.NextProtos = append(cfg.NextProtos, p.NextProtos...)
	return cfg
}

// ServerConfig returns a listener's TLS config. Each handshake reads the
// current certificate and validation context; a client certificate is
// verified by VerifyPeer (chain to the roots, SPIFFE trust domain, SANs).
// The peer identity is then in the ConnectionState (PeerIdentity reads it).
func ServerConfig(p Params) *tls.Config {
	cfg := p.base()
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return p.pickServerCert(hello)
	}
	if p.verifies() || p.RequireClientCert {
		// Go's own verification (ClientCAs) would freeze the roots in the
		// config; VerifyConnection reads the live ones instead.
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if p.RequireClientCert {
					return refuse(ReasonNoClientCert, nil)
				}
				return nil
			}
			v, err := p.validation()
			if err != nil {
				return err
			}
			if v == nil {
				return refuse(ReasonUntrusted, errors.New("no validation context"))
			}
			_, err = VerifyPeer(cs.PeerCertificates, v, p.SANs, x509.ExtKeyUsageClientAuth, p.now())
			return err
		}
	}
	return cfg
}

func (p *Params) pickServerCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var first *tls.Certificate
	try := func(c *tls.Certificate) bool {
		if first == nil {
			first = c
		}
		return hello.SupportsCertificate(c) == nil
	}
	now := time.Time{}
	usable := func(c *tls.Certificate, next time.Time) *tls.Certificate {
		if len(c.OCSPStaple) == 0 && p.OCSPPolicy != OCSPMustStaple {
			return c // the common case reads no clock
		}
		if now.IsZero() {
			now = p.now()
		}
		return stapleUsable(c, next, p.OCSPPolicy, now)
	}
	for i := range p.Static {
		var next time.Time
		if i < len(p.staticOCSPNext) {
			next = p.staticOCSPNext[i]
		}
		if c := usable(&p.Static[i], next); c != nil && try(c) {
			return c, nil
		}
	}
	for _, r := range p.Certs {
		if s := r.Load(); s != nil && s.Cert != nil {
			if c := usable(s.Cert, s.OCSPNextUpdate); c != nil && try(c) {
				return c, nil
			}
		}
	}
	if first != nil {
		return first, nil
	}
	if p.OCSPPolicy != OCSPLenient && (len(p.Static) > 0 || len(p.Certs) > 0) {
		return nil, refuse(ReasonSecretMissing, errors.New("no certificate with a current OCSP staple"))
	}
	return nil, refuse(ReasonSecretMissing, errors.New("no certificate received yet"))
}

// ClientConfig returns a cluster's TLS config: it presents the current
// certificate when the server asks for one and verifies the server with
// VerifyPeer (or, without SAN matchers and trust domain, the chain and
// serverName as Go would). Without a validation context the server is not
// verified, as Envoy does.
func ClientConfig(p Params, serverName string) *tls.Config {
	cfg := p.base()
	cfg.ServerName = serverName
	// Resumption (as Envoy's upstream max_session_keys) saves the full
	// handshake on reconnects. VerifyConnection still runs on resumed
	// sessions, against the live bundle, but sees the certificate of the
	// session's original handshake: sessionCache and HandshakeClient keep
	// that from failing a connection once the certificate has rotated.
	cache := newSessionCache(64)
	cfg.ClientSessionCache = cache
	if len(p.Static) > 0 || len(p.Certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if len(p.Static) > 0 {
				return &p.Static[0], nil
			}
			for _, r := range p.Certs {
				if s := r.Load(); s != nil && s.Cert != nil {
					return s.Cert, nil
				}
			}
			// No certificate: the server refuses us if it needs one.
			return &tls.Certificate{}, nil
		}
	}
	// crypto/tls's verification cannot read live roots nor match SPIFFE
	// IDs; VerifyConnection does both.
	cfg.InsecureSkipVerify = true
	if p.verifies() {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			v, err := p.validation()
			if err != nil {
				return err
			}
			_, err = VerifyPeer(cs.PeerCertificates, v, p.SANs, x509.ExtKeyUsageServerAuth, p.now())
			if err == nil && len(p.SANs) == 0 && v.TrustDomain.IsZero() {
				if herr := hostMatches(cs.PeerCertificates[0], serverName); herr != nil {
					err = refuse(ReasonSAN, herr)
				}
			}
			return cache.checkResumed(cs, err)
		}
	}
	return cfg
}

// PeerIdentity returns the SPIFFE ID of a verified peer certificate, else
// its subject common name, else "".
func PeerIdentity(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return c.Subject.CommonName
}
