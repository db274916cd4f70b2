package app

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestOCSPStapling: an https listener staples the configured OCSP response;
// a renewed staple file is served without SIGHUP; with an expired staple the
// lenient policy serves the certificate without it and the strict one
// refuses the handshake; a staple saying "revoked", or for another
// certificate, is refused at load with the file's path in the error.
func TestOCSPStapling(t *testing.T) {
	ca := testca.New(t, "omnirelay.test")
	dir := t.TempDir()
	leaf := ca.Issue(t, testca.Leaf{DNS: []string{"shop.example.com"}})
	certPEM, keyPEM := testca.PEM(t, leaf)
	// The chain includes the issuer so that the staple's signature is
	// checked too.
	certPEM = append(certPEM, ca.RootPEM()...)
	write := func(name string, data []byte) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("edge.crt", certPEM)
	write("edge.key", keyPEM)
	now := time.Now()
	good := ca.OCSP(t, leaf.Leaf, ocsp.Good, now.Add(-time.Hour), now.Add(time.Hour))
	write("edge.ocsp", good)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	start := func(policy string) (*Proxy, string, error) {
		addr := testutil.Addr(t)
		cfg := filepath.Join(dir, "omnirelay-"+policy+".yaml")
		if err := os.WriteFile(cfg, []byte(`
listeners:
  - name: edge
    address: `+addr+`
    protocol: https
    tls:
      ocsp_staple_policy: `+policy+`
      certificates: [{ cert_file: edge.crt, key_file: edge.key, ocsp_staple: edge.ocsp }]
    virtual_hosts:
      - { name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: ok } }] }
`), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := Start(Options{ConfigPath: cfg, AdminAddress: "127.0.0.1:0", PollInterval: 50 * time.Millisecond,
			DrainTimeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return p, addr, err
	}
	staple := func(addr string) ([]byte, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "shop.example.com"})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().OCSPResponse, nil
	}

	lenient, lenientAddr, err := start("lenient")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, lenient)
	if got, err := staple(lenientAddr); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("stapled response: %v (%d bytes, want %d)", err, len(got), len(good))
	}
	strict, strictAddr, err := start("strict")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, strict)

	// The staple is renewed by file; then it expires: lenient serves the
	// certificate bare, strict refuses.
	renewed := ca.OCSP(t, leaf.Leaf, ocsp.Good, now.Add(-time.Minute), now.Add(2*time.Hour))
	write("edge.ocsp", renewed)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "renewed staple served", testutil.Bool(func() bool { got, err := staple(lenientAddr); return err == nil && bytes.Equal(got, renewed) }))
	expired := ca.OCSP(t, leaf.Leaf, ocsp.Good, now.Add(-2*time.Hour), now.Add(-time.Hour))
	write("edge.ocsp", expired)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "expired staple dropped (lenient)", testutil.Bool(func() bool { got, err := staple(lenientAddr); return err == nil && len(got) == 0 }))
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "expired staple refused (strict)", testutil.Bool(func() bool { _, err := staple(strictAddr); return err != nil }))

	// Bad staples are refused at load, naming the file.
	for name, der := range map[string][]byte{
		"revoked":             ca.OCSP(t, leaf.Leaf, ocsp.Revoked, now.Add(-time.Minute), now.Add(time.Hour)),
		"another certificate": ca.OCSP(t, ca.Issue(t, testca.Leaf{DNS: []string{"x"}}).Leaf, ocsp.Good, now.Add(-time.Minute), now.Add(time.Hour)),
		"garbage":             []byte("not an OCSP response"),
	} {
		write("edge.ocsp", der)
		p, _, err := start("lenient")
		if err == nil {
			shutdown(t, p)
			t.Fatalf("%s staple: accepted", name)
		}
		if !strings.Contains(err.Error(), "ocsp_staple") {
			t.Fatalf("%s staple: error does not say where: %v", name, err)
		}
	}
}
