package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/examples"
	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/demo"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/static"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Every shipped example config must load in the binary's own loader and run.

// docExampleRE finds the complete examples of the docs: fenced yaml blocks
// whose first line is "# example: <name>" (the convention docs/config.md
// states).
var docExampleRE = regexp.MustCompile("(?ms)^```yaml\n(# example: ([^\n]*)\n.*?)^```")

type exampleFile struct {
	name string
	body string
}

func shippedExamples(t *testing.T) []exampleFile {
	t.Helper()
	var out []exampleFile
	yamls, err := fs.Glob(examples.FS, "*.yaml")
	if err != nil || len(yamls) == 0 {
		t.Fatalf("examples/*.yaml: %v (%d files)", err, len(yamls))
	}
	for _, name := range yamls {
		b, err := examples.FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, exampleFile{name: "examples/" + name, body: string(b)})
	}
	docs, err := filepath.Glob(filepath.Join("..", "..", "..", "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs/*.md: %v", err)
	}
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docExampleRE.FindAllStringSubmatch(string(b), -1) {
			out = append(out, exampleFile{name: "docs/" + filepath.Base(doc) + "/" + m[2], body: m[1]})
		}
	}
	return out
}

var (
	// Files the examples name: certificates and keys (given one generated
	// pair), CA bundles and access logs are moved into the test's directory.
	exampleFileRE = regexp.MustCompile(`\b(cert_file|key_file|ca_file|path|filename): (/[^\s,}]+)`)
	// Bound addresses are moved to free loopback ports so the examples can
	// run side by side with anything else on the machine.
	exampleAddrRE = regexp.MustCompile(`\baddress: (?:"\[::\]|[0-9.]*):(\d+)"?`)
	examplePortRE = regexp.MustCompile(`\bport_value: (\d+)`)
)

// localizeExample rewrites an example so that it runs here: referenced files
// exist in dir and every address is a free loopback port.
func localizeExample(t *testing.T, body, dir string, certPEM, keyPEM []byte) string {
	t.Helper()
	body = exampleFileRE.ReplaceAllStringFunc(body, func(s string) string {
		m := exampleFileRE.FindStringSubmatch(s)
		local := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(m[2], "/"), "/", "_"))
		var content []byte
		switch m[1] {
		case "cert_file", "ca_file":
			content = certPEM
		case "key_file":
			content = keyPEM
		case "filename":
			content = certPEM
			if strings.HasSuffix(m[2], ".key") {
				content = keyPEM
			}
		}
		if content != nil {
			if err := os.WriteFile(local, content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return m[1] + ": " + local
	})
	body = exampleAddrRE.ReplaceAllStringFunc(body, func(string) string { return "address: " + testutil.Addr(t) })
	body = examplePortRE.ReplaceAllStringFunc(body, func(string) string {
		_, port, _ := net.SplitHostPort(testutil.Addr(t))
		return "port_value: " + port
	})
	return strings.ReplaceAll(body, "socket_address: { address: 0.0.0.0,", "socket_address: { address: 127.0.0.1,")
}

// selfSigned returns a PEM certificate (usable as its own CA) and key.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "omnirelay example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:              []string{"shop.example.com", "api.example.com", "*.api.example.com", "secure.internal"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestExamplesLoadAndRun loads every example as `omnirelay validate` and
// `omnirelay run` do (static.Parse, Snapshot.Validate), then applies it to a
// runtime: an example that validates but that the data plane cannot compile
// or bind is as wrong as one that does not parse.
func TestExamplesLoadAndRun(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	reg, err := app.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	all := shippedExamples(t)
	if len(all) < 10 {
		t.Fatalf("found only %d examples", len(all))
	}
	for _, ex := range all {
		t.Run(ex.name, func(t *testing.T) {
			dir := t.TempDir()
			body := localizeExample(t, ex.body, dir, certPEM, keyPEM)
			path := filepath.Join(dir, "config.yaml")
			loaded, err := static.Parse(path, []byte(body))
			if err != nil {
				t.Fatalf("parse:\n%v\n--- localized config:\n%s", err, body)
			}
			if err := loaded.Snapshot.Validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			if len(loaded.Snapshot.Listeners) == 0 {
				t.Fatal("example has no listeners")
			}
			rt := runtime.New(runtime.Options{Log: testutil.Logger(t), Stats: stats.New(), Filters: reg, DrainTimeout: time.Second})
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = rt.Shutdown(ctx)
			}()
			if err := rt.Apply(loaded.Snapshot, "file:"+path); err != nil {
				t.Fatalf("apply: %v\n--- localized config:\n%s", err, body)
			}
		})
	}
}

