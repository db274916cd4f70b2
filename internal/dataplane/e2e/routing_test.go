package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// echoed is what echoBackend reports about the request it received.
type echoed struct {
	Backend string            `json:"backend"`
	Method  string            `json:"method"`
	URI     string            `json:"uri"`
	Host    string            `json:"host"`
	Proto   string            `json:"proto"`
	Headers map[string]string `json:"headers"`
}

// echoBackend answers with a JSON description of the request, so that tests
// can check what the proxy forwarded (path rewrites, Host, added headers).
// A request carrying x-set-response-header: name=value gets that header back.
func echoBackend(t testing.TB, name string) *backend {
	return startBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		e := echoed{Backend: name, Method: r.Method, URI: r.URL.RequestURI(), Host: r.Host, Proto: r.Proto,
			Headers: map[string]string{}}
		for k, v := range r.Header {
			e.Headers[strings.ToLower(k)] = strings.Join(v, ",")
		}
		if kv := r.Header.Get("x-set-response-header"); kv != "" {
			k, v, _ := strings.Cut(kv, "=")
			w.Header().Set(k, v)
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	})
}

func decodeEcho(t testing.TB, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return e
}

// sendReq sends a request with optional body and headers ("host" sets the
// Host) and returns the response with its body read.
func sendReq(t testing.TB, c *http.Client, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequest(method, url, rd)
	} else {
		req, err = http.NewRequest(method, url, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, sb.String()
}

func noRedirectClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

const routingHostsConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: exact
        domains: ["shop.example.com"]
        routes: [{ direct_response: { status: 200, body: "exact" } }]
      - name: with-port
        domains: ["shop.example.com:8080"]
        routes: [{ direct_response: { status: 200, body: "with-port" } }]
      - name: suffix
        domains: ["*.example.com"]
        routes: [{ direct_response: { status: 200, body: "suffix" } }]
      - name: longer-suffix
        domains: ["*.api.example.com"]
        routes: [{ direct_response: { status: 200, body: "longer-suffix" } }]
      - name: prefix
        domains: ["www.*"]
        routes: [{ direct_response: { status: 200, body: "prefix" } }]
      - name: fallback
        domains: ["*"]
        routes: [{ direct_response: { status: 200, body: "fallback" } }]
  - name: strict
    address: {{strict}}
    virtual_hosts:
      - name: only
        domains: ["only.example.com"]
        routes: [{ direct_response: { status: 200, body: "only" } }]
clusters: []
`

// TestRoutingVirtualHosts proves how a request's Host picks a virtual host:
// exact names (case-insensitive, with or without a port), the longest
// "*.suffix", then "prefix.*", then "*"; and 404 without a match.
func TestRoutingVirtualHosts(t *testing.T) {
	web, strict := testutil.Addr(t), testutil.Addr(t)
	startProxy(t, routingHostsConfig, map[string]string{"web": web, "strict": strict})
	c := &http.Client{Timeout: 5 * time.Second}
	tests := []struct {
		name, addr, host string
		status           int
		want             string
	}{
		{name: "exact", addr: web, host: "shop.example.com", status: 200, want: "exact"},
		{name: "exact is case-insensitive", addr: web, host: "SHOP.Example.COM", status: 200, want: "exact"},
		{name: "exact with the port named in domains", addr: web, host: "shop.example.com:8080", status: 200, want: "with-port"},
		{name: "exact with another port", addr: web, host: "shop.example.com:9999", status: 200, want: "exact"},
		{name: "suffix wildcard", addr: web, host: "cart.example.com", status: 200, want: "suffix"},
		{name: "suffix wildcard with port", addr: web, host: "cart.example.com:1234", status: 200, want: "suffix"},
		{name: "longest suffix wins", addr: web, host: "v1.api.example.com", status: 200, want: "longer-suffix"},
		{name: "suffix needs a label before it", addr: web, host: "example.com", status: 200, want: "fallback"},
		{name: "prefix wildcard", addr: web, host: "www.other.org", status: 200, want: "prefix"},
		{name: "fallback", addr: web, host: "unknown.test", status: 200, want: "fallback"},
		{name: "ip literal falls back", addr: web, host: web, status: 200, want: "fallback"},
		{name: "no virtual host is 404", addr: strict, host: "other.example.com", status: 404},
		{name: "strict listener exact", addr: strict, host: "only.example.com", status: 200, want: "only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := testutil.Get(t, c, "http://"+tc.addr+"/", "host", tc.host)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
			}
			if tc.want != "" && body != tc.want {
				t.Fatalf("virtual host %q, want %q", body, tc.want)
			}
		})
	}
}

const routingMatchConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path: /exact }
            direct_response: { status: 200, body: "exact" }
          - match: { path_regex: "/users/[0-9]+" }
            direct_response: { status: 200, body: "regex" }
          - match: { path_prefix: /api/, grpc: true }
            cluster: grpc
          - match: { path_prefix: /api/, methods: [POST, PUT] }
            direct_response: { status: 200, body: "api-write" }
          - match: { path_prefix: /api/, headers: { x-canary: "true" } }
            direct_response: { status: 200, body: "api-canary" }
          - match:
              path_prefix: /api/
              headers:
                - { name: x-tenant, prefix: acme- }
                - { name: x-debug, present: true, invert: true }
            direct_response: { status: 200, body: "api-tenant" }
          - match:
              path_prefix: /api/
              headers:
                - { name: x-env, suffix: "-prod" }
                - { name: x-zone, contains: east }
                - { name: x-id, regex: "[a-f]+" }
            direct_response: { status: 200, body: "api-multi" }
          - match: { path_prefix: /api/, query: { version: "2", debug: "" } }
            direct_response: { status: 200, body: "api-v2-debug" }
          - match: { path_prefix: /api/, query: { version: "2" } }
            direct_response: { status: 200, body: "api-v2" }
          - match: { path_prefix: /api/ }
            direct_response: { status: 200, body: "api" }
          - match: { path_prefix: /static }
            direct_response: { status: 200, body: "static" }
clusters:
  - name: grpc
    endpoints: [{{grpc}}]
`

// TestRoutingMatchers proves path (exact, prefix, regex), method, header
// (map and list forms with every operator), query and gRPC matching, that
// the first matching route wins, and 404 when none does.
func TestRoutingMatchers(t *testing.T) {
	g := startBackend(t, "grpc", nil)
	web := testutil.Addr(t)
	startProxy(t, routingMatchConfig, map[string]string{"web": web, "grpc": g.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	tests := []struct {
		name, method, path string
		hdr                []string
		status             int
		want               string
	}{
		{name: "exact path", path: "/exact", status: 200, want: "exact"},
		{name: "exact path ignores the query", path: "/exact?a=1", status: 200, want: "exact"},
		{name: "exact path is not a prefix", path: "/exact/more", status: 404},
		{name: "exact path is case-sensitive", path: "/EXACT", status: 404},
		{name: "regex", path: "/users/42", status: 200, want: "regex"},
		{name: "regex matches the whole path", path: "/users/42/orders", status: 404},
		{name: "regex rejects", path: "/users/4x", status: 404},
		{name: "method", method: "PUT", path: "/api/x", status: 200, want: "api-write"},
		{name: "first match wins", method: "POST", path: "/api/x", hdr: []string{"x-canary", "true"}, status: 200, want: "api-write"},
		{name: "header map exact", path: "/api/x", hdr: []string{"x-canary", "true"}, status: 200, want: "api-canary"},
		{name: "header map exact mismatch", path: "/api/x", hdr: []string{"x-canary", "yes"}, status: 200, want: "api"},
		{name: "header list prefix and absent", path: "/api/x", hdr: []string{"x-tenant", "acme-7"}, status: 200, want: "api-tenant"},
		{name: "header list inverted presence", path: "/api/x", hdr: []string{"x-tenant", "acme-7", "x-debug", "1"}, status: 200, want: "api"},
		{name: "header list prefix mismatch", path: "/api/x", hdr: []string{"x-tenant", "other-7"}, status: 200, want: "api"},
		{name: "header suffix contains regex", path: "/api/x", hdr: []string{"x-env", "eu-prod", "x-zone", "us-east-1", "x-id", "beef"}, status: 200, want: "api-multi"},
		{name: "header regex is anchored", path: "/api/x", hdr: []string{"x-env", "eu-prod", "x-zone", "us-east-1", "x-id", "beefy"}, status: 200, want: "api"},
		{name: "query", path: "/api/x?version=2", status: 200, want: "api-v2"},
		{name: "query among others", path: "/api/x?a=1&version=2&b", status: 200, want: "api-v2"},
		{name: "query empty value", path: "/api/x?debug=&version=2", status: 200, want: "api-v2-debug"},
		{name: "query value is exact", path: "/api/x?version=20", status: 200, want: "api"},
		{name: "grpc content type", method: "POST", path: "/api/pkg.Svc/Call", hdr: []string{"content-type", "application/grpc"}, status: 200, want: "grpc POST /api/pkg.Svc/Call"},
		{name: "grpc+proto content type", path: "/api/pkg.Svc/Call", hdr: []string{"content-type", "application/grpc+proto"}, status: 200, want: "grpc GET /api/pkg.Svc/Call"},
		{name: "not grpc", path: "/api/pkg.Svc/Call", hdr: []string{"content-type", "application/json"}, status: 200, want: "api"},
		{name: "prefix", path: "/static/css/a.css", status: 200, want: "static"},
		{name: "prefix is a string prefix", path: "/staticfiles", status: 200, want: "static"},
		{name: "no route", path: "/nothing", status: 404},
		{name: "no route for root", path: "/", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			body := ""
			if method == "POST" || method == "PUT" {
				body = "x"
			}
			resp, got := sendReq(t, c, method, "http://"+web+tc.path, body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, got)
			}
			if tc.want != "" && !strings.HasPrefix(got, tc.want) {
				t.Fatalf("body %q, want %q", got, tc.want)
			}
		})
	}
}

const routingActionsConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /split }
            weighted_clusters: [{ cluster: a, weight: 60 }, { cluster: b, weight: 30 }, { cluster: c, weight: 10 }]
          - match: { path_prefix: /api/v1/ }
            cluster: a
            prefix_rewrite: /v2/
          - match: { path_prefix: /strip/ }
            cluster: a
            prefix_rewrite: /
          - match: { path: /exact-rewrite }
            cluster: a
            prefix_rewrite: /rewritten
          - match: { path_prefix: /host }
            cluster: a
            host_rewrite: internal.example
          - match: { path_prefix: /headers }
            cluster: a
            request_headers_add: { x-route: headers, x-multi: added }
            request_headers_remove: [x-secret, Cookie]
            response_headers_add: { cache-control: no-store }
            response_headers_remove: [x-internal]
          - match: { path_prefix: /direct/ok }
            direct_response: { status: 200, body: "ok\n" }
            response_headers_add: { x-direct: "yes" }
          - match: { path_prefix: /direct/unavailable }
            direct_response: { status: 503, body: "maintenance" }
          - match: { path_prefix: /direct/empty }
            direct_response: { status: 204 }
          - match: { path_prefix: /old/ }
            redirect: { prefix_rewrite: /new/, code: 308 }
          - match: { path_prefix: /blog }
            redirect: { host: blog.example.com, https: true }
          - match: { path_prefix: /moved }
            redirect: { path: /landing, code: 302 }
          - match: { path_prefix: /see }
            redirect: { path: "/other?from=see", code: 303 }
          - match: { path_prefix: /temp }
            redirect: { host: temp.example.com, code: 307 }
          - match: { path_prefix: /secure }
            redirect: { https: true }
          - match: { path_prefix: /plain }
            redirect: { scheme: http, host: plain.example.com }
          - match: { path_prefix: /strip }
            redirect: { path: /stripped, strip_query: true }
