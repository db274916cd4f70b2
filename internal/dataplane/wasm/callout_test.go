package wasm_test

import (
	"crypto/ed25519"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// startProxy writes config (after replacing its {{keys}}) and starts a
// real OmniRelay on it with the test trust root; packages must already be
// in dir.
func startProxy(t *testing.T, dir, config string, vars map[string]string) {
	t.Helper()
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, key().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	admin := testutil.Addr(t)
	vars["admin"] = admin
	proxytest.StartIn(t, dir, testutil.Render(config, vars), func(o *app.Options) {
		o.ExtensionTrustRoot, o.AdminAddress, o.DrainTimeout, o.PollInterval = trust, admin, time.Second, time.Hour
	})
}

// authServer allows "Bearer good" and names itself in x-auth-user.
func authServer(name string, hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("x-auth-user", name)
	})
}

func serveOn(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

const calloutConfig = `
admin: { address: {{admin}} }
listeners:
  - name: rr
    address: {{rr}}
    filters:
      - extension: { name: callout-rr, package: http-callout.orx, config: "upstream: auth", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: tls
    address: {{tls}}
    filters:
      - extension: { name: callout-tls, package: http-callout.orx, config: "upstream: auth-tls", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: unknown
    address: {{unknown}}
    filters:
      - extension: { name: callout-unknown, package: http-callout.orx, config: "upstream: {{authaddr}}", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters:
  - { name: main, endpoints: [{{main}}] }
  - { name: auth, endpoints: [{{auth1}}, {{auth2}}] }
  - name: auth-tls
    endpoints: [{{authtls}}]
    tls: { sni: example.com, ca_file: {{ca}} }
`

// TestCalloutToCluster: proxy_http_call names a cluster, and the call goes
// through that cluster (its load balancer over both hosts, its upstream
// TLS); a name that is no cluster (here a live host:port) is refused with
// BadArgument, which the example plugin turns into a 503.
func TestCalloutToCluster(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "http-callout", wasm.GuestCallout, wasm.ABI021)
	var hits1, hits2, hitsTLS atomic.Int64
	auth1 := serveOn(t, authServer("one", &hits1))
	auth2 := serveOn(t, authServer("two", &hits2))
	tlsSrv := httptest.NewTLSServer(authServer("tls", &hitsTLS))
	t.Cleanup(tlsSrv.Close)
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	main := serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s", r.Header.Get("x-auth-user"))
	}))
	vars := map[string]string{"rr": testutil.Addr(t), "tls": testutil.Addr(t), "unknown": testutil.Addr(t),
		"main": main, "auth1": auth1, "auth2": auth2, "authaddr": auth1,
		"authtls": strings.TrimPrefix(tlsSrv.URL, "https://"), "ca": ca}
	startProxy(t, dir, calloutConfig, vars)

	client := &http.Client{Timeout: 30 * time.Second}
	do := func(listener, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+vars[listener]+"/", nil)
		req.Header.Set("authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	tests := []struct {
		name, listener, token string
		status                int
		body                  []string // any of
	}{
		{name: "cluster allows", listener: "rr", token: "good", status: 200, body: []string{"user=one", "user=two"}},
		{name: "cluster denies", listener: "rr", token: "bad", status: 403, body: []string{"denied by the authorization service"}},
		{name: "upstream TLS cluster", listener: "tls", token: "good", status: 200, body: []string{"user=tls"}},
		{name: "host:port is not a cluster", listener: "unknown", token: "good", status: 503, body: []string{"authorization service unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 6 {
				status, body := do(tt.listener, tt.token)
				ok := false
				for _, b := range tt.body {
					ok = ok || body == b
				}
				if status != tt.status || !ok {
					t.Fatalf("got %d %q, want %d %q", status, body, tt.status, tt.body)
				}
			}
		})
	}
	// Round robin over the auth cluster's two hosts.
	if hits1.Load() == 0 || hits2.Load() == 0 {
		t.Errorf("auth hosts hit %d and %d times: the call-outs did not go through the cluster's load balancer", hits1.Load(), hits2.Load())
	}
	if hitsTLS.Load() == 0 {
		t.Error("the TLS auth host was never called")
	}
}
