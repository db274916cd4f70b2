package wasm_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// The upstream Proxy-Wasm Go SDK's examples, each run in a real OmniRelay
// with the plugin configuration of its envoy.yaml, asserting what its
// README says Envoy does. docs/wasm.md has the table of the results.

// logBuf collects the proxy's log (the guests' proxy_log lines among it).
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many lines contain all of subs.
func (l *logBuf) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// waitFor waits until at least n lines contain all of subs.
func (l *logBuf) waitFor(t *testing.T, n int, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for l.count(subs...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d lines with %q, want %d; log:\n%s", l.count(subs...), subs, n, l.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sdkProxy is a running OmniRelay with SDK example plugins.
type sdkProxy struct {
	addr map[string]string
	log  *logBuf
}

// startSDKProxy writes the packages (package file name -> SDK example),
// signed and packed with the ABI the docs' example uses, and starts a proxy
// on cfg, whose {{name}} placeholders are replaced by vars, then by a free
// 127.0.0.1 address for each name in listen.
func startSDKProxy(t *testing.T, cfg string, pkgs map[string]string, vars map[string]string, listen ...string) *sdkProxy {
	t.Helper()
	dir := t.TempDir()
	for file, example := range pkgs {
		b, err := extpkg.Pack(extpkg.Manifest{Name: strings.ReplaceAll(example, "/", "-"), Version: "1.0.0", Kind: extpkg.KindWasm, ABI: wasm.ABI021}, sdkModule(t, example))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = extpkg.Sign(b, signing.NewSigner(key())); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, key().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	sp := &sdkProxy{addr: map[string]string{}, log: &logBuf{}}
	var repl []string
	for k, v := range vars {
		repl = append(repl, "{{"+k+"}}", v)
	}
	admin := testutil.Addr(t)
	sp.addr["admin"] = admin
	for _, n := range listen {
		sp.addr[n] = testutil.Addr(t)
		repl = append(repl, "{{"+n+"}}", sp.addr[n])
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", sp.log)
		}
	})
	proxytest.StartIn(t, dir, withDeadline(strings.NewReplacer(repl...).Replace(cfg), raceDeadline), func(o *app.Options) {
		o.ExtensionTrustRoot, o.AdminAddress, o.DrainTimeout, o.PollInterval = trust, admin, time.Second, time.Hour
		o.Log = slog.New(slog.NewTextHandler(sp.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return sp
}

// withDeadline gives every extension of cfg that has none the deadline d
// (none when d is empty).
func withDeadline(cfg, d string) string {
	if d == "" {
		return cfg
	}
	lines := strings.Split(cfg, "\n")
	var out []string
	for _, l := range lines {
		i := strings.Index(l, "package: ")
		if i < 0 || strings.Contains(l, "deadline:") || strings.Contains(cfg, "deadline:") {
			out = append(out, l)
			continue
		}
		if strings.Contains(l, "{") { // flow style: { name: x, package: y }
			out = append(out, l[:i]+"deadline: "+d+", "+l[i:])
			continue
		}
		out = append(out, l, l[:i]+"deadline: "+d) // block style
	}
	return strings.Join(out, "\n")
}

// do sends a request and returns the response with its body read.
func (sp *sdkProxy) do(t *testing.T, listener, method, path string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+sp.addr[listener]+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	// One connection per request: a TCP listener's plugin sees each end.
	resp, err := (&http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(b)
}

func wantResponse(t *testing.T, resp *http.Response, body string, status int, wantBody string) {
	t.Helper()
	if resp.StatusCode != status || (wantBody != "" && body != wantBody) {
		t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, status, wantBody)
	}
}

// TestSDKExamplesBuild checks that the vendored SDK has the 17 examples
// the compatibility table lists, and that each builds with the standard
// toolchain.
func TestSDKExamplesBuild(t *testing.T) {
	examples, pkgs := sdkExamples(t)
	if len(examples) != 17 {
		t.Fatalf("SDK examples = %d %v, want 17", len(examples), examples)
	}
	for _, n := range pkgs {
		if b := sdkModule(t, n); len(b) < 1<<20 {
			t.Errorf("%s: module of %d bytes", n, len(b))
		}
	}
}

func TestSDKHelloworld(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: helloworld, package: helloworld.orx }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
`, map[string]string{"helloworld.orx": "helloworld"}, nil, "main")
	sp.log.waitFor(t, 1, "OnPluginStart from Go!")
	// Ticks every second (the README's lines are of an older version).
	sp.log.waitFor(t, 2, "OnTick called")
	sp.log.waitFor(t, 2, "random value: ")
	resp, body := sp.do(t, "main", "GET", "/", nil, "")
	wantResponse(t, resp, body, 200, "example body\n")
}

func TestSDKHTTPHeaders(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension:
          name: http_headers
          package: http_headers.orx
          config: |
            {
              "header": "x-wasm-header",
              "value": "demo-wasm"
            }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: web_service }] }]
  - name: staticreply
    address: {{static}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
clusters:
  - { name: web_service, endpoints: [{{static}}] }
`, map[string]string{"http_headers.orx": "http_headers"}, nil, "main", "static")
	resp, body := sp.do(t, "main", "GET", "/uuid", nil, "")
	wantResponse(t, resp, body, 200, "example body\n")
	if got := resp.Header.Get("x-wasm-header"); got != "demo-wasm" {
		t.Errorf("x-wasm-header = %q, want demo-wasm", got)
	}
	if got := resp.Header.Get("x-proxy-wasm-go-sdk-example"); got != "http_headers" {
		t.Errorf("x-proxy-wasm-go-sdk-example = %q, want http_headers", got)
	}
	sp.log.waitFor(t, 1, "header from config: x-wasm-header = demo-wasm")
	sp.log.waitFor(t, 1, "request header --> :path: /uuid")
	sp.log.waitFor(t, 1, "request header --> test: best")
	sp.log.waitFor(t, 1, "response header <-- :status: 200")
	sp.log.waitFor(t, 1, " finished")
}

func TestSDKJSONValidation(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension:
          name: json_validation
          package: json_validation.orx
          config: |
            {
              "requiredKeys": ["id", "token"]
            }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "hello from the server\n" } }] }]