var demoAddrRE = regexp.MustCompile(`127\.0\.0\.1:(9001|9002|9003|8080|15432|9901)\b`)

// TestExamplesDemoServes runs examples/demo.yaml on the demo's own backends,
// moved to free ports.
func TestExamplesDemoServes(t *testing.T) {
	data, err := examples.FS.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The demo's backends name fixed ports; move them to free ones.
	moved := map[string]string{}
	backends := demo.Backends()
	for i := range backends {
		addr := testutil.Addr(t)
		moved[backends[i].Addr] = addr
		backends[i].Addr = addr
	}
	stop, err := demo.StartBackends(backends)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	for _, fixed := range []string{"127.0.0.1:8080", "127.0.0.1:15432", "127.0.0.1:9901"} {
		moved[fixed] = testutil.Addr(t)
	}
	cfg := demoAddrRE.ReplaceAllStringFunc(string(data), func(a string) string {
		if m, ok := moved[a]; ok {
			return m
		}
		t.Fatalf("demo.yaml names %s, which the test does not move", a)
		return a
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	if !strings.Contains(cfg, "access_log: { path: stdout }") {
		t.Fatal("demo.yaml no longer logs to stdout: update this test")
	}
	cfg = strings.Replace(cfg, "access_log: { path: stdout }", "access_log: { path: "+logPath+" }", 1)
	p := startProxy(t, cfg, nil)
	web := "http://" + moved["127.0.0.1:8080"]
	c := &http.Client{Timeout: 5 * time.Second}

	counts := map[string]int{}
	for range 200 {
		resp, body := testutil.Get(t, c, web+"/")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from ") {
			t.Fatalf("GET /: %d %q", resp.StatusCode, body)
		}
		counts[resp.Header.Get("x-backend")]++
	}
	v1 := counts["shop-v1-a"] + counts["shop-v1-b"]
	if v1 < 130 || v1 > 190 || counts["shop-v2"] == 0 || counts["shop-v1-a"] == 0 || counts["shop-v1-b"] == 0 {
		t.Fatalf("80/20 split over shop-v1 (two hosts) and shop-v2: %v", counts)
	}
	if resp, body := testutil.Get(t, c, web+"/api/items", "x-canary", "true"); resp.Header.Get("x-backend") != "shop-v2" {
		t.Fatalf("canary: %d %q from %q", resp.StatusCode, body, resp.Header.Get("x-backend"))
	}
	if resp, body := testutil.Get(t, testutil.H2CClient(), web+"/h2"); resp.StatusCode != 200 || !strings.Contains(body, "(HTTP/2.0)") {
		t.Fatalf("h2c: %d %q", resp.StatusCode, body)
	}

	// The tcp listener proxies bytes to shop-v1.
	conn, err := net.DialTimeout("tcp", moved["127.0.0.1:15432"], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /via-tcp HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("through the tcp listener: %v", err)
	}
	resp.Body.Close()
	if b := resp.Header.Get("x-backend"); !strings.HasPrefix(b, "shop-v1-") {
		t.Fatalf("tcp listener reached %q, want shop-v1", b)
	}

	// Health checks run against the demo backends' /healthz.
	testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "shop-v1 endpoints healthy", testutil.Bool(func() bool {
		return opsMetric(t, p, "omnirelay_endpoint_healthy", "cluster", "shop-v1") == 2
	}))
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "access-log records", testutil.Bool(func() bool { return len(readAccessLog(t, logPath)) >= 202 }))
}
