package e2e

// Request smuggling and malformed input, sent as raw bytes to the proxy's
// HTTP/1.1 listener: every ambiguous or invalid framing must be refused with
// the right status and a closed connection, and the backend must never see
// a request that was hidden inside another one.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const smugglingConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    max_request_headers_kb: 16
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: app }]
clusters:
  - { name: app, protocol: http1, endpoints: [{{app}}] }
`

// requestLog records what the backend was asked, body included.
type requestLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *requestLog) add(s string) {
	l.mu.Lock()
	l.seen = append(l.seen, s)
	l.mu.Unlock()
}

func (l *requestLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

func startSmugglingTarget(t *testing.T) (web string, log *requestLog) {
	t.Helper()
	log = &requestLog{}
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		log.add(fmt.Sprintf("%s %s body=%q", r.Method, r.URL.RequestURI(), body))
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	})
	web = testutil.Addr(t)
	startProxy(t, smugglingConfig, map[string]string{"web": web, "app": b.addr})
	return web, log
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

func TestSmugglingRejected(t *testing.T) {
	web, log := startSmugglingTarget(t)
	longLine := "GET /" + strings.Repeat("a", 9<<10) + " HTTP/1.1\r\nHost: a\r\n\r\n"
	var many strings.Builder
	for i := range 101 {
		fmt.Fprintf(&many, "X-H%d: v\r\n", i)
	}
	big := "X-Big: " + strings.Repeat("b", 20<<10) + "\r\n"

	cases := []struct {
		name   string
		raw    string
		status int
		// reachesBackend is set when the head is valid and only the body is
		// broken: the backend may see the start of that one request, never
		// what follows it.
		reachesBackend bool
	}{
		{name: "CL and TE", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "TE and CL", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "duplicate differing CL", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" + smuggled},
		{name: "CL list", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!" + smuggled},
		{name: "signed CL", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" + smuggled},
		{name: "unknown transfer coding", status: 501,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "chunked not last", status: 501,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "space before colon", status: 400,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "TE in HTTP/1.0", status: 400,
			raw: "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "invalid chunk size", status: 400, reachesBackend: true,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" + smuggled},
		{name: "chunk size overflow", status: 400, reachesBackend: true,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n" + smuggled},
		{name: "chunk without CRLF", status: 400, reachesBackend: true,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" + smuggled},
		{name: "bare LF chunk line", status: 400, reachesBackend: true,
			raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + smuggled},
		{name: "bare LF in head", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\nX-Injected: 1\r\n\r\n" + smuggled},
		{name: "bare CR in value", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n" + smuggled},
		{name: "NUL in value", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n" + smuggled},
		{name: "obs-fold", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n" + smuggled},
		{name: "space in field name", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n" + smuggled},
		{name: "two hosts", status: 400,
			raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + smuggled},
		{name: "no host", status: 400,
			raw: "GET / HTTP/1.1\r\nX-A: b\r\n\r\n" + smuggled},
		{name: "request line too long", status: 414, raw: longLine + smuggled},
		{name: "too many headers", status: 431,
			raw: "GET / HTTP/1.1\r\nHost: a\r\n" + many.String() + "\r\n" + smuggled},
		{name: "headers too large", status: 431,
			raw: "GET / HTTP/1.1\r\nHost: a\r\n" + big + "\r\n" + smuggled},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A path per case: the backend may log a request it was sent
			// (body cases) after the next case started.
			raw := strings.Replace(tc.raw, " / HTTP/1.", fmt.Sprintf(" /case%d HTTP/1.", i), 1)
			c, br := rawDial(t, web)
			if _, err := io.WriteString(c, raw); err != nil {
				t.Fatal(err)
			}
			resp, _ := readResponse(t, br, "POST")
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !resp.Close {
				t.Errorf("response does not announce connection: close")
			}
			expectClosed(t, c, br)
		})
	}
	// A last good request; once the backend logged it, requests the proxy
	// sent before it have been logged too.
	if resp, body := testutil.Get(t, &http.Client{}, "http://"+web+"/sentinel"); resp.StatusCode != 200 {
		t.Fatalf("sentinel: %d %q", resp.StatusCode, body)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "sentinel logged", testutil.Bool(func() bool {
		for _, s := range log.snapshot() {
			if strings.HasPrefix(s, "GET /sentinel ") {
				return true
			}
		}
		return false
	}))
	for _, s := range log.snapshot() {
		if strings.Contains(s, "smuggled") {
			t.Errorf("backend saw the smuggled request: %q", s)
		}
		for i, tc := range cases {
			if !tc.reachesBackend && strings.Contains(s, fmt.Sprintf(" /case%d ", i)) {
				t.Errorf("backend saw the rejected request of %q: %q", tc.name, s)
			}
		}
	}
}

// TestSmugglingBodyStaysBody sends request bytes inside a well-framed body
// and pipelined requests: both must be handled exactly as framed.
func TestSmugglingBodyStaysBody(t *testing.T) {
	web, log := startSmugglingTarget(t)

	t.Run("request inside a content-length body", func(t *testing.T) {
		before := len(log.snapshot())
		c, br := rawDial(t, web)
		fmt.Fprintf(c, "POST /outer HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 200 || string(body) != "ok /outer" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		want := []string{fmt.Sprintf("POST /outer body=%q", smuggled)}
		if got := log.snapshot()[before:]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("backend saw %q, want %q", got, want)
		}
	})

	t.Run("request inside a chunked body", func(t *testing.T) {
		before := len(log.snapshot())
		c, br := rawDial(t, web)
		fmt.Fprintf(c, "POST /outer HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 200 || string(body) != "ok /outer" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		want := []string{fmt.Sprintf("POST /outer body=%q", smuggled)}
		if got := log.snapshot()[before:]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("backend saw %q, want %q", got, want)
		}
	})

	t.Run("pipelined requests answered in order", func(t *testing.T) {
		before := len(log.snapshot())
		c, br := rawDial(t, web)
		io.WriteString(c, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"+
			"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"+
			"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		for _, want := range []string{"ok /one", "ok /two", "ok /three"} {
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("status %d body %q, want %q", resp.StatusCode, body, want)
			}
		}
		expectClosed(t, c, br)
		want := []string{`GET /one body=""`, `POST /two body="abc"`, `GET /three body=""`}
		if got := log.snapshot()[before:]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("backend saw %q, want %q", got, want)
		}
	})
}

const badBodyConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: / }
            cluster: app
            retry: { attempts: 3, on: [reset, 5xx] }
clusters:
  - name: app
    protocol: {{proto}}
    endpoints: [{{app}}]
    outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failure: 2, base_ejection_time: 30s }
`