`, map[string]string{"json_validation.orx": "json_validation"}, nil, "main")
	ct := map[string]string{"content-type": "application/json"}
	resp, body := sp.do(t, "main", "POST", "/", ct, `{"id": "xxx", "token": "xxx"}`)
	wantResponse(t, resp, body, 200, "hello from the server\n")
	resp, body = sp.do(t, "main", "POST", "/", ct, `"required_keys_missing"`)
	wantResponse(t, resp, body, 403, "invalid payload")
	resp, body = sp.do(t, "main", "POST", "/", ct, `{"id": "xxx", "not_token": "xxx"}`)
	wantResponse(t, resp, body, 403, "invalid payload")
	resp, body = sp.do(t, "main", "POST", "/", map[string]string{"content-type": "text/plain"}, `{"id": "xxx", "token": "xxx"}`)
	wantResponse(t, resp, body, 403, "")
}

func TestSDKHTTPRouting(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: http_routing, package: http_routing.orx }
    virtual_hosts:
      - { name: canary_route, domains: ["*-canary"], routes: [{ match: { path_prefix: / }, cluster: canary }] }
      - { name: primary_route, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: primary }] }
  - name: primary
    address: {{primary}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "hello from primary!\n" } }] }]
  - name: canary
    address: {{canary}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "hello from canary!\n" } }] }]
clusters:
  - { name: primary, endpoints: [{{primary}}] }
  - { name: canary, endpoints: [{{canary}}] }
`, map[string]string{"http_routing.orx": "http_routing"}, nil, "main", "primary", "canary")
	seen := map[string]int{}
	for i := 0; i < 40 && (seen["hello from primary!\n"] == 0 || seen["hello from canary!\n"] == 0); i++ {
		resp, body := sp.do(t, "main", "GET", "/", nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		seen[body]++
	}
	if seen["hello from primary!\n"] == 0 || seen["hello from canary!\n"] == 0 || len(seen) != 2 {
		t.Fatalf("answers = %v, want both primary and canary", seen)
	}
}

