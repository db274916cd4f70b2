package e2e

// TLS and L4 end-to-end tests: an https listener choosing its certificate by
// SNI and offering ALPN h2 and http/1.1, TLS to upstreams (h2 and HTTP/1.1
// with a configured CA), TLS passthrough by SNI, and the TCP proxy (echo,
// half-close, idle timeout). Certificates are made per test.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// protoCA is a throw-away certificate authority for one test.
type protoCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string // PEM of the CA certificate
	dir  string
}

func newProtoCA(t testing.TB) *protoCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "omnirelay e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &protoCA{cert: cert, key: key, pool: x509.NewCertPool(), dir: t.TempDir()}
	ca.pool.AddCert(cert)
	ca.file = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a server certificate for dns names and writes it and its key
// to files; it returns the paths and the loaded pair.
func (ca *protoCA) issue(t testing.TB, name string, dns ...string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     dns,
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, name+".crt")
	keyFile = filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

const httpsConfig = `
admin: { address: {{admin}} }
listeners:
  - name: secure
    address: {{web}}
    protocol: https
    tls:
      certificates:
        - { cert_file: {{certA}}, key_file: {{keyA}}, sni: [a.example.com] }
        - { cert_file: {{certB}}, key_file: {{keyB}}, sni: ["*.b.example.com"] }
        - { cert_file: {{certD}}, key_file: {{keyD}} }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: app }]
clusters:
  - name: app
    endpoints: [{{app}}]
`

func TestTLSListenerSNIAndALPN(t *testing.T) {
	ca := newProtoCA(t)
	certA, keyA, _ := ca.issue(t, "a", "a.example.com")
	certB, keyB, _ := ca.issue(t, "b", "*.b.example.com")
	certD, keyD, _ := ca.issue(t, "default", "default.example.com")
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s xfp=%s", r.Proto, r.Host, r.Header.Get("x-forwarded-proto"))
	})
	web := testutil.Addr(t)
	startProxy(t, httpsConfig, map[string]string{"web": web, "app": b.addr,
		"certA": certA, "keyA": keyA, "certB": certB, "keyB": keyB, "certD": certD, "keyD": keyD})

	for _, tc := range []struct {
		name, sni, alpn string
		wantDNS         string
		wantBackend     string // protocol the backend sees (cluster protocol auto)
	}{
		{name: "exact name h2", sni: "a.example.com", alpn: "h2", wantDNS: "a.example.com", wantBackend: "HTTP/2.0"},
		{name: "exact name http1", sni: "a.example.com", alpn: "http/1.1", wantDNS: "a.example.com", wantBackend: "HTTP/1.1"},
		{name: "wildcard", sni: "x.b.example.com", alpn: "h2", wantDNS: "*.b.example.com", wantBackend: "HTTP/2.0"},
		{name: "no match gets default", sni: "default.example.com", alpn: "http/1.1", wantDNS: "default.example.com", wantBackend: "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", web, &tls.Config{
				ServerName: tc.sni, RootCAs: ca.pool, NextProtos: []string{tc.alpn},
			})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			st := conn.ConnectionState()
			if st.NegotiatedProtocol != tc.alpn {
				t.Fatalf("ALPN %q, want %q", st.NegotiatedProtocol, tc.alpn)
			}
			if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != tc.wantDNS {
				t.Fatalf("served certificate for %v, want %s", got, tc.wantDNS)
			}
			req, _ := http.NewRequest("GET", "https://"+tc.sni+"/x", nil)
			var resp *http.Response
			if tc.alpn == "h2" {
				cc, err := (&http2.Transport{}).NewClientConn(conn)
				if err != nil {
					t.Fatal(err)
				}
				if resp, err = cc.RoundTrip(req); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := req.Write(conn); err != nil {
					t.Fatal(err)
				}
				if resp, err = http.ReadResponse(bufio.NewReader(conn), req); err != nil {
					t.Fatal(err)
				}
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf("%s %s xfp=https", tc.wantBackend, tc.sni)
			if resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("status %d body %q, want %q", resp.StatusCode, body, want)
			}
		})
	}
}

const upstreamTLSConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /h2/ }, cluster: up-h2 }
          - { match: { path_prefix: /h1/ }, cluster: up-h1 }
          - { match: { path_prefix: /wrong-ca/ }, cluster: wrong-ca }
          - { match: { path_prefix: /wrong-name/ }, cluster: wrong-name }
clusters:
  - name: up-h2
    protocol: h2
    tls: { sni: backend.internal, ca_file: {{ca}} }
    endpoints: [{{tlsb}}]
  - name: up-h1
    protocol: http1
    tls: { sni: backend.internal, ca_file: {{ca}} }
    endpoints: [{{tlsb}}]
  - name: wrong-ca
    protocol: h2
    tls: { sni: backend.internal, ca_file: {{otherca}} }
    endpoints: [{{tlsb}}]
  - name: wrong-name
    protocol: http1
    tls: { sni: someone-else.internal, ca_file: {{ca}} }
    endpoints: [{{tlsb}}]
