package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// renderTemplate fills the bench template's placeholders as run.sh does.
func renderTemplate(t *testing.T, dir string) string {
	t.Helper()
	tmpl, err := os.ReadFile("../../configs/omnirelay-mtls.yaml.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	out := strings.NewReplacer("@ADMIN_ADDR@", "127.0.0.1:19901", "@H1_ADDR@", "127.0.0.1:18080",
		"@MTLS_ADDR@", "127.0.0.1:18443", "@BACKEND@", "127.0.0.1:18000").Replace(string(tmpl))
	if regexp.MustCompile(`@[A-Z_0-9]+@`).MatchString(out) {
		t.Fatalf("placeholder left in the rendered template:\n%s", out)
	}
	path := filepath.Join(dir, "omnirelay.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBenchTemplateBecomesMeshMTLSBootstrap(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	out := filepath.Join(dir, "omnirelay.json")
	if err := run([]string{"-dir", certs, "-config", renderTemplate(t, dir), "-out", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	snap, admin, err := config.LoadEnvoy(out, data)
	if err != nil {
		t.Fatal(err)
	}
	if admin.Address != "127.0.0.1:19901" {
		t.Errorf("admin address %q", admin.Address)
	}
	secrets := map[string]bool{}
	for _, s := range snap.Secrets {
		secrets[s.GetName()] = true
	}
	if !secrets["default"] || !secrets["ROOTCA"] || len(secrets) != 2 {
		t.Errorf("secrets %v, want default and ROOTCA", secrets)
	}
	var mtls *listenerv3.Listener
	for _, l := range snap.Listeners {
		if l.GetName() == "mtls" {
			mtls = l
		}
	}
	if mtls == nil || len(mtls.GetFilterChains()) != 1 {
		t.Fatalf("no single-chain mtls listener in %v", snap.Listeners)
	}
	d := &tlsv3.DownstreamTlsContext{}
	if err := mtls.GetFilterChains()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(d); err != nil {
		t.Fatal(err)
	}
	// The mesh's STRICT shape: client certificate required, the SVID and
	// bundle by SDS name, SPIFFE IDs of the trust domain only.
	if !d.GetRequireClientCertificate().GetValue() {
		t.Error("client certificate not required")
	}
	if got := d.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(got) != 1 || got[0].GetName() != "default" {
		t.Errorf("certificate secrets %v", got)
	}
	cv := d.GetCommonTlsContext().GetCombinedValidationContext()
	if cv.GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" {
		t.Errorf("validation context %v", cv)
	}
	if sans := cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(); len(sans) != 1 ||
		sans[0].GetMatcher().GetPrefix() != "spiffe://omnirelay.local/" {
		t.Errorf("SAN matchers %v", sans)
	}
}

func TestBootstrapReusesCertificates(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"-dir", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "omnirelay.json")
	if err := run([]string{"-dir", dir, "-gen=false", "-config", renderTemplate(t, dir), "-out", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("-gen=false replaced the CA")
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), filepath.Join(dir, "ca.pem")) {
		t.Error("bootstrap does not point at the existing CA")
	}
}

func TestCertificatesAreSVIDsOfTheTrustDomain(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"-dir", dir, "-trust-domain", "bench.test"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("bench.test")
	bundle, err := x509bundle.Parse(td, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, id string
	}{
		{name: "server", cert: "server.pem", key: "server.key", id: "spiffe://bench.test/ns/bench/sa/proxy"},
		{name: "server bundle for HAProxy", cert: "server-bundle.pem", key: "server-bundle.pem", id: "spiffe://bench.test/ns/bench/sa/proxy"},
		{name: "client", cert: "client.pem", key: "client.key", id: "spiffe://bench.test/ns/bench/sa/load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, tt.cert), filepath.Join(dir, tt.key))
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
			}
			id, _, err := x509svid.Verify([]*x509.Certificate{leaf}, bundle)
			if err != nil {
				t.Fatalf("not an SVID of %s: %v", td, err)
			}
			if id.String() != tt.id {
				t.Errorf("SPIFFE ID %s, want %s", id, tt.id)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "no dir", args: nil},
		{name: "config without out", args: []string{"-dir", "x", "-config", "c.yaml"}},
		{name: "nothing to do", args: []string{"-dir", "x", "-gen=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(tt.args, io.Discard); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
