package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/translate"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// These tests run two OmniRelay runtimes on loopback: proxy A (plaintext
// listener, cluster with mtls) in front of proxy B (listeners with mtls
// STRICT and PERMISSIVE) in front of a plain backend. SVIDs come from a
// test CA (secrets/testca) published into each proxy's secret store the way
// the identity agent publishes MeshKit's: as "default" and "ROOTCA".

const (
	meshTD = "omnirelay.local"
	webID  = "spiffe://" + meshTD + "/ns/default/sa/web" // proxy A
	apiID  = "spiffe://" + meshTD + "/ns/default/sa/api" // proxy B
)

type mesh struct {
	ca         *testca.CA
	a, b       *Runtime
	storeA     *secrets.Store
	storeB     *secrets.Store
	aAddr      string // A's plaintext listener
	bStrict    string // B's STRICT listener
	bPermisive string // B's PERMISSIVE listener
	bPlain     string // B's listener without mtls (benchmark baseline)
	backend    *httptest.Server
}

func newRuntimeWith(t testing.TB, store *secrets.Store) *Runtime {
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	rt := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Filters: reg, Secrets: store})
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

func freeAddrTB(t testing.TB) string {
	t.Helper()
	return testutil.Addr(t)
}

func snapshotTB(t testing.TB, yaml string) *resources.Snapshot {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := translate.Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func setIdentity(t testing.TB, ca *testca.CA, s *secrets.Store, id string, ttl time.Duration) {
	t.Helper()
	leaf := ca.Issue(t, testca.Leaf{ID: id, NotAfter: time.Now().Add(ttl)})
	if err := s.SetIdentity(leaf, []*x509.Certificate{ca.Cert}, spiffeid.RequireTrustDomainFromString(meshTD)); err != nil {
		t.Fatal(err)
	}
}

// startMesh starts backend, B, then A (A's cluster needs B's address).
// extraA is appended to A's clusters.
func startMesh(t testing.TB, extraA string) *mesh {
	t.Helper()
	m := &mesh{ca: testca.New(t, meshTD), storeA: secrets.NewStore(), storeB: secrets.NewStore()}
	setIdentity(t, m.ca, m.storeA, webID, time.Hour)
	setIdentity(t, m.ca, m.storeB, apiID, time.Hour)
	m.backend = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "peer="+r.Header.Get("x-peer"))
	}))
	t.Cleanup(m.backend.Close)
	m.bStrict, m.bPermisive, m.bPlain = freeAddrTB(t), freeAddrTB(t), freeAddrTB(t)
	route := `
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: backend
            request_headers_add: { x-peer: "%DOWNSTREAM_PEER_URI_SAN%" }`
	bCfg := `
listeners:
  - name: strict
    address: ` + m.bStrict + `
    mtls: { mode: STRICT, trust_domain: ` + meshTD + `, allowed_ids: ["` + webID + `"] }` + route + `
  - name: permissive
    address: ` + m.bPermisive + `
    mtls: { mode: PERMISSIVE }` + route + `
  - name: plain
    address: ` + m.bPlain + route + `
clusters:
  - { name: backend, protocol: http1, endpoints: [` + strings.TrimPrefix(m.backend.URL, "http://") + `] }
`
	m.b = newRuntimeWith(t, m.storeB)
	if err := m.b.Apply(snapshotTB(t, bCfg), "test"); err != nil {
		t.Fatal(err)
	}
	m.aAddr = freeAddrTB(t)
	aCfg := `
listeners:
  - name: out
    address: ` + m.aAddr + `
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: /permissive/ }
            cluster: b-permissive
          - match: { path_prefix: /wrong/ }
            cluster: b-wrong-identity
          - match: { path_prefix: /bench/plain/ }
            cluster: b-plain
          - match: { path_prefix: /bench/plain-new/ }
            cluster: b-plain-new
          - match: { path_prefix: /bench/mtls/ }
            cluster: b-mtls
          - match: { path_prefix: /bench/mtls-new/ }
            cluster: b-mtls-new
          - match: { path_prefix: / }
            cluster: b
clusters:
  - name: b
    endpoints: [` + m.bStrict + `]
    mtls: { identity: "` + apiID + `" }
    max_requests_per_connection: 3
  - name: b-permissive
    endpoints: [` + m.bPermisive + `]
    mtls: { identity: "` + apiID + `" }
  - name: b-wrong-identity
    endpoints: [` + m.bStrict + `]
    mtls: { identity: "spiffe://` + meshTD + `/ns/default/sa/someone-else" }
  - { name: b-plain, endpoints: [` + m.bPlain + `] }
  - { name: b-plain-new, endpoints: [` + m.bPlain + `], max_requests_per_connection: 1 }
  - { name: b-mtls, endpoints: [` + m.bStrict + `], mtls: { identity: "` + apiID + `" } }
  - { name: b-mtls-new, endpoints: [` + m.bStrict + `], mtls: { identity: "` + apiID + `" }, max_requests_per_connection: 1 }
` + extraA
	m.a = newRuntimeWith(t, m.storeA)
	if err := m.a.Apply(snapshotTB(t, aCfg), "test"); err != nil {
		t.Fatal(err)
	}
	return m
}

