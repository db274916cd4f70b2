package app

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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cpidentity "github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestMeshMTLSWithMeshKit: two proxies get SVIDs from a running MeshKit
// identity service (join tokens, 2 s lifetimes so the agents renew every
// second or so) and talk mTLS, proxy A's cluster to proxy B's STRICT
// listener, while clients send requests continuously across several
// rotations: no request may fail, and B sees A's SPIFFE ID.
func TestMeshMTLSWithMeshKit(t *testing.T) {
	const td = "omnirelay.test"
	webID := "spiffe://" + td + "/ns/shop/sa/web"
	apiID := "spiffe://" + td + "/ns/shop/sa/api"

	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ca, err := cpidentity.LoadOrCreateCA(context.Background(), st, spiffeid.RequireTrustDomainFromString(td), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cpidentity.NewService(cpidentity.Options{CA: ca, Store: st, SVIDTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(svc.ServerTLSConfig())))
	svc.RegisterIdentity(srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.RootsPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(node, id string) string {
		tok, _, err := svc.CreateJoinToken(context.Background(), node, id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("x-peer"))
	}))
	defer backend.Close()

	aAddr, bAddr := testutil.Addr(t), testutil.Addr(t)
	start := func(name, cfg string, id *IdentityOptions) *Proxy {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := Start(Options{ConfigPath: path, AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	b := start("b", `
listeners:
  - name: in
    address: `+bAddr+`
    mtls: { mode: STRICT, trust_domain: `+td+`, allowed_ids: ["`+webID+`"] }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: app
            request_headers_add: { x-peer: "%DOWNSTREAM_PEER_URI_SAN%" }
clusters:
  - { name: app, endpoints: [`+strings.TrimPrefix(backend.URL, "http://")+`] }
`, &IdentityOptions{Address: ln.Addr().String(), JoinToken: token("b", apiID), CAFile: caFile, NodeID: "b"})
	defer shutdown(t, b)
	a := start("a", `
listeners:
  - name: out
    address: `+aAddr+`
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: b
clusters:
  - name: b
    endpoints: [`+bAddr+`]
    mtls: { identity: "`+apiID+`" }
    max_requests_per_connection: 5
`, &IdentityOptions{Address: ln.Addr().String(), JoinToken: token("a", webID), CAFile: caFile, NodeID: "a"})
	defer shutdown(t, a)

	client := &http.Client{Timeout: 5 * time.Second}
	call := func() error {
		resp, err := client.Get("http://" + aAddr + "/x")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != webID {
			return fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return nil
	}
	// Both agents first need their SVIDs (the listener and the cluster warm
	// until then).
	deadline := time.Now().Add(10 * time.Second)
	for err := call(); err != nil; err = call() {
		if time.Now().After(deadline) {
			t.Fatalf("mTLS never came up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	serial := func(p *Proxy) string {
		return p.Runtime.Secrets().Ref(secrets.DefaultCertName).Load().Cert.Leaf.SerialNumber.String()
	}
	aFirst, bFirst := serial(a), serial(b)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(3500 * time.Millisecond) // several 2 s SVIDs renewed at half-life
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := call(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across rotations; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if serial(a) == aFirst || serial(b) == bFirst {
		t.Fatal("no SVID rotated during the load")
	}
	if ok.Load() < 50 {
		t.Fatalf("only %d requests", ok.Load())
	}
	if n := counterValue(t, b, "omnirelay_listener_connections_total"); n < 10 {
		t.Fatalf("B accepted %v mTLS connections; too few to have used rotated certificates", n)
	}
	t.Logf("%d requests through A->B mTLS with MeshKit SVIDs rotating every ~1s, 0 failures", ok.Load())
}

func shutdown(t *testing.T, p *Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

func counterValue(t *testing.T, p *Proxy, name string) float64 {
	t.Helper()
	mfs, err := p.Runtime.Stats().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestXDSMeshMTLSDoesNotWaitForAgentSecrets: a config with mtls, served over
// ADS, names the secrets default and ROOTCA with the agent's source; the
// proxy applies it without waiting for the control plane to send them, and
// serves mTLS once its store has an identity.
func TestXDSMeshMTLSDoesNotWaitForAgentSecrets(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	p := startXDSProxy(t, XDSOptions{Address: cp.addr})
	addr := testutil.Addr(t)
	cp.set(t, "v1", `
listeners:
  - name: in
    address: `+addr+`
    mtls: { mode: PERMISSIVE, trust_domain: omnirelay.local }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            direct_response: { status: 204 }
`)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "config applied", func() (bool, string) {
		return p.ListenerAddr("in") != nil, "listener not bound"
	})
	resp, err := httpClient.Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("plaintext on PERMISSIVE: %v %v", resp, err)
	}
	resp.Body.Close()

	ca := testca.New(t, "omnirelay.local")
	if err := p.Runtime.Secrets().SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://omnirelay.local/ns/a/sa/in"}),
		[]*x509.Certificate{ca.Cert}, spiffeid.RequireTrustDomainFromString("omnirelay.local")); err != nil {
		t.Fatal(err)
	}
	client := ca.Issue(t, testca.Leaf{ID: "spiffe://omnirelay.local/ns/a/sa/client"})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{*client},
		RootCAs: roots, InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get("https://" + addr + "/")
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("mTLS on PERMISSIVE: %v %v", resp, err)
	}
	resp.Body.Close()
}
