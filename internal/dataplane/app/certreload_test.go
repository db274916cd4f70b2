package app

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestEdgeCertificateFileRenewal: replacing the certificate and key files an
// https listener names (as certbot or cert-manager do, by rename) makes the
// listener serve the new certificate within a poll interval, with no SIGHUP
// and no config change; a renewal whose files do not match (key of another
// certificate) is rejected and the old certificate stays in service.
func TestEdgeCertificateFileRenewal(t *testing.T) {
	ca := testca.New(t, "omnirelay.test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	install := func(c *tls.Certificate) {
		certPEM, keyPEM := testca.PEM(t, c)
		for _, f := range []struct {
			path string
			data []byte
		}{{certFile, certPEM}, {keyFile, keyPEM}} {
			tmp := f.path + ".tmp"
			if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, f.path); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := ca.Issue(t, testca.Leaf{DNS: []string{"shop.example.com"}})
	install(first)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	addr := testutil.Addr(t)
	cfg := filepath.Join(dir, "omnirelay.yaml")
	if err := os.WriteFile(cfg, []byte(`
listeners:
  - name: edge
    address: `+addr+`
    protocol: https
    tls: { certificates: [{ cert_file: edge.crt, key_file: edge.key }] }
    virtual_hosts:
      - { name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }
clusters:
  - { name: app, endpoints: [`+strings.TrimPrefix(backend.URL, "http://")+`] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Start(Options{ConfigPath: cfg, AdminAddress: "127.0.0.1:0", PollInterval: 50 * time.Millisecond,
		DrainTimeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	served := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "shop.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	if !served().Equal(first.Leaf) {
		t.Fatal("the listener does not serve the configured certificate")
	}
	waitFor := func(what string, want *x509.Certificate) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, what, func() (bool, string) {
			got := served()
			return got.Equal(want), "the listener still serves serial " + got.SerialNumber.String()
		})
	}

	renewed := ca.Issue(t, testca.Leaf{DNS: []string{"shop.example.com"}})
	install(renewed)
	waitFor("after renewal", renewed.Leaf)

	// A broken renewal: the key file of another certificate.
	rejectedBefore := counterValue(t, p, "omnirelay_config_reloads_total")
	other := ca.Issue(t, testca.Leaf{DNS: []string{"shop.example.com"}})
	certPEM, _ := testca.PEM(t, other)
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "the mismatched certificate file tried", func() (bool, string) {
		return counterValue(t, p, "omnirelay_config_reloads_total") != rejectedBefore, "no reload counted"
	})
	if !served().Equal(renewed.Leaf) {
		t.Fatal("a renewal with a mismatched key replaced the certificate in service")
	}
	// Completing the renewal (the key arrives) recovers.
	install(other)
	waitFor("after the key arrived", other.Leaf)
}