func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// counter reads one series of a counter family from a runtime's registry.
func counter(t testing.TB, rt *Runtime, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := rt.Stats().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestMeshMTLS(t *testing.T) {
	m := startMesh(t, "")
	client := &http.Client{Timeout: 5 * time.Second}

	t.Run("A to B over mTLS, peer identity reaches filters", func(t *testing.T) {
		code, body := get(t, client, "http://"+m.aAddr+"/hello")
		if code != 200 || body != "peer="+webID {
			t.Fatalf("got %d %q", code, body)
		}
	})
	t.Run("A refuses B when B is not the expected identity", func(t *testing.T) {
		code, _ := get(t, client, "http://"+m.aAddr+"/wrong/x")
		if code != http.StatusServiceUnavailable {
			t.Fatalf("got %d, want 503", code)
		}
	})
	t.Run("PERMISSIVE serves mTLS and plaintext on one port", func(t *testing.T) {
		code, body := get(t, client, "http://"+m.aAddr+"/permissive/x")
		if code != 200 || body != "peer="+webID {
			t.Fatalf("mTLS via A: %d %q", code, body)
		}
		code, body = get(t, client, "http://"+m.bPermisive+"/plain")
		if code != 200 || body != "peer=" {
			t.Fatalf("plaintext: %d %q", code, body)
		}
		if n := counter(t, m.b, "omnirelay_listener_connections_total", map[string]string{"listener": "permissive", "transport": "plaintext"}); n < 1 {
			t.Fatalf("plaintext connections counted: %v", n)
		}
		if n := counter(t, m.b, "omnirelay_listener_connections_total", map[string]string{"listener": "permissive", "transport": "tls"}); n < 1 {
			t.Fatalf("tls connections counted: %v", n)
		}
	})
	t.Run("HTTP/2 end to end: h2c to A, h2 over mTLS to B", func(t *testing.T) {
		h2c := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}}
		resp, err := h2c.Get("http://" + m.aAddr + "/bench/mtls/h2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(body) != "peer="+webID {
			t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
		}
	})
	t.Run("STRICT refuses plaintext", func(t *testing.T) {
		resp, err := client.Get("http://" + m.bStrict + "/plain")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("plaintext request to a STRICT listener got %d", resp.StatusCode)
		}
	})
}