func TestSDKMetrics(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: metrics, package: metrics.orx }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
`, map[string]string{"metrics.orx": "metrics"}, nil, "main")
	for i := 0; i < 3; i++ {
		resp, body := sp.do(t, "main", "GET", "/", map[string]string{"my-custom-header": "foo"}, "")
		wantResponse(t, resp, body, 200, "example body\n")
	}
	resp, body := sp.do(t, "admin", "GET", "/metrics", nil, "")
	// Envoy turns the name into tags with the stats_tags of its bootstrap;
	// OmniRelay exports the plugin's name as is (docs/wasm.md).
	want := `omnirelay_wasm_counter{name="custom_header_value_counts_value=foo_reporter=wasmgosdk",plugin="metrics"} 3`
	if resp.StatusCode != 200 || !strings.Contains(body, want) {
		t.Fatalf("/metrics lacks %s:\n%s", want, body)
	}
}

func TestSDKHTTPBody(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: body-set, package: http_body.orx, config: body-set }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: echo }] }]
  - name: echo
    address: {{echo}}
    filters:
      - extension: { name: echo, package: http_body.orx, config: echo }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "not echoed" } }] }]
clusters:
  - { name: echo, endpoints: [{{echo}}] }
`, map[string]string{"http_body.orx": "http_body"}, nil, "main", "echo")
	for _, tt := range []struct{ op, at, want string }{
		{"prepend", "", "[this is prepended body][initial body]"},
		{"append", "", "[initial body][this is appended body]"},
		{"replace", "", "[this is replaced body]"},
		{"prepend", "response", "[this is prepended body][initial body]"},
		{"append", "response", "[initial body][this is appended body]"},
		{"replace", "response", "[this is replaced body]"},
	} {
		t.Run(tt.op+" "+tt.at, func(t *testing.T) {
			hdr := map[string]string{"buffer-operation": tt.op}
			if tt.at != "" {
				hdr["buffer-replace-at"] = tt.at
			}
			resp, body := sp.do(t, "main", "PUT", "/", hdr, "[initial body]")
			wantResponse(t, resp, body, 200, tt.want)
		})
	}
	resp, body := sp.do(t, "main", "GET", "/", nil, "")
	wantResponse(t, resp, body, 400, "content must be provided")
}

// httpbin stands in for httpbin.org: /uuid answers a new uuid-like JSON
// body each time (its hash decides http_auth_random), anything else a
// fixed body; it counts requests. A slow backend (delay) makes call-outs
// outlast the extension's per-call deadline.
func httpbin(t *testing.T, delay time.Duration) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		time.Sleep(delay)
		w.Header().Set("content-type", "application/json")
		if r.URL.Path == "/uuid" {
			fmt.Fprintf(w, "{\n  \"uuid\": \"e1020f65-f97a-47cd-9b31-%012d\"\n}\n", i)
			return
		}
		fmt.Fprintf(w, "httpbin %s", r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), &n
}

func TestSDKHTTPAuthRandom(t *testing.T) {
	bin, _ := httpbin(t, 30*time.Millisecond)
	// The default per-call deadline (10ms): the call-out takes longer.
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: http_auth_random, package: http_auth_random.orx }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: httpbin }] }]
clusters:
  - { name: httpbin, endpoints: [{{httpbin}}] }
`, map[string]string{"http_auth_random.orx": "http_auth_random"}, map[string]string{"httpbin": bin}, "main")
	granted, denied := 0, 0
	for i := 0; i < 30 && (granted == 0 || denied == 0); i++ {
		resp, body := sp.do(t, "main", "GET", "/uuid", nil, "")
		switch {
		case resp.StatusCode == 200 && strings.Contains(body, `"uuid"`):
			granted++
		case resp.StatusCode == 403 && body == "access forbidden" && resp.Header.Get("powered-by") == "proxy-wasm-go-sdk!!":
			denied++
		default:
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
	if granted == 0 || denied == 0 {
		t.Fatalf("granted %d, denied %d: want both", granted, denied)
	}
	sp.log.waitFor(t, granted, "access granted")
	sp.log.waitFor(t, denied, "access forbidden")
	sp.log.waitFor(t, 1, "http call dispatched to httpbin")
	sp.log.waitFor(t, 1, "response header from httpbin: :status: 200")
	sp.log.waitFor(t, 1, "request header: :path: /uuid")
	if n := sp.log.count("invalid plugin context"); n != 0 {
		t.Fatalf("SDK complained %d times of an invalid context", n)
	}
}

func TestSDKMultipleDispatches(t *testing.T) {
	bin, calls := httpbin(t, 15*time.Millisecond)
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: multiple_dispatches, package: multiple_dispatches.orx }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: httpbin }] }]
clusters:
  - { name: httpbin, endpoints: [{{httpbin}}] }
`, map[string]string{"multiple_dispatches.orx": "multiple_dispatches"}, map[string]string{"httpbin": bin}, "main")
	resp, body := sp.do(t, "main", "GET", "/", nil, "")
	wantResponse(t, resp, body, 200, "httpbin /")
	if got := resp.Header.Get("total-dispatched"); got != "10" {
		t.Fatalf("total-dispatched = %q, want 10", got)
	}
	if n := calls.Load(); n != 11 {
		t.Fatalf("httpbin saw %d requests, want 11 (the request and 10 call-outs)", n)
	}
	for i := 9; i >= 1; i-- {
		sp.log.waitFor(t, 1, fmt.Sprintf("pending dispatched requests: %d", i))
	}
	sp.log.waitFor(t, 1, "response resumed after processed 10 dispatched request")
}

