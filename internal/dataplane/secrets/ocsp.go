package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/crypto/ocsp"
)

// OCSPPolicy is Envoy's DownstreamTlsContext.ocsp_staple_policy: what a
// listener does with a certificate whose OCSP staple has expired.
type OCSPPolicy int

const (
	// OCSPLenient serves the certificate without its expired staple.
	OCSPLenient OCSPPolicy = iota
	// OCSPStrict does not serve a certificate whose staple has expired;
	// certificates without a staple are served.
	OCSPStrict
	// OCSPMustStaple serves only certificates with a current staple; every
	// certificate must come with one.
	OCSPMustStaple
)

// OCSPPolicyFromProto maps the xDS enum.
func OCSPPolicyFromProto(p tlsv3.DownstreamTlsContext_OcspStaplePolicy) OCSPPolicy {
	switch p {
	case tlsv3.DownstreamTlsContext_STRICT_STAPLING:
		return OCSPStrict
	case tlsv3.DownstreamTlsContext_MUST_STAPLE:
		return OCSPMustStaple
	}
	return OCSPLenient
}

// loadStaple checks a DER OCSP response against the certificate it is
// stapled to: it must be a successful response for the leaf's serial, signed
// by the leaf's issuer when the chain includes it, with status good. It
// returns the response's next update (zero: none given).
func loadStaple(der []byte, cert *tls.Certificate) (time.Time, error) {
	leaf := cert.Leaf
	var issuer *x509.Certificate
	if len(cert.Certificate) > 1 {
		var err error
		if issuer, err = x509.ParseCertificate(cert.Certificate[1]); err != nil {
			return time.Time{}, fmt.Errorf("chain: %w", err)
		}
	}
	resp, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return time.Time{}, err
	}
	if resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return time.Time{}, errors.New("the response is for another certificate (serial number)")
	}
	switch resp.Status {
	case ocsp.Good:
	case ocsp.Revoked:
		return time.Time{}, fmt.Errorf("the certificate is revoked (since %s)", resp.RevokedAt.Format(time.RFC3339))
	default:
		return time.Time{}, errors.New("the responder does not know the certificate (status unknown)")
	}
	return resp.NextUpdate, nil
}

// stapleUsable applies policy to a certificate whose staple expires at next
// (zero: no staple, or a staple without next update). It returns the
// certificate to serve, possibly a copy without its expired staple, or nil
// when the policy forbids serving it.
func stapleUsable(c *tls.Certificate, next time.Time, policy OCSPPolicy, now time.Time) *tls.Certificate {
	if len(c.OCSPStaple) == 0 {
		if policy == OCSPMustStaple {
			return nil
		}
		return c
	}
	if next.IsZero() || now.Before(next) {
		return c
	}
	if policy != OCSPLenient {
		return nil
	}
	stripped := *c
	stripped.OCSPStaple = nil
	return &stripped
}
