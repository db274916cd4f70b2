package secrets

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// FuzzFromProto feeds arbitrary bytes as the PEM of xDS secrets (they come
// from the control plane or a config file): parsing must fail cleanly,
// never panic, and a parsed validation context must have roots.
func FuzzFromProto(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(""), []byte("not pem"))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		inline := func(b []byte) *corev3.DataSource {
			return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
		}
		_, _ = FromProto(&tlsv3.Secret{Name: "c", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}}})
		s, err := FromProto(&tlsv3.Secret{Name: "v", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(certPEM)}}})
		if err == nil && (s.Validation == nil || len(s.Validation.Roots) == 0) {
			t.Fatal("validation context without roots")
		}
	})
}
