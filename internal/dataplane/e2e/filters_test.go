package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Built-in HTTP filters configured the way docs/config.md#filters describes,
// through the real proxy.

const filtersConfig = `
admin: { address: {{admin}} }
listeners:
  - name: headers
    address: {{headers}}
    filters:
      - headers:
          request_add: { x-edge: omnirelay }
          request_remove: [x-internal-user]
          response_add: { x-served-by: omnirelay }
          response_remove: [x-backend-secret]
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
  - name: limited
    address: {{limited}}
    access_log: { path: {{log}} }
    filters:
      - local_rate_limit: { max_tokens: 3, fill_interval: 1h }
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /own }
            cluster: echo
            local_rate_limit: { max_tokens: 2, fill_interval: 1h, status: 503 }
          - match: { path_prefix: /refill }
            cluster: echo
            local_rate_limit: { max_tokens: 1, fill_interval: 100ms }
          - { match: { path_prefix: / }, cluster: echo }
  - name: route-only-limit
    address: {{routeonly}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /limited }
            cluster: echo
            local_rate_limit: { max_tokens: 1, fill_interval: 1h }
          - { match: { path_prefix: / }, cluster: echo }
  - name: aborted
    address: {{aborted}}
    access_log: { path: {{log}} }
    filters:
      - fault: { abort: { status: 418 } }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
  - name: never-aborted
    address: {{neveraborted}}
    filters:
      - fault: { abort: { status: 418, percent: 0 } }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
  - name: delayed
    address: {{delayed}}
    access_log: { path: {{log}} }
    filters:
      - fault: { delay: { fixed: 300ms } }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
  - name: cors
    address: {{cors}}
    filters:
      - cors:
          allow_origins: ["https://shop.example.com"]
          allow_methods: [GET, POST]
          allow_headers: [content-type, x-token]
          expose_headers: [x-request-id]
          max_age: 1h
          allow_credentials: true
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
clusters:
  - { name: echo, endpoints: [{{echo}}] }
`

// filterEcho answers with the request headers it received as JSON and sets a
// header the proxy is told to remove.
func filterEcho(t testing.TB) *backend {
	return startBackend(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-backend-secret", "s3cret")
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "headers": r.Header})
	})
}

func startFiltersProxy(t *testing.T) (*proxy, map[string]string, *backend) {
	t.Helper()
	echo := filterEcho(t)
	vars := map[string]string{"echo": echo.Addr, "log": filepath.Join(t.TempDir(), "access.log")}
	for _, l := range []string{"headers", "limited", "routeonly", "aborted", "neveraborted", "delayed", "cors"} {
		vars[l] = testutil.Addr(t)
	}
	return startProxy(t, filtersConfig, vars), vars, echo
}

