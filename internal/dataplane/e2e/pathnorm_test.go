package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const pathConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /admin }, cluster: admin }
          - { cluster: public }
  - name: reject
    address: {{reject}}
    path_with_escaped_slashes: reject
    virtual_hosts: [{ name: all, routes: [{ cluster: public }] }]
  - name: redirect
    address: {{redirect}}
    path_with_escaped_slashes: unescape_and_redirect
    virtual_hosts: [{ name: all, routes: [{ cluster: public }] }]
  - name: raw
    address: {{raw}}
    normalize_path: false
    merge_slashes: false
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /admin }, cluster: admin }
          - { cluster: public }
clusters:
  - { name: admin, endpoints: [{{admin_backend}}] }
  - { name: public, endpoints: [{{public_backend}}] }
`

// rawGet sends target as the request line verbatim (net/http would clean
// it) and returns the status and body.
func rawGet(t *testing.T, addr, target string) (int, string, http.Header) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestPathNormalization: the path a route matches is the path the backend
// gets, so traversal and slash tricks cannot reach /admin through the
// public route, and a backend never sees a path the route did not match.
func TestPathNormalization(t *testing.T) {
	// Plain handlers, no ServeMux: the mux would clean (and redirect) the
	// raw paths this test must see arrive.
	echo := func(name string) string {
		return testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.RequestURI)
		}))
	}
	adminB, publicB := echo("admin"), echo("public")
	vars := map[string]string{"web": testutil.Addr(t), "reject": testutil.Addr(t), "redirect": testutil.Addr(t), "raw": testutil.Addr(t),
		"admin_backend": adminB, "public_backend": publicB}
	startProxy(t, pathConfig, vars)
	tests := []struct {
		listener, target string
		status           int
		body             string // the backend's view: "cluster URI"
		location         string
	}{
		{"web", "/public/../admin/users", 200, "admin /admin/users", ""},
		{"web", "/public/%2e%2e/admin", 200, "admin /admin", ""},
		{"web", "/public/%2E%2E/%61dmin?x=1", 200, "admin /admin?x=1", ""},
		{"web", "//admin", 200, "admin /admin", ""},
		{"web", "/./admin/./x", 200, "admin /admin/x", ""},
		{"web", "/../../etc/passwd", 200, "public /etc/passwd", ""},
		{"web", "/a%2Fb", 200, "public /a%2Fb", ""},
		{"web", "/a\\..\\admin", 400, "", ""},
		{"web", "/a%zz", 400, "", ""},
		{"reject", "/a%2fb", 400, "", ""},
		{"reject", "/a/b", 200, "public /a/b", ""},
		{"redirect", "/a%2Fb?q", 307, "", "/a/b?q"},
		// Envoy's defaults (normalization off) are kept when asked for.
		{"raw", "/public/../admin", 200, "public /public/../admin", ""},
		{"raw", "//admin", 200, "public //admin", ""},
	}
	for _, tc := range tests {
		t.Run(tc.listener+" "+tc.target, func(t *testing.T) {
			status, body, h := rawGet(t, vars[tc.listener], tc.target)
			if status != tc.status || tc.body != "" && body != tc.body || tc.location != "" && h.Get("location") != tc.location {
				t.Fatalf("GET %s on %s: %d %q location %q; want %d %q location %q",
					tc.target, tc.listener, status, body, h.Get("location"), tc.status, tc.body, tc.location)
			}
		})
	}
}

const forwardedConfig = `
admin: { address: {{admin}} }
listeners:
  - name: edge
    address: {{edge}}
    virtual_hosts: [{ name: all, routes: [{ cluster: app }] }]
  - name: behind-lb
    address: {{lb}}
    xff_num_trusted_hops: 1
    virtual_hosts: [{ name: all, routes: [{ cluster: app }] }]
    filters:
      - rbac:
          action: ALLOW
          policies:
            lb-clients:
              permissions: [{ any: true }]
              principals: [{ remote_ip: [198.51.100.0/24] }]
  - name: inner
    address: {{inner}}
    use_remote_address: false
    generate_request_id: false
    virtual_hosts: [{ name: all, routes: [{ cluster: app }] }]
clusters:
  - { name: app, endpoints: [{{app}}] }
`

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestForwardedHeaders: x-forwarded-for, x-forwarded-proto and x-request-id
// as the backend sees them, and RBAC's remote_ip on the trusted client.
func TestForwardedHeaders(t *testing.T) {
	app := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s|xfp=%s|rid=%s", r.Header.Get("x-forwarded-for"), r.Header.Get("x-forwarded-proto"), r.Header.Get("x-request-id"))
	})
	vars := map[string]string{"edge": testutil.Addr(t), "lb": testutil.Addr(t), "inner": testutil.Addr(t), "app": app.Addr}
	startProxy(t, forwardedConfig, vars)
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(addr string, hdr ...string) (int, map[string]string) {
		t.Helper()
		resp, body := testutil.Get(t, c, "http://"+addr+"/", hdr...)
		out := map[string]string{}
		for _, kv := range strings.Split(body, "|") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				out[k] = v
			}
		}
		return resp.StatusCode, out
	}
	_, h := get(vars["edge"])
	if h["xff"] != "127.0.0.1" || h["xfp"] != "http" || !uuidV4.MatchString(h["rid"]) {
		t.Errorf("edge, no headers: %v; want xff 127.0.0.1, xfp http, a generated request id", h)
	}
	_, h = get(vars["edge"], "x-forwarded-for", "1.2.3.4", "x-forwarded-proto", "https", "x-request-id", "caller-id")
	// A loopback peer is internal: its request id is kept.
	if h["xff"] != "1.2.3.4, 127.0.0.1" || h["xfp"] != "http" || h["rid"] != "caller-id" {
		t.Errorf("edge with client headers: %v; want the peer appended, proto overwritten, the internal caller's id kept", h)
	}
	// Behind one trusted proxy: the client is the entry that proxy added.
	if st, h := get(vars["lb"], "x-forwarded-for", "6.6.6.6, 198.51.100.7", "x-forwarded-proto", "https"); st != 200 || h["xfp"] != "https" {
		t.Errorf("behind-lb, trusted client 198.51.100.7: %d %v; want 200 with the trusted proto kept", st, h)
	}
	if st, _ := get(vars["lb"], "x-forwarded-for", "198.51.100.7, 6.6.6.6"); st != 403 {
		t.Errorf("behind-lb, trusted client 6.6.6.6: %d; want 403 (remote_ip is the trusted client, not a spoofed entry)", st)
	}
	if st, _ := get(vars["lb"]); st != 403 {
		t.Errorf("behind-lb without x-forwarded-for: %d; want 403 (the client is the peer, 127.0.0.1)", st)
	}
	_, h = get(vars["inner"], "x-forwarded-for", "1.2.3.4")
	if h["xff"] != "1.2.3.4" || h["rid"] != "" {
		t.Errorf("inner hop: %v; want xff untouched and no generated request id", h)
	}
}