clusters:
  - { name: a, endpoints: [{{a}}] }
  - { name: b, endpoints: [{{b}}] }
  - { name: c, endpoints: [{{c}}] }
`

// TestRoutingActions proves weighted splits, path and host rewrites seen by
// the backend, route-level header mutations, direct responses and redirects.
func TestRoutingActions(t *testing.T) {
	a, b, cb := echoBackend(t, "a"), echoBackend(t, "b"), echoBackend(t, "c")
	web := testutil.Addr(t)
	startProxy(t, routingActionsConfig, map[string]string{"web": web, "a": a.Addr, "b": b.Addr, "c": cb.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web

	t.Run("weighted clusters", func(t *testing.T) {
		const n = 2000
		counts := map[string]int{}
		for range n {
			resp, body := testutil.Get(t, c, base+"/split")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %q", resp.StatusCode, body)
			}
			counts[resp.Header.Get("x-backend")]++
		}
		// Binomial standard deviations are about 22, 20 and 13; allow ~4.
		want := map[string][2]int{"a": {1110, 1290}, "b": {520, 680}, "c": {145, 255}}
		for name, r := range want {
			if counts[name] < r[0] || counts[name] > r[1] {
				t.Fatalf("60/30/10 split off: %v", counts)
			}
		}
	})

	rewrites := []struct{ name, path, want string }{
		{name: "prefix rewrite", path: "/api/v1/users?id=7", want: "/v2/users?id=7"},
		{name: "prefix rewrite of the bare prefix", path: "/api/v1/", want: "/v2/"},
		{name: "prefix rewrite to root", path: "/strip/a/b", want: "/a/b"},
		{name: "prefix rewrite to root of the bare prefix", path: "/strip/", want: "/"},
		{name: "exact path rewrite keeps the query", path: "/exact-rewrite?q=1", want: "/rewritten?q=1"},
	}
	for _, tc := range rewrites {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := testutil.Get(t, c, base+tc.path)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %q", resp.StatusCode, body)
			}
			if e := decodeEcho(t, body); e.URI != tc.want {
				t.Fatalf("backend saw %q, want %q", e.URI, tc.want)
			}
		})
	}

	t.Run("host rewrite", func(t *testing.T) {
		_, body := testutil.Get(t, c, base+"/host", "host", "shop.example.com")
		if e := decodeEcho(t, body); e.Host != "internal.example" {
			t.Fatalf("backend saw Host %q", e.Host)
		}
		// Without a rewrite the client's Host goes through untouched.
		_, body = testutil.Get(t, c, base+"/api/v1/x", "host", "shop.example.com")
		if e := decodeEcho(t, body); e.Host != "shop.example.com" {
			t.Fatalf("backend saw Host %q", e.Host)
		}
	})

	t.Run("route header mutations", func(t *testing.T) {
		resp, body := testutil.Get(t, c, base+"/headers", "x-secret", "s3cr3t", "cookie", "a=b", "x-multi", "client",
			"x-set-response-header", "x-internal=leak", "x-keep", "kept")
		e := decodeEcho(t, body)
		if e.Headers["x-route"] != "headers" {
			t.Errorf("x-route not added: %v", e.Headers)
		}
		if e.Headers["x-multi"] != "client,added" {
			t.Errorf("x-multi = %q, want the client's value with the added one appended", e.Headers["x-multi"])
		}
		if _, ok := e.Headers["x-secret"]; ok {
			t.Errorf("x-secret not removed: %v", e.Headers)
		}
		if _, ok := e.Headers["cookie"]; ok {
			t.Errorf("cookie not removed (config wrote Cookie): %v", e.Headers)
		}
		if e.Headers["x-keep"] != "kept" {
			t.Errorf("x-keep lost: %v", e.Headers)
		}
		if resp.Header.Get("cache-control") != "no-store" {
			t.Errorf("response header not added: %v", resp.Header)
		}
		if v := resp.Header.Get("x-internal"); v != "" {
			t.Errorf("response header x-internal not removed: %q", v)
		}
	})

	directs := []struct {
		name, path string
		status     int
		body       string
		hdr        string
	}{
		{name: "ok with route header", path: "/direct/ok", status: 200, body: "ok\n", hdr: "yes"},
		{name: "error status", path: "/direct/unavailable", status: 503, body: "maintenance"},
		{name: "no body", path: "/direct/empty", status: 204},
	}
	for _, tc := range directs {
		t.Run("direct response "+tc.name, func(t *testing.T) {
			resp, body := testutil.Get(t, c, base+tc.path)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if got := resp.Header.Get("x-direct"); got != tc.hdr {
				t.Fatalf("x-direct = %q, want %q", got, tc.hdr)
			}
		})
	}

	nr := noRedirectClient()
	redirects := []struct {
		name, path, host string
		status           int
		location         string
	}{
		{name: "308 prefix rewrite keeps the query", path: "/old/a/b?q=1", host: "shop.example.com", status: 308,
			location: "http://shop.example.com/new/a/b?q=1"},
		{name: "301 https and host", path: "/blog/post", host: "shop.example.com", status: 301,
			location: "https://blog.example.com/blog/post"},
		{name: "302 path", path: "/moved/x?q=1", host: "shop.example.com", status: 302,
			location: "http://shop.example.com/landing?q=1"},
		{name: "303 path with its own query", path: "/see?q=1", host: "shop.example.com", status: 303,
			location: "http://shop.example.com/other?from=see"},
		{name: "307 host drops the request port", path: "/temp/x", host: "shop.example.com:8080", status: 307,
			location: "http://temp.example.com/temp/x"},
		{name: "https keeps a non-default port", path: "/secure/x", host: "shop.example.com:8443", status: 301,
			location: "https://shop.example.com:8443/secure/x"},
		{name: "https without a port", path: "/secure", host: "shop.example.com", status: 301,
			location: "https://shop.example.com/secure"},
		{name: "scheme and host", path: "/plain?x=y", host: "shop.example.com", status: 301,
			location: "http://plain.example.com/plain?x=y"},
		{name: "strip_query", path: "/strip?secret=1", host: "shop.example.com", status: 301,
			location: "http://shop.example.com/stripped"},
	}
	for _, tc := range redirects {
		t.Run("redirect "+tc.name, func(t *testing.T) {
			resp, body := testutil.Get(t, nr, base+tc.path, "host", tc.host)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
			}
			if loc := resp.Header.Get("location"); loc != tc.location {
				t.Fatalf("location %q, want %q", loc, tc.location)
			}
		})
	}
	if n := a.Hits.Load() + b.Hits.Load() + cb.Hits.Load(); n == 0 {
		t.Fatal("no request reached a backend")
	}
}
