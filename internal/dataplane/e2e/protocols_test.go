package e2e

// Protocol end-to-end tests: HTTP/1.1 framing (keep-alive, chunked bodies,
// trailers, 100-continue, HEAD, HTTP/1.0, large bodies), WebSocket tunnelling,
// HTTP/1.1 <-> h2c translation and many streams on one h2c connection, and
// the L4 TCP proxy. Every test runs the real proxy (app.Start) against real
// servers on 127.0.0.1.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// protoConfig is one http listener with a rejecting route and a catch-all
// route to cluster app, whose protocol the test chooses.
const protoConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /reject }
            direct_response: { status: 403, body: "rejected" }
          - match: { path_prefix: / }
            cluster: app
            timeout: {{timeout}}
clusters:
  - name: app
    protocol: {{proto}}
    endpoints: [{{app}}]
`

// countingBackend is an HTTP/1.1 + h2c server that counts the connections
// it accepted, to prove connection reuse from the proxy side.
type countingBackend struct {
	addr  string
	conns atomic.Int64
	hits  atomic.Int64
}

func startCountingBackend(t testing.TB, h http.HandlerFunc) *countingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{addr: ln.Addr().String()}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	})
	srv := &http.Server{
		Handler:           h2c.NewHandler(counted, &http2.Server{}),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// startProtoProxy starts protoConfig with cluster app at backend and the
// given upstream protocol; it returns the listener address.
func startProtoProxy(t testing.TB, backend, proto string) string {
	t.Helper()
	web := testutil.Addr(t)
	startProxy(t, protoConfig, map[string]string{"web": web, "app": backend, "proto": proto, "timeout": "30s"})
	return web
}

// countingDialer counts the client's own connections to the proxy.
func countingClient(n *atomic.Int64) *http.Client {
	d := &net.Dialer{}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 64,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			n.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// rawDial opens a plain TCP connection with an overall deadline, so that a
// proxy that never answers fails the test instead of hanging it.
func rawDial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// readResponse reads one HTTP/1.x response and its whole body.
func readResponse(t testing.TB, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return resp, body
}

// expectClosed fails unless the peer closes the connection (EOF, nothing
// more than trailing bytes already read).
func expectClosed(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil && !isConnReset(err) {
		t.Fatalf("connection not closed: %v (read %q)", err, rest)
	}
	if len(rest) > 0 {
		t.Fatalf("unexpected bytes after response: %q", rest)
	}
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func TestProtoH1KeepAliveReuse(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	})
	web := startProtoProxy(t, b.addr, "http1")
	var dials atomic.Int64
	c := countingClient(&dials)

	for i := range 200 {
		resp, body := testutil.Get(t, c, fmt.Sprintf("http://%s/seq/%d", web, i))
		if resp.StatusCode != 200 || body != fmt.Sprintf("ok /seq/%d", i) {
			t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, body)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("client opened %d connections to the proxy for sequential requests, want 1", n)
	}
	if n := b.conns.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections for sequential requests, want 1 (upstream keep-alive)", n)
	}

	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				resp, err := c.Post(fmt.Sprintf("http://%s/par/%d/%d", web, w, i), "text/plain", strings.NewReader("payload"))
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// At most one upstream connection per concurrent downstream request,
	// plus the one from the sequential phase (which is reused too).
	if n := b.conns.Load(); n > workers+1 {
		t.Fatalf("backend accepted %d connections for %d concurrent clients: upstream connections not reused", n, workers)
	}
	if n := b.hits.Load(); n != 200+workers*each {
		t.Fatalf("backend served %d requests, want %d", n, 200+workers*each)
	}
}

// patterned returns n deterministic pseudo-random bytes.
func patterned(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestProtoH1ChunkedStreaming(t *testing.T) {
	const size = 4 << 20
	const piece = 64 << 10
	reqData := patterned(1, size)
	respData := patterned(2, size)
	gotFirstReq := make(chan struct{})
	gotFirstResp := make(chan struct{})

	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != -1 || len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
			http.Error(w, fmt.Sprintf("want a chunked request, got length %d te %v", r.ContentLength, r.TransferEncoding), 400)
			return
		}
		first := make([]byte, piece)
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		close(gotFirstReq) // the proxy streamed the first piece before the client sent the rest
		h := sha256.New()
		h.Write(first)
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("x-request-sum", hex.EncodeToString(h.Sum(nil)))
		f := w.(http.Flusher)
		_, _ = w.Write(respData[:piece])
		f.Flush()
		select {
		case <-gotFirstResp: // the proxy streamed the first piece downstream
		case <-time.After(5 * time.Second):
			return // the client fails on the truncated body
		}
		for off := piece; off < size; off += piece {
			_, _ = w.Write(respData[off : off+piece])
		}
	})
	web := startProtoProxy(t, b.addr, "http1")

	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(reqData[:piece])
		select {
		case <-gotFirstReq:
		case <-time.After(5 * time.Second):
			pw.CloseWithError(fmt.Errorf("backend never saw the first piece: request body not streamed"))
			return
		}
		for off := piece; off < size; off += piece {
			if _, err := pw.Write(reqData[off : off+piece]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://"+web+"/stream", pr)
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("response not chunked downstream: te %v length %d", resp.TransferEncoding, resp.ContentLength)
	}
	first := make([]byte, piece)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	close(gotFirstResp)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(append(first, rest...)); got != sum(respData) {
		t.Fatalf("response body corrupted: %d bytes, sum %s", piece+len(rest), got)
	}
	if got := resp.Header.Get("x-request-sum"); got != sum(reqData) {
		t.Fatalf("request body corrupted: backend sum %s", got)
	}
}

// TestProtoTrailers sends request trailers and receives response trailers
// through every downstream/upstream protocol pair.
func TestProtoTrailers(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Resp-Trailer")
		w.Header().Set("x-seen-req-trailer", r.Trailer.Get("X-Req-Trailer"))
		w.Header().Set("x-backend-proto", r.Proto)
		_, _ = w.Write(body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Resp-Trailer", "done-"+strconv.Itoa(len(body)))
	})
	for _, tc := range []struct {
		name, cluster string
		client        *http.Client
		wantProto     string
	}{
		{name: "h1 to h1", cluster: "http1", client: &http.Client{Timeout: 10 * time.Second}, wantProto: "HTTP/1.1"},
		{name: "h1 to h2c", cluster: "h2c", client: &http.Client{Timeout: 10 * time.Second}, wantProto: "HTTP/2.0"},
		{name: "h2c to h1", cluster: "http1", client: testutil.H2CClient(), wantProto: "HTTP/1.1"},
		{name: "h2c to h2c", cluster: "h2c", client: testutil.H2CClient(), wantProto: "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web := startProtoProxy(t, b.addr, tc.cluster)
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", "http://"+web+"/trailers", pr)
			req.Trailer = http.Header{"X-Req-Trailer": nil}
			go func() {
				_, _ = pw.Write([]byte("hello trailers"))
				req.Trailer.Set("X-Req-Trailer", "req-value")
				pw.Close()
			}()
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || string(body) != "hello trailers" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("x-backend-proto"); got != tc.wantProto {
				t.Fatalf("backend saw %s, want %s", got, tc.wantProto)
			}
			if got := resp.Header.Get("x-seen-req-trailer"); got != "req-value" {
				t.Errorf("request trailer lost: backend saw %q", got)
			}
			if got := resp.Trailer.Get("X-Resp-Trailer"); got != "done-14" {
				t.Errorf("response trailer lost: got %q (trailers %v)", got, resp.Trailer)
			}
		})
	}
}

func TestProtoExpectContinue(t *testing.T) {
	var sawExpect atomic.Value
	sawExpect.Store("")
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		sawExpect.Store(r.Header.Get("Expect"))
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("x-sum", sum(body))
		fmt.Fprintf(w, "got %d", len(body))
	})
	web := startProtoProxy(t, b.addr, "http1")

	for _, tc := range []struct {
		name string
		size int
	}{
		{name: "small body", size: 5},
		{name: "streamed body", size: 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := patterned(uint64(tc.size), tc.size)
			c, br := rawDial(t, web)
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tc.size)
			resp, _ := readResponse(t, br, "POST")
			if resp.StatusCode != 100 {
				t.Fatalf("want 100 Continue before the body, got %d", resp.StatusCode)
			}
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			resp, body := readResponse(t, br, "POST")
			if resp.StatusCode != 200 || string(body) != fmt.Sprintf("got %d", tc.size) || resp.Header.Get("x-sum") != sum(data) {
				t.Fatalf("status %d body %q sum ok %v", resp.StatusCode, body, resp.Header.Get("x-sum") == sum(data))
			}
			if e := sawExpect.Load().(string); e != "" {
				t.Fatalf("backend saw Expect: %q; the proxy must answer it itself", e)
			}
			// The connection stays usable.
			fmt.Fprintf(c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
				t.Fatalf("follow-up request: status %d", resp.StatusCode)
			}
		})
	}

	t.Run("rejected before body", func(t *testing.T) {
		before := b.hits.Load()
		c, br := rawDial(t, web)
		fmt.Fprintf(c, "POST /reject HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 403 || string(body) != "rejected" {
			t.Fatalf("want the route's 403 without 100 Continue, got %d %q", resp.StatusCode, body)
		}
		// The client may still send the body it was never asked for: the
		// proxy cannot tell it from a next request, so it must close.
		if !resp.Close {
			t.Fatalf("connection kept open after an unanswered Expect")
		}
		expectClosed(t, c, br)
		if b.hits.Load() != before {
			t.Fatalf("backend was called for a rejected request")
		}
	})
}

// TestProtoHEADContentLength checks that a HEAD response keeps the
// upstream's Content-Length (RFC 9110 9.3.2) and that the connection stays
// in sync afterwards.
func TestProtoHEADContentLength(t *testing.T) {
	const n = 1234
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(n))
		if r.Method != "HEAD" {
			_, _ = w.Write(bytes.Repeat([]byte("x"), n))
		}
	})
	for _, cluster := range []string{"http1", "h2c"} {
		t.Run("h1 downstream to "+cluster, func(t *testing.T) {
			web := startProtoProxy(t, b.addr, cluster)
			c, br := rawDial(t, web)
			fmt.Fprintf(c, "HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, body := readResponse(t, br, "HEAD")
			if resp.StatusCode != 200 || resp.ContentLength != n || len(body) != 0 {
				t.Fatalf("HEAD: status %d content-length %d (header %q) body %d bytes", resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Length"), len(body))
			}
			fmt.Fprintf(c, "GET /head HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, body = readResponse(t, br, "GET")
			if resp.StatusCode != 200 || len(body) != n {
				t.Fatalf("GET after HEAD: status %d body %d bytes", resp.StatusCode, len(body))
			}
		})
		t.Run("h2c downstream to "+cluster, func(t *testing.T) {
			web := startProtoProxy(t, b.addr, cluster)
			req, _ := http.NewRequest("HEAD", "http://"+web+"/head", nil)
			resp, err := testutil.H2CClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ContentLength != n {
				t.Fatalf("HEAD: status %d content-length %d", resp.StatusCode, resp.ContentLength)
			}
		})
	}
}

func TestProtoHTTP10Client(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			// No length: the upstream answers chunked, which HTTP/1.0 lacks.
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
			return
		}
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})
	web := startProtoProxy(t, b.addr, "http1")
	for _, tc := range []struct{ name, path, want string }{
		{name: "known length", path: "/fixed", want: "hello /fixed"},
		{name: "delimited by close", path: "/stream", want: "part0;part1;part2;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawDial(t, web)
			fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: a\r\n\r\n", tc.path)
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != 200 || string(body) != tc.want {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if len(resp.TransferEncoding) != 0 {
				t.Fatalf("chunked response sent to an HTTP/1.0 client")
			}
			expectClosed(t, c, br)
		})
	}
}

func TestProtoLargeBodies(t *testing.T) {
	const size = 10 << 20
	down := patterned(10, size)
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/download":
			w.Header().Set("Content-Length", strconv.Itoa(len(down)))
			_, _ = w.Write(down)
		}
	})
	up := patterned(11, size)
	for _, tc := range []struct {
		name, cluster string
		client        *http.Client
	}{
		{name: "h1", cluster: "auto", client: &http.Client{Timeout: 30 * time.Second}},
		{name: "h2c", cluster: "auto", client: testutil.H2CClient()},
		{name: "h2c to h1", cluster: "http1", client: testutil.H2CClient()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web := startProtoProxy(t, b.addr, tc.cluster)
			resp, err := tc.client.Post("http://"+web+"/upload", "application/octet-stream", bytes.NewReader(up))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("%d %s", size, sum(up)); resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("upload: status %d body %q, want %q", resp.StatusCode, body, want)
			}
			resp, err = tc.client.Get("http://" + web + "/download")
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != sum(down) {
				t.Fatalf("download: %d bytes, err %v, checksum ok %v", n, err, hex.EncodeToString(h.Sum(nil)) == sum(down))
			}
			if resp.ContentLength != size {
				t.Errorf("download content-length %d, want %d", resp.ContentLength, size)
			}
		})
	}
}

// TestProtoWebSocketTunnel upgrades through the proxy to a backend that
// answers 101 and then echoes bytes. The omnirelay.v1 config has no switch
// for upgrades: the proxy tunnels any upgrade the upstream accepts.
func TestProtoWebSocketTunnel(t *testing.T) {
	var sawHeaders atomic.Value
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		sawHeaders.Store(r.Header.Clone())
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\nwelcome\n", r.Header.Get("Sec-WebSocket-Key")+"-accepted")
		_ = brw.Flush()
		// Echo lines until the client half-closes, then say goodbye.
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				break
			}
			_, _ = brw.WriteString("echo:" + line)
			_ = brw.Flush()
		}
		_, _ = conn.Write([]byte("bye\n"))
	})
	web := testutil.Addr(t)
	// A short route timeout: a tunnel must outlive it.
	startProxy(t, protoConfig, map[string]string{"web": web, "app": b.addr, "proto": "http1", "timeout": "300ms"})

	c, br := rawDial(t, web)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc123\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") || resp.Header.Get("Sec-WebSocket-Accept") != "abc123-accepted" {
		t.Fatalf("upgrade response: %d %v", resp.StatusCode, resp.Header)
	}
	h := sawHeaders.Load().(http.Header)
	if h.Get("Sec-WebSocket-Key") != "abc123" || !strings.EqualFold(h.Get("Connection"), "upgrade") {
		t.Fatalf("backend saw headers %v", h)
	}
	readLine := func(want string) {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("read %q (%v), want %q", line, err, want)
		}
	}
	readLine("welcome\n") // server-initiated bytes flow before the client sends any
	for i := range 20 {
		msg := fmt.Sprintf("message %d %s\n", i, strings.Repeat("x", i*100))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		readLine("echo:" + msg)
	}
	// Outlive the 300ms route timeout, then talk again.
	time.Sleep(500 * time.Millisecond)
	_, _ = io.WriteString(c, "late\n")
	readLine("echo:late\n")
	// Half-close: the backend sees EOF and still gets its last word out.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readLine("bye\n")
	expectClosed(t, c, br)
}

// TestProtoCrossProtocol forwards between HTTP/1.1 and h2c in both
// directions, with a request body and response headers.
func TestProtoCrossProtocol(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("x-backend-proto", r.Proto)
		w.Header().Set("x-host", r.Host)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	})
	for _, tc := range []struct {
		name, cluster string
		client        *http.Client
		wantProto     string
	}{
		{name: "h2c prior knowledge to http1", cluster: "http1", client: testutil.H2CClient(), wantProto: "HTTP/1.1"},
		{name: "http1 to h2c", cluster: "h2c", client: &http.Client{Timeout: 10 * time.Second}, wantProto: "HTTP/2.0"},
		{name: "auto keeps h2c", cluster: "auto", client: testutil.H2CClient(), wantProto: "HTTP/2.0"},
		{name: "auto keeps http1", cluster: "auto", client: &http.Client{Timeout: 10 * time.Second}, wantProto: "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web := startProtoProxy(t, b.addr, tc.cluster)
			req, _ := http.NewRequest("PUT", "http://"+web+"/x?q=1", strings.NewReader("body"))
			req.Host = "shop.example.com"
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "PUT /x?q=1 body" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("x-backend-proto"); got != tc.wantProto {
				t.Fatalf("backend saw %s, want %s", got, tc.wantProto)
			}
			if got := resp.Header.Get("x-host"); got != "shop.example.com" {
				t.Fatalf("backend saw host %q", got)
			}
		})
	}
}

// TestProtoH2cConcurrentStreams runs many streams at once on one h2c
// connection; the backend holds every request until all have arrived, which
// proves they are in flight together rather than serialised.
func TestProtoH2cConcurrentStreams(t *testing.T) {
	const streams = 64
	for _, cluster := range []string{"http1", "h2c"} {
		t.Run("to "+cluster, func(t *testing.T) {
			var arrived atomic.Int64
			all := make(chan struct{})
			b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/warmup" {
					return
				}
				if arrived.Add(1) == streams {
					close(all)
				}
				select {
				case <-all:
				case <-time.After(5 * time.Second):
					http.Error(w, "not all streams arrived", 504)
					return
				}
				fmt.Fprintf(w, "%s", r.URL.Path)
			})
			web := startProtoProxy(t, b.addr, cluster)
			var dials atomic.Int64
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
				DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
					dials.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}}}
			// One request first so that every stream shares one connection.
			if resp, _ := testutil.Get(t, client, "http://"+web+"/warmup"); resp.StatusCode != 200 {
				t.Fatalf("warmup status %d", resp.StatusCode)
			}
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			for i := range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get(fmt.Sprintf("http://%s/s/%d", web, i))
					if err != nil {
						errs <- err
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != fmt.Sprintf("/s/%d", i) {
						errs <- fmt.Errorf("stream %d: status %d body %q", i, resp.StatusCode, body)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := dials.Load(); n != 1 {
				t.Fatalf("client used %d connections, want 1", n)
			}
		})
	}
}

// TestProtoH1UploadToEarlyH2Response uploads over HTTP/1.1 to an h2c
// upstream that sends its response head before reading the body (as
// streaming servers do); the upstream must still receive the whole body.
// Regression: the connection manager drained (and so stole) 256 KiB of the
// body that the HTTP/2 upstream was still streaming.
func TestProtoH1UploadToEarlyH2Response(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush() // response head first, then read the upload
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x %v", n, h.Sum(nil), err)
	})
	web := startProtoProxy(t, b.addr, "h2c")
	data := patterned(3, 4<<20)
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Post("http://"+web+"/up", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %s <nil>", len(data), sum(data)); string(body) != want {
		t.Fatalf("upstream got %q, want %q", body, want)
	}
}