func filterDo(t testing.TB, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestFiltersHeaderMutation(t *testing.T) {
	_, vars, _ := startFiltersProxy(t)
	resp, body := filterDo(t, "GET", "http://"+vars["headers"]+"/h", "x-internal-user", "mallory", "x-edge", "client-set")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var got struct {
		Headers http.Header `json:"headers"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("echo body %q: %v", body, err)
	}
	if v := got.Headers.Values("X-Internal-User"); len(v) != 0 {
		t.Fatalf("request_remove: upstream saw x-internal-user %v", v)
	}
	// request_add appends to a value the client sent.
	if v := got.Headers.Values("X-Edge"); !containsAll(v, "client-set", "omnirelay") {
		t.Fatalf("request_add: upstream saw x-edge %v, want the client's value and omnirelay", v)
	}
	if v := resp.Header.Get("x-served-by"); v != "omnirelay" {
		t.Fatalf("response_add: x-served-by %q", v)
	}
	if v := resp.Header.Values("x-backend-secret"); len(v) != 0 {
		t.Fatalf("response_remove: client saw x-backend-secret %v", v)
	}
}

// expectFlags checks the response_flags of every access-log record of a
// listener, by status.
func expectFlags(t testing.TB, path, listener string, byStatus map[int]string) {
	t.Helper()
	var recs []accessRecord
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "access-log records of "+listener, testutil.Bool(func() bool {
		recs = recs[:0]
		for _, r := range readAccessLog(t, path) {
			if r.Listener == listener {
				recs = append(recs, r)
			}
		}
		return len(recs) > 0
	}))
	for _, r := range recs {
		want, ok := byStatus[r.Status]
		if !ok || r.ResponseFlags != want {
			t.Fatalf("%s %s: status %d response_flags %q, want %q", listener, r.Path, r.Status, r.ResponseFlags, want)
		}
	}
}

func containsAll(have []string, want ...string) bool {
	joined := "," + strings.Join(have, ",") + ","
	for _, w := range want {
		if !strings.Contains(joined, ","+w+",") && !strings.Contains(joined, ", "+w+",") {
			return false
		}
	}
	return true
}

func TestFiltersLocalRateLimit(t *testing.T) {
	p, vars, echo := startFiltersProxy(t)
	base := "http://" + vars["limited"]
	expect := func(t *testing.T, path string, want int) {
		t.Helper()
		resp, body := filterDo(t, "GET", base+path)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: status %d, want %d (%q)", path, resp.StatusCode, want, body)
		}
		limited := resp.Header.Get("x-omnirelay-ratelimited") == "true"
		if limited != (want != 200) {
			t.Fatalf("GET %s: status %d with x-omnirelay-ratelimited %q", path, resp.StatusCode, resp.Header.Get("x-omnirelay-ratelimited"))
		}
		if want != 200 && body != "local_rate_limited\n" {
			t.Fatalf("GET %s: limited body %q", path, body)
		}
	}

	// The listener's bucket: a burst of max_tokens passes, then 429.
	for range 3 {
		expect(t, "/", 200)
	}
	hits := echo.Hits.Load()
	expect(t, "/", 429)
	expect(t, "/other", 429)
	if echo.Hits.Load() != hits {
		t.Fatal("a limited request reached the upstream")
	}
	// A route with its own bucket is not charged to (nor blocked by) the
	// listener's, and answers with its own status.
	expect(t, "/own", 200)
	expect(t, "/own", 200)
	expect(t, "/own", 503)
	expect(t, "/", 429)
	// Tokens come back every fill_interval.
	expect(t, "/refill", 200)
	expect(t, "/refill", 429)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "bucket refilled", testutil.Bool(func() bool {
		resp, _ := filterDo(t, "GET", base+"/refill")
		return resp.StatusCode == 200
	}))
	if got := opsMetric(t, p, "omnirelay_downstream_requests_total", "listener", "limited", "code_class", "4xx"); got < 3 {
		t.Fatalf("4xx count for limited requests %v", got)
	}
	expectFlags(t, vars["log"], "limited", map[int]string{200: "", 429: "RL", 503: "RL"})

	// A route limit on a listener that lists no rate limit filter still
	// limits (translate adds a bucketless listener filter).
	only := "http://" + vars["routeonly"]
	for i, want := range []int{200, 429} {
		if resp, _ := filterDo(t, "GET", only+"/limited"); resp.StatusCode != want {
			t.Fatalf("route-only limit, request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	for range 5 {
		if resp, _ := filterDo(t, "GET", only+"/free"); resp.StatusCode != 200 {
			t.Fatalf("route without a limit limited: %d", resp.StatusCode)
		}
	}
}

func TestFiltersFault(t *testing.T) {
	p, vars, echo := startFiltersProxy(t)
	t.Run("abort 100%", func(t *testing.T) {
		hits := echo.Hits.Load()
		for range 5 {
			if resp, body := filterDo(t, "GET", "http://"+vars["aborted"]+"/"); resp.StatusCode != 418 {
				t.Fatalf("status %d, want 418 (%q)", resp.StatusCode, body)
			}
		}
		if echo.Hits.Load() != hits {
			t.Fatal("an aborted request reached the upstream")
		}
		if got := opsMetric(t, p, "omnirelay_filter_events_total", "event", "fault_aborts_injected"); got != 5 {
			t.Fatalf("fault_aborts_injected = %v, want 5", got)
		}
		expectFlags(t, vars["log"], "aborted", map[int]string{418: "FI"})
	})
	t.Run("abort 0%", func(t *testing.T) {
		for range 5 {
			if resp, _ := filterDo(t, "GET", "http://"+vars["neveraborted"]+"/"); resp.StatusCode != 200 {
				t.Fatalf("status %d with abort percent 0", resp.StatusCode)
			}
		}
	})
	t.Run("fixed delay", func(t *testing.T) {
		start := time.Now()
		resp, _ := filterDo(t, "GET", "http://"+vars["delayed"]+"/")
		d := time.Since(start)
		if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "echo" {
			t.Fatalf("delayed request: status %d", resp.StatusCode)
		}
		if d < 300*time.Millisecond || d > 2*time.Second {
			t.Fatalf("delayed request took %v, want about 300ms", d)
		}
		expectFlags(t, vars["log"], "delayed", map[int]string{200: "DI"})
		// The delay applies per request: an undelayed listener is fast.
		start = time.Now()
		filterDo(t, "GET", "http://"+vars["neveraborted"]+"/")
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Fatalf("request without a fault took %v", d)
		}
	})
}

func TestFiltersCORS(t *testing.T) {
	_, vars, echo := startFiltersProxy(t)
	url := "http://" + vars["cors"] + "/api"
	const allowed, other = "https://shop.example.com", "https://evil.example.com"

	t.Run("preflight from an allowed origin", func(t *testing.T) {
		hits := echo.Hits.Load()
		resp, _ := filterDo(t, "OPTIONS", url, "origin", allowed, "access-control-request-method", "POST",
			"access-control-request-headers", "x-token")
		want := map[string]string{
			"access-control-allow-origin":      allowed,
			"access-control-allow-credentials": "true",
			"access-control-max-age":           "3600",
		}
		if resp.StatusCode != 200 {
			t.Fatalf("preflight status %d", resp.StatusCode)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Fatalf("%s = %q, want %q (headers %v)", k, got, v, resp.Header)
			}
		}
		if m := resp.Header.Get("access-control-allow-methods"); !strings.Contains(m, "POST") {
			t.Fatalf("allow-methods %q", m)
		}
		if h := strings.ToLower(resp.Header.Get("access-control-allow-headers")); !strings.Contains(h, "x-token") {
			t.Fatalf("allow-headers %q", h)
		}
		if echo.Hits.Load() != hits {
			t.Fatal("an allowed preflight was forwarded upstream instead of answered locally")
		}
	})
	t.Run("preflight from another origin", func(t *testing.T) {
		resp, _ := filterDo(t, "OPTIONS", url, "origin", other, "access-control-request-method", "POST")
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Fatalf("disallowed origin got %s: %v", k, resp.Header.Values(k))
			}
		}
	})
	t.Run("simple request", func(t *testing.T) {
		resp, _ := filterDo(t, "GET", url, "origin", allowed)
		if resp.StatusCode != 200 || resp.Header.Get("access-control-allow-origin") != allowed ||
			resp.Header.Get("access-control-expose-headers") != "x-request-id" {
			t.Fatalf("allowed origin GET: %d %v", resp.StatusCode, resp.Header)
		}
		resp, _ = filterDo(t, "GET", url, "origin", other)
		if resp.StatusCode != 200 || resp.Header.Get("access-control-allow-origin") != "" {
			t.Fatalf("other origin GET: %d allow-origin %q", resp.StatusCode, resp.Header.Get("access-control-allow-origin"))
		}
		resp, _ = filterDo(t, "GET", url)
		if resp.StatusCode != 200 || resp.Header.Get("access-control-allow-origin") != "" {
			t.Fatalf("GET without origin: %d allow-origin %q", resp.StatusCode, resp.Header.Get("access-control-allow-origin"))
		}
	})
}