func TestSDKForeignCallOnTick(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: foreign_call_on_tick, package: foreign_call_on_tick.orx }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
`, map[string]string{"foreign_call_on_tick.orx": "foreign_call_on_tick"}, nil, "main")
	sp.log.waitFor(t, 1, "set tick period milliseconds: 1")
	// Envoy's zlib gives ...cb48...5104001e89047e; Go's deflate ends the
	// same data with an empty stored block (docs/wasm.md).
	for i := 1; i <= 5; i++ {
		sp.log.waitFor(t, 1, fmt.Sprintf("foreign function (compress) called: %d, result: 789cca48cdc9c95728cf2fca495104040000ffff1e89047e", i))
	}
	if n := sp.log.count("foreign function (compress) failed"); n != 0 {
		t.Fatalf("%d failed calls", n)
	}
}

func TestSDKVMPluginConfiguration(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension:
          name: vm_plugin_configuration
          package: vm_plugin_configuration.orx
          root_id: my_root_id
          config: |
            {
              "name": "plugin configuration"
            }
          vm_config: |
            {
              "name": "vm configuration"
            }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
`, map[string]string{"vm_plugin_configuration.orx": "vm_plugin_configuration"}, nil, "main")
	// slog's text handler quotes the multi-line messages.
	sp.log.waitFor(t, 1, `msg="vm config: {\n  \"name\": \"vm configuration\"\n}\n"`, "root_id=my_root_id")
	sp.log.waitFor(t, 1, `msg="plugin config: {\n  \"name\": \"plugin configuration\"\n}\n"`, "root_id=my_root_id")
	if n := sp.log.count("error reading"); n != 0 {
		t.Fatalf("%d configuration read errors", n)
	}
}

// TestSDKSharedQueue: the receiver's three plugins share vm_id receiver and
// each registers a queue; the sender (vm_id sender) resolves them by
// (receiver, name) from an HTTP and a TCP listener. Envoy runs the receiver
// as a bootstrap Wasm service; here its plugins are filters of a listener
// of their own (docs/wasm.md).
func TestSDKSharedQueue(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: services
    address: {{services}}
    filters:
      - extension: { name: receiver-req, package: receiver.orx, vm_id: receiver, config: http_request_headers }
      - extension: { name: receiver-resp, package: receiver.orx, vm_id: receiver, config: http_response_headers }
      - extension: { name: receiver-tcp, package: receiver.orx, vm_id: receiver, config: tcp_data_hashes }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 404 } }] }]
  - name: http
    address: {{http}}
    filters:
      - extension: { name: sender-http, package: sender.orx, vm_id: sender, config: http }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
  - name: tcp
    address: {{tcp}}
    protocol: tcp
    cluster: admin
    filters:
      - extension: { name: sender-tcp, package: sender.orx, vm_id: sender, config: tcp }
  - name: static
    address: {{static}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "from upstream\n" } }] }]
clusters:
  - { name: admin, endpoints: [{{static}}] }