// TestSmugglingBadBodyNotBlamedOnHost sends malformed chunked bodies whose
// heads are valid, so the proxy has begun forwarding when the body breaks.
// The client gets 400; the request is not retried, and the host, which did
// nothing wrong, is not ejected by outlier detection.
func TestSmugglingBadBodyNotBlamedOnHost(t *testing.T) {
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			log := &requestLog{}
			b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				log.add(fmt.Sprintf("%s %s body=%q err=%v", r.Method, r.URL.RequestURI(), body, err))
				fmt.Fprintf(w, "ok %s", r.URL.Path)
			})
			web := testutil.Addr(t)
			startProxy(t, badBodyConfig, map[string]string{"web": web, "app": b.addr, "proto": proto})
			for i := range 4 {
				c, br := rawDial(t, web)
				// A first chunk big enough to be streamed, then garbage.
				fmt.Fprintf(c, "POST /bad/%d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n%s\r\nzz\r\n\r\n", i, strings.Repeat("x", 0x4000))
				resp, _ := readResponse(t, br, "POST")
				if resp.StatusCode != 400 {
					t.Fatalf("bad body %d: status %d, want 400", i, resp.StatusCode)
				}
				expectClosed(t, c, br)
			}
			if n := len(log.snapshot()); n > 4 {
				t.Fatalf("backend saw %d requests for 4 bad bodies: a client error was retried: %q", n, log.snapshot())
			}
			resp, body := testutil.Get(t, &http.Client{}, "http://"+web+"/good")
			if resp.StatusCode != 200 || body != "ok /good" {
				t.Fatalf("after bad bodies: status %d body %q (host ejected for the client's errors?)", resp.StatusCode, body)
			}
		})
	}
}

// TestSmugglingH2CUpgrade sends an HTTP/1.1 "Upgrade: h2c" request. Tunnelled
// to a backend that accepts it, the client would speak HTTP/2 straight to
// that backend for every later request on the connection, past routing and
// filters ("h2c smuggling"). The proxy must serve it as plain HTTP/1.1.
func TestSmugglingH2CUpgrade(t *testing.T) {
	var upgrades sync.Map
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if u := r.Header.Get("Upgrade"); u != "" {
			// A lenient backend: it switches to whatever is asked.
			upgrades.Store(u, true)
			conn, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\nTUNNEL", u)
			_ = brw.Flush()
			return
		}
		fmt.Fprintf(w, "plain %s", r.URL.Path)
	})
	web := startProtoProxy(t, b.addr, "http1")
	for _, tc := range []struct{ name, conn string }{
		{name: "settings listed in connection", conn: "Upgrade, HTTP2-Settings"},
		{name: "settings not listed", conn: "Upgrade"},
		{name: "mixed case token", conn: "upgrade"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawDial(t, web)
			token := "h2c"
			if tc.name == "mixed case token" {
				token = "H2C"
			}
			fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: %s\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: %s\r\n\r\n", token, tc.conn)
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != 200 || string(body) != "plain /x" {
				t.Fatalf("h2c upgrade: status %d body %q, want the request served as HTTP/1.1", resp.StatusCode, body)
			}
		})
	}
	upgrades.Range(func(k, _ any) bool {
		t.Errorf("backend was asked to upgrade to %q", k)
		return true
	})
}