// TestMeshMTLSRejections dials B's STRICT listener directly with bad client
// certificates: each handshake fails, the peer learns nothing but an alert,
// and the metric counts the reason.
func TestMeshMTLSRejections(t *testing.T) {
	m := startMesh(t, "")
	other := testca.New(t, "other.example")
	now := time.Now()
	tests := []struct {
		name   string
		cert   *tls.Certificate // nil: no client certificate
		reason string
	}{
		{name: "expired", cert: m.ca.Issue(t, testca.Leaf{ID: webID, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}), reason: secrets.ReasonExpired},
		{name: "not yet valid", cert: m.ca.Issue(t, testca.Leaf{ID: webID, NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}), reason: secrets.ReasonNotYetValid},
		{name: "wrong trust domain", cert: other.Issue(t, testca.Leaf{ID: "spiffe://other.example/ns/default/sa/web"}), reason: secrets.ReasonTrustDomain},
		{name: "wrong SAN", cert: m.ca.Issue(t, testca.Leaf{ID: "spiffe://" + meshTD + "/ns/default/sa/intruder"}), reason: secrets.ReasonSAN},
		{name: "self-signed", cert: m.ca.Issue(t, testca.Leaf{ID: webID, SelfSigned: true}), reason: secrets.ReasonSelfSigned},
		{name: "no client certificate", reason: secrets.ReasonNoClientCert},
	}
	roots := x509.NewCertPool()
	roots.AddCert(m.ca.Cert)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := map[string]string{"listener": "strict", "reason": tt.reason}
			before := counter(t, m.b, "omnirelay_tls_handshake_errors_total", labels)
			cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", m.bStrict, cfg)
			if err == nil {
				// TLS 1.3: the refusal arrives on the first read.
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: b\r\n\r\n")
				buf := make([]byte, 512)
				n, rerr := c.Read(buf)
				c.Close()
				if rerr == nil {
					t.Fatalf("refused client got an answer: %q", buf[:n])
				}
				err = rerr
			}
			// No detail leaks: the client sees a TLS alert only.
			for _, leak := range []string{tt.reason, "trust domain", "spiffe", "expired"} {
				if strings.Contains(strings.ToLower(err.Error()), leak) && !strings.Contains(err.Error(), "certificate required") {
					t.Errorf("client error %q reveals %q", err, leak)
				}
			}
			testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, tt.reason+" counted", func() (bool, string) {
				got := counter(t, m.b, "omnirelay_tls_handshake_errors_total", labels)
				return got == before+1, fmt.Sprintf("counter %v, want %v (client saw %v)", got, before+1, err)
			})
		})
	}
}

// TestMeshMTLSRotationUnderLoad rotates both proxies' short-lived SVIDs
// while clients send requests continuously through A to B; A recycles its
// upstream connections every 3 requests so new handshakes keep happening
// with the newest certificates. No request may fail.
func TestMeshMTLSRotationUnderLoad(t *testing.T) {
	m := startMesh(t, "")
	const workers = 4
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < 100000; n++ { // bounded even if stop never comes
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://" + m.aAddr + "/load")
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "peer="+webID {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", resp.StatusCode, b))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	handshakesBefore := counter(t, m.b, "omnirelay_listener_connections_total", map[string]string{"listener": "strict", "transport": "tls"})
	const rotations = 10
	for i := range rotations {
		// Short-lived certificates, replaced well before they expire.
		setIdentity(t, m.ca, m.storeA, webID, 3*time.Second)
		setIdentity(t, m.ca, m.storeB, apiID, 3*time.Second)
		target := int64((i + 1) * 20)
		deadline := time.Now().Add(10 * time.Second)
		for ok.Load() < target && time.Now().Before(deadline) && failed.Load() == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	handshakes := counter(t, m.b, "omnirelay_listener_connections_total", map[string]string{"listener": "strict", "transport": "tls"}) - handshakesBefore
	if ok.Load() < rotations*20 || handshakes < rotations {
		t.Fatalf("too little traffic to test rotation: %d requests, %v handshakes", ok.Load(), handshakes)
	}
	t.Logf("%d requests, %v mTLS handshakes, %d rotations, 0 failures", ok.Load(), handshakes, rotations)
}

// TestMeshMTLSWarming: a proxy whose agent has no SVID yet installs its
// config and refuses mTLS (secret_missing) until the SVID arrives.
func TestMeshMTLSWarming(t *testing.T) {
	m := startMesh(t, "")
	store := secrets.NewStore()
	addr := freeAddrTB(t)
	rt := newRuntimeWith(t, store)
	cfg := `
listeners:
  - name: late
    address: ` + addr + `
    mtls: {}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: backend
clusters:
  - { name: backend, protocol: http1, endpoints: [` + strings.TrimPrefix(m.backend.URL, "http://") + `] }
`
	if err := rt.Apply(snapshotTB(t, cfg), "test"); err != nil {
		t.Fatalf("a config naming secrets not yet set must apply: %v", err)
	}
	clientCert := m.ca.Issue(t, testca.Leaf{ID: webID})
	dial := func() error {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*clientCert}})
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = c.Read(make([]byte, 64))
		return err
	}
	if err := dial(); err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	// The server counts the failed handshake after the client has seen it
	// fail: poll.
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "secret_missing counted once", func() (bool, string) {
		n := counter(t, rt, "omnirelay_tls_handshake_errors_total", map[string]string{"listener": "late", "reason": secrets.ReasonSecretMissing})
		return n == 1, fmt.Sprintf("secret_missing counted %v times", n)
	})
	setIdentity(t, m.ca, store, apiID, time.Hour)
	if err := dial(); err != nil {
		t.Fatalf("after the SVID arrived: %v", err)
	}
}