`

func TestTLSUpstream(t *testing.T) {
	ca := newProtoCA(t)
	other := newProtoCA(t)
	_, _, pair := ca.issue(t, "backend", "backend.internal")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s sni=%s alpn=%s body=%s", r.Proto, r.TLS.ServerName, r.TLS.NegotiatedProtocol, body)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2", "http/1.1"}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing cases log handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	web := testutil.Addr(t)
	startProxy(t, upstreamTLSConfig, map[string]string{"web": web, "tlsb": srv.Listener.Addr().String(),
		"ca": ca.file, "otherca": other.file})

	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, path string
		status     int
		want       string
	}{
		{name: "h2 over TLS", path: "/h2/x", status: 200, want: "HTTP/2.0 sni=backend.internal alpn=h2 body=ping"},
		{name: "http1 over TLS", path: "/h1/x", status: 200, want: "HTTP/1.1 sni=backend.internal alpn=http/1.1 body=ping"},
		{name: "untrusted CA", path: "/wrong-ca/x", status: 503},
		{name: "name mismatch", path: "/wrong-name/x", status: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Post("http://"+web+tc.path, "text/plain", strings.NewReader("ping"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (tc.want != "" && string(body) != tc.want) {
				t.Fatalf("status %d body %q, want %d %q", resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}

// startTLSEcho serves TLS with pair: it greets with name, then echoes lines.
func startTLSEcho(t testing.TB, name string, pair tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "%s\n", name)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

const passthroughConfig = `
admin: { address: {{admin}} }
listeners:
  - name: pass
    address: {{web}}
    protocol: tls
    sni_routes:
      - { sni: [a.example.com], cluster: a }
      - { sni: ["*.b.example.com"], cluster: b }
    cluster: a
clusters:
  - { name: a, endpoints: [{{a}}] }
  - { name: b, endpoints: [{{b}}] }
`

// TestTLSPassthroughBySNI proves the proxy routes on SNI without
// terminating: it has no certificate at all, and each client verifies the
// backend's own certificate.
func TestTLSPassthroughBySNI(t *testing.T) {
	ca := newProtoCA(t)
	_, _, pairA := ca.issue(t, "a", "a.example.com", "other.example.com")
	_, _, pairB := ca.issue(t, "b", "*.b.example.com")
	web := testutil.Addr(t)
	startProxy(t, passthroughConfig, map[string]string{"web": web,
		"a": startTLSEcho(t, "backend-a", pairA), "b": startTLSEcho(t, "backend-b", pairB)})

	for _, tc := range []struct{ name, sni, wantDNS, wantGreeting string }{
		{name: "exact", sni: "a.example.com", wantDNS: "a.example.com", wantGreeting: "backend-a"},
		{name: "wildcard", sni: "api.b.example.com", wantDNS: "*.b.example.com", wantGreeting: "backend-b"},
		{name: "default cluster", sni: "other.example.com", wantDNS: "a.example.com", wantGreeting: "backend-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", web,
				&tls.Config{ServerName: tc.sni, RootCAs: ca.pool})
			if err != nil {
				t.Fatalf("handshake through passthrough: %v", err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if got := conn.ConnectionState().PeerCertificates[0].DNSNames[0]; got != tc.wantDNS {
				t.Fatalf("client saw certificate for %s, want the backend's %s", got, tc.wantDNS)
			}
			br := bufio.NewReader(conn)
			if line, _ := br.ReadString('\n'); line != tc.wantGreeting+"\n" {
				t.Fatalf("greeting %q, want %q", line, tc.wantGreeting)
			}
			fmt.Fprintf(conn, "hello %s\n", tc.sni)
			if line, _ := br.ReadString('\n'); line != "hello "+tc.sni+"\n" {
				t.Fatalf("echo %q", line)
			}
		})
	}
}

const tcpConfig = `
admin: { address: {{admin}} }
listeners:
  - name: tcp
    address: {{tcp}}
    protocol: tcp
    cluster: echo
  - name: tcp-idle
    address: {{idle}}
    protocol: tcp
    cluster: echo
    idle_timeout: 300ms
clusters:
  - { name: echo, endpoints: [{{echo}}] }
`

// startEcho echoes bytes until the client half-closes, then writes "bye"
// and closes: the reply after EOF is what proves half-close works.
func startEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(c, c)
				_, _ = c.Write([]byte("bye"))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTCPProxy(t *testing.T) {
	tcp, idle := testutil.Addr(t), testutil.Addr(t)
	startProxy(t, tcpConfig, map[string]string{"tcp": tcp, "idle": idle, "echo": startEcho(t)})

	t.Run("round trip and half-close", func(t *testing.T) {
		c, br := rawDial(t, tcp)
		data := patterned(7, 1<<20)
		go func() {
			_, _ = c.Write(data)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), data...), "bye"...)
		if sum(got) != sum(want) {
			t.Fatalf("got %d bytes (want %d): echo or the reply after half-close was lost", len(got), len(want))
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		c, br := rawDial(t, idle)
		fmt.Fprintf(c, "ping\n")
		if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("echo %q %v", line, err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		if err != nil && !isConnReset(err) {
			t.Fatalf("idle connection not closed by the proxy: %v", err)
		}
		if el := time.Since(start); el < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the 300ms idle timeout", el)
		}
		// The proxy closes its upstream side too; the echo server may get
		// its "bye" out first.
		if len(rest) > 0 && string(rest) != "bye" {
			t.Fatalf("unexpected bytes %q", rest)
		}
	})

	t.Run("traffic keeps it open", func(t *testing.T) {
		c, br := rawDial(t, idle)
		for i := range 6 {
			fmt.Fprintf(c, "tick %d\n", i)
			if line, err := br.ReadString('\n'); err != nil || line != fmt.Sprintf("tick %d\n", i) {
				t.Fatalf("tick %d after %d ms: %q %v", i, i*100, line, err)
			}
			time.Sleep(100 * time.Millisecond) // 600ms in all, twice the idle timeout
		}
	})
}
