package secrets

import (
	"crypto/tls"
	"errors"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// UsesSDS reports whether a CommonTlsContext names any secret by SDS, so
// that its TLS config must read the store at each handshake.
func UsesSDS(c *tlsv3.CommonTlsContext) bool {
	return len(c.GetTlsCertificateSdsSecretConfigs()) > 0 ||
		c.GetValidationContextSdsSecretConfig() != nil ||
		c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig() != nil
}

// Compile turns a CommonTlsContext into Params whose SDS references are Refs
// of s. A referenced name that no provider has set is accepted (the context
// warms, see the package comment); its sds_config may be ADS, a static
// secret of the snapshot, or any source: the store does not care which
// provider sets a name.
func Compile(c *tlsv3.CommonTlsContext, s *Store) (Params, error) {
	var p Params
	p.MinVersion = tls.VersionTLS12
	switch c.GetTlsParams().GetTlsMinimumProtocolVersion() {
	case tlsv3.TlsParameters_TLSv1_3:
		p.MinVersion = tls.VersionTLS13
	case tlsv3.TlsParameters_TLSv1_0, tlsv3.TlsParameters_TLSv1_1:
		return p, errors.New("tls_minimum_protocol_version below TLS 1.2 is not allowed")
	}
	for i, tc := range c.GetTlsCertificates() {
		cert, next, err := certFromProto(tc)
		if err != nil {
			return p, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		p.Static = append(p.Static, *cert)
		p.staticOCSPNext = append(p.staticOCSPNext, next)
	}
	for i, sc := range c.GetTlsCertificateSdsSecretConfigs() {
		if sc.GetName() == "" {
			return p, fmt.Errorf("tls_certificate_sds_secret_configs[%d]: name is required", i)
		}
		p.Certs = append(p.Certs, s.Ref(sc.GetName()))
	}
	var inline *tlsv3.CertificateValidationContext
	switch vc := c.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		inline = vc.ValidationContext
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		if vc.ValidationContextSdsSecretConfig.GetName() == "" {
			return p, errors.New("validation_context_sds_secret_config: name is required")
		}
		p.Validation = s.Ref(vc.ValidationContextSdsSecretConfig.GetName())
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		inline = vc.CombinedValidationContext.GetDefaultValidationContext()
		sc := vc.CombinedValidationContext.GetValidationContextSdsSecretConfig()
		if sc.GetName() == "" {
			return p, errors.New("combined_validation_context.validation_context_sds_secret_config: name is required")
		}
		p.Validation = s.Ref(sc.GetName())
	case nil:
	default:
		return p, fmt.Errorf("validation context %T is not supported", vc)
	}
	if inline != nil {
		if inline.GetTrustedCa() != nil {
			v, err := ValidationFromProto(inline)
			if err != nil {
				return p, fmt.Errorf("validation_context: %w", err)
			}
			p.StaticValidation = v
		}
		sans, err := CompileSANMatchers(inline.GetMatchTypedSubjectAltNames())
		if err != nil {
			return p, fmt.Errorf("validation_context: %w", err)
		}
		p.SANs = sans
	}
	p.NextProtos = append(p.NextProtos, c.GetAlpnProtocols()...)
	return p, nil
}
