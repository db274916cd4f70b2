package dsl_test

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/shared/signing"

	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// A rule set through a real OmniRelay: config file, signed package file,
// trust root, listener, router and two upstream clusters on loopback.
const proxyRules = `rules:
- name: block-admin
  when: request.path.startsWith("/admin") && !request.headers.get("x-role").startsWith("ops")
  actions: [{deny: {status: 403, body: "admins only"}}]
- name: ping
  when: request.path == "/ping"
  actions: [{respond: {status: 200, body: "pong", headers: {x-answered-by: dsl}}}]
- name: tenant
  actions: [{set_header: {name: x-tenant, expr: 'request.headers.get("x-tenant", "public") + "@" + config["site"]'}}]
- name: canary
  when: request.headers.get("x-canary") == "1"
  actions: [{route_to: canary}]
- name: v1
  when: request.path.startsWith("/v1/")
  actions: [{rewrite_path: '"/v2/" + request.path.substring(4)'}]
- name: hide-server
  phase: response
  actions: [{remove_header: x-backend-secret}, {set_header: {name: x-status, expr: 'string(response.status)'}}]
`

const proxyConfig = `
admin: { address: {{admin}} }
listeners:
  - name: edge
    address: {{edge}}
    filters:
      - extension:
          name: rules
          package: rules.orx
          config: "site: eu"
          policy: fail_closed
          deadline: 50ms
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /, headers: [{ name: ` + dsl.RouteToHeader + `, exact: canary }] }
            cluster: canary
          - { match: { path_prefix: / }, cluster: main }
clusters:
  - { name: main, endpoints: [{{main}}] }
  - { name: canary, endpoints: [{{canary}}] }
`

// upstream answers with its name, the path and the x-tenant header it saw.
func upstream(t *testing.T, name string) string {
	t.Helper()
	return testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-backend-secret", "s3cr3t")
		fmt.Fprintf(w, "%s %s tenant=%s", name, r.URL.RequestURI(), r.Header.Get("x-tenant"))
	}))
}

func TestThroughProxy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.orx"), signedPackage(t, proxyRules), 0o644); err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, key().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	edge := testutil.Addr(t)
	cfg := strings.NewReplacer("{{admin}}", testutil.Addr(t), "{{edge}}", edge,
		"{{main}}", upstream(t, "main"), "{{canary}}", upstream(t, "canary")).Replace(proxyConfig)
	proxytest.StartIn(t, dir, cfg, func(o *app.Options) {
		o.ExtensionTrustRoot, o.DrainTimeout, o.PollInterval = trust, time.Second, time.Hour
	})

	tests := []struct {
		name    string
		path    string
		hdr     map[string]string
		status  int
		body    string
		headers map[string]string // response headers; "" = absent
	}{
		{name: "deny", path: "/admin/users", status: 403, body: "admins only"},
		{name: "allowed admin", path: "/admin/users", hdr: map[string]string{"x-role": "ops-oncall"}, status: 200, body: "main /admin/users tenant=public@eu"},
		{name: "respond", path: "/ping", status: 200, body: "pong", headers: map[string]string{"x-answered-by": "dsl"}},
		{name: "tenant header from expression", path: "/a", hdr: map[string]string{"x-tenant": "acme"}, status: 200, body: "main /a tenant=acme@eu",
			headers: map[string]string{"x-backend-secret": "", "x-status": "200"}},
		{name: "route to canary", path: "/a", hdr: map[string]string{"x-canary": "1"}, status: 200, body: "canary /a tenant=public@eu"},
		{name: "client cannot pick the route", path: "/a", hdr: map[string]string{dsl.RouteToHeader: "canary"}, status: 200, body: "main /a tenant=public@eu"},
		{name: "rewrite keeps query", path: "/v1/items?id=3", status: 200, body: "main /v2/items?id=3 tenant=public@eu"},
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", "http://"+edge+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || strings.TrimSpace(string(b)) != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, tt.status, tt.body)
			}
			for k, want := range tt.headers {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