`, map[string]string{"receiver.orx": "shared_queue/receiver", "sender.orx": "shared_queue/sender"}, nil, "services", "http", "tcp", "static")
	for _, q := range []string{"http_request_headers", "http_response_headers", "tcp_data_hashes"} {
		sp.log.waitFor(t, 1, fmt.Sprintf(`queue \"%s\" registered as queueID=`, q))
	}
	sp.log.waitFor(t, 1, "is configured for http")
	resp, body := sp.do(t, "http", "GET", "/", nil, "")
	wantResponse(t, resp, body, 200, "example body\n")
	sp.log.waitFor(t, 1, `enqueued data: {\"key\": \":path\",\"value\": \"/\"}`)
	sp.log.waitFor(t, 1, `dequeued data from http_request_headers(queueID=`, `{\"key\": \":path\",\"value\": \"/\"}`)
	sp.log.waitFor(t, 1, `dequeued data from http_response_headers(queueID=`, `{\"key\": \":status\",\"value\": \"200\"}`)
	// Through the TCP listener: the upstream's bytes are hashed and queued.
	resp, body = sp.do(t, "tcp", "GET", "/", nil, "")
	wantResponse(t, resp, body, 200, "from upstream\n")
	sp.log.waitFor(t, 1, "dequeued data from tcp_data_hashes(queueID=")
	if n := sp.log.count("error resolving queue id"); n != 0 {
		t.Fatalf("%d queue resolutions failed", n)
	}
}

// TestSDKHTTPBodyChunk: a 933 KB request body under the default 10ms call
// deadline is streamed to the plugin chunk by chunk; "pattern" in the last
// chunk is found there (Envoy's chunk numbers depend on how the bytes
// arrive; here on the proxy's reads, at most 64 KiB each).
func TestSDKHTTPBodyChunk(t *testing.T) {
	backend := testutil.StartBackend(t, "admin", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d", n)
	}).Addr
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: http_body_chunk, package: http_body_chunk.orx, config: body-set }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: admin }] }]
clusters:
  - { name: admin, endpoints: [{{backend}}] }
`, map[string]string{"http_body_chunk.orx": "http_body_chunk"}, map[string]string{"backend": backend}, "main")
	raw := make([]byte, 700000)
	for i := range raw {
		raw[i] = byte(i*7 + i/251)
	}
	body := base64.StdEncoding.EncodeToString(raw)
	resp, out := sp.do(t, "main", "POST", "/anything", nil, body+"pattern\n")
	if resp.StatusCode != 403 || !strings.HasPrefix(out, "pattern found in chunk: ") || out == "pattern found in chunk: 1" {
		t.Fatalf("got %d %q, want 403 pattern found in chunk N > 1", resp.StatusCode, out)
	}
	if resp.Header.Get("powered-by") != "proxy-wasm-go-sdk" {
		t.Errorf("powered-by = %q", resp.Header.Get("powered-by"))
	}
	sp.log.waitFor(t, 1, "OnHttpRequestBody called.", "endOfStream: false")
	sp.log.waitFor(t, 1, "OnHttpRequestBody called. BodySize: 933344", "endOfStream: true")
	sp.log.waitFor(t, 1, "local 403 response sent")
	if n := sp.log.count("does not match"); n != 0 {
		t.Fatalf("%d size mismatches", n)
	}
	// Without the pattern the whole body reaches the upstream.
	resp, out = sp.do(t, "main", "POST", "/anything", nil, body)
	wantResponse(t, resp, out, 200, fmt.Sprintf("read %d", len(body)))
	sp.log.waitFor(t, 1, "pattern not found")
}

// TestSDKDispatchCallOnTick: two plugins of one module tick every 100 ms
// and each dispatches a call-out from its root context; every response
// comes back to the root context that made it.
func TestSDKDispatchCallOnTick(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: plugin1, package: dispatch_call_on_tick.orx, config: plugin1 }
      - extension: { name: plugin2, package: dispatch_call_on_tick.orx, config: plugin2 }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
  - name: staticreply
    address: {{static}}
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /ok }, direct_response: { status: 200, body: "example body\n" } }
          - { match: { path_prefix: /fail }, direct_response: { status: 503 } }
clusters:
  - { name: web_service, endpoints: [{{static}}] }
`, map[string]string{"dispatch_call_on_tick.orx": "dispatch_call_on_tick"}, nil, "main", "static")
	sp.log.waitFor(t, 2, "set tick period milliseconds: 100")
	for i := 1; i <= 5; i++ {
		// One line per plugin for each count.
		sp.log.waitFor(t, 2, fmt.Sprintf("called %d for contextID=", i))
	}
	sp.log.waitFor(t, 1, "response header for the dispatched call: :status: 200")
	sp.log.waitFor(t, 1, "response header for the dispatched call: :status: 503")
	if n := sp.log.count("dispatch httpcall failed"); n != 0 {
		t.Fatalf("%d dispatches failed", n)
	}
}