// BenchmarkMeshRequest is the per-request cost through two proxies (client
// -> A -> B -> backend) with the A->B hop in plaintext or mTLS, on a kept-
// alive upstream connection ("-keepalive") or a new connection, hence a
// new handshake, per request ("-new"). The difference between the mtls and
// plain rows is the cost mTLS adds; bench/run.sh should get the same row
// against HAProxy (follow-up).
func BenchmarkMeshRequest(b *testing.B) {
	m := startMesh(b, "")
	for _, bc := range []struct{ name, path string }{
		{"plain-keepalive", "/bench/plain/x"},
		{"mtls-keepalive", "/bench/mtls/x"},
		{"plain-new", "/bench/plain-new/x"},
		{"mtls-new", "/bench/mtls-new/x"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &http.Client{Timeout: 5 * time.Second}
			url := "http://" + m.aAddr + bc.path
			want := "peer="
			if strings.Contains(bc.name, "mtls") {
				want += webID
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != want {
					b.Fatalf("%d %q", resp.StatusCode, body)
				}
			}
		})
	}
}

// TestMeshMTLSOverTCP: tcp listeners and the TCP proxy use the same mTLS:
// A's tcp listener proxies to a cluster with mtls, B's tcp listener is
// STRICT; bytes pass end to end, and a plaintext client of B is refused.
func TestMeshMTLSOverTCP(t *testing.T) {
	m := startMesh(t, "")
	bTCP, aTCP := freeAddrTB(t), freeAddrTB(t)
	bCfg := `
listeners:
  - name: tcp-in
    address: ` + bTCP + `
    protocol: tcp
    cluster: backend
    mtls: { mode: STRICT }
clusters:
  - { name: backend, protocol: http1, endpoints: [` + strings.TrimPrefix(m.backend.URL, "http://") + `] }
`
	b := newRuntimeWith(t, m.storeB)
	if err := b.Apply(snapshotTB(t, bCfg), "test"); err != nil {
		t.Fatal(err)
	}
	aCfg := `
listeners:
  - name: tcp-out
    address: ` + aTCP + `
    protocol: tcp
    cluster: b
clusters:
  - name: b
    endpoints: [` + bTCP + `]
    mtls: { identity: "` + apiID + `" }
`
	a := newRuntimeWith(t, m.storeA)
	if err := a.Apply(snapshotTB(t, aCfg), "test"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if code, body := get(t, client, "http://"+aTCP+"/"); code != 200 || body != "peer=" {
		t.Fatalf("through A's and B's TCP proxies: %d %q", code, body)
	}
	if resp, err := client.Get("http://" + bTCP + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("plaintext to a STRICT tcp listener got %d", resp.StatusCode)
	}
	if n := counter(t, b, "omnirelay_listener_connections_total", map[string]string{"listener": "tcp-in", "transport": "tls"}); n != 1 {
		t.Fatalf("mTLS connections on tcp-in: %v", n)
	}
}