// TestSDKSharedData: the counter in shared data goes up by one per request
// across every instance of the plugin: proxy_on_vm_start, which resets it,
// runs once.
func TestSDKSharedData(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      # A burst waits for the pool to grow (docs/wasm.md: Instances).
      - extension: { name: shared_data, package: shared_data.orx, deadline: 5s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
`, map[string]string{"shared_data.orx": "shared_data"}, nil, "main")
	// Concurrent requests make the pool grow past its first instance.
	var wg sync.WaitGroup
	for i := 0; i < 25; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := sp.do(t, "main", "GET", "/", nil, "")
			if resp.StatusCode != 200 {
				t.Errorf("got %d %q", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	for i := 1; i <= 25; i++ {
		sp.log.waitFor(t, 1, fmt.Sprintf(`msg="shared value: %d"`, i))
	}
}

func TestSDKProperties(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    filters:
      - extension: { name: properties, package: properties.orx }
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /one }, cluster: web_service, metadata: { filter_metadata: { envoy.filters.http.wasm: { auth: cookie } } } }
          - { match: { path_prefix: /two }, cluster: web_service, metadata: { filter_metadata: { envoy.filters.http.wasm: { auth: authorization } } } }
          - { match: { path_prefix: /three }, cluster: web_service }
  - name: staticreply
    address: {{static}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
clusters:
  - { name: web_service, endpoints: [{{static}}] }
`, map[string]string{"properties.orx": "properties"}, nil, "main", "static")
	for _, tt := range []struct {
		path   string
		hdr    map[string]string
		status int
	}{
		{"/one", nil, 401},
		{"/one", map[string]string{"cookie": "value"}, 200},
		{"/two", nil, 401},
		{"/two", map[string]string{"authorization": "value"}, 200},
		{"/two", map[string]string{"cookie": "value"}, 401},
		{"/three", nil, 200},
	} {
		resp, body := sp.do(t, "main", "GET", tt.path, tt.hdr, "")
		if resp.StatusCode != tt.status {
			t.Errorf("%s %v: got %d %q, want %d", tt.path, tt.hdr, resp.StatusCode, body, tt.status)
		}
	}
	sp.log.waitFor(t, 1, `auth header is \"cookie\"`)
	sp.log.waitFor(t, 1, `auth header is \"authorization\"`)
	sp.log.waitFor(t, 1, "no auth header for route")
	sp.log.waitFor(t, 6, " finished")
}

func TestSDKNetwork(t *testing.T) {
	sp := startSDKProxy(t, `
listeners:
  - name: main
    address: {{main}}
    protocol: tcp
    cluster: web_service
    filters:
      - extension: { name: network, package: network.orx }
  - name: staticreply
    address: {{static}}
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: "example body\n" } }] }]
clusters:
  - name: web_service
    endpoints: [{{static}}]
    metadata: { filter_metadata: { location: { cloud_provider: aws, region: ap-northeast-1, az: ap-northeast-1a } } }
`, map[string]string{"network.orx": "network"}, nil, "main", "static")
	resp, body := sp.do(t, "main", "GET", "/", nil, "")
	wantResponse(t, resp, body, 200, "example body\n")
	sp.log.waitFor(t, 1, "new connection!")
	sp.log.waitFor(t, 1, ">>>>>> downstream data received >>>>>>")
	sp.log.waitFor(t, 1, "<<<<<< upstream data received <<<<<<")
	sp.log.waitFor(t, 1, "remote address: "+sp.addr["static"])
	for _, kv := range []string{"cloud_provider]=aws", "region]=ap-northeast-1", "az]=ap-northeast-1a"} {
		sp.log.waitFor(t, 1, "upstream cluster metadata location["+kv)
	}
	sp.log.waitFor(t, 1, "connection complete!")
	if n := sp.log.count("failed to get upstream"); n != 0 {
		t.Fatalf("%d property reads failed", n)
	}
}
