package h2

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// startGoH2C serves an x/net/http2 h2c server with the same behaviour as
// testHandler: /hello answers a fixed body, anything else echoes body and
// trailers plus x-echo-done.
func startGoH2C(t testing.TB) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" || r.Method == "GET" {
			w.Header().Set("content-type", "text/plain")
			_, _ = io.WriteString(w, "hello world, this is h2\n")
			return
		}
		w.Header().Set("Trailer", "X-Echo-Done, X-Req-Trailer")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				fl.Flush()
			}
			if err != nil {
				break
			}
		}
		if v := r.Trailer.Get("X-Req-Trailer"); v != "" {
			w.Header().Set("X-Req-Trailer", v)
		}
		w.Header().Set("X-Echo-Done", "1")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

type result struct {
	status  int
	body    []byte
	trailer message.Headers
}

func doRequest(t testing.TB, cl *Client, addr, method, path string, body io.Reader, length int64, trailer map[string]string) (result, error) {
	t.Helper()
	var req message.Request
	var resp message.Response
	req.SetMethod(method)
	req.SetScheme("http")
	req.SetAuthority("test.local")
	req.SetPath(path)
	req.ContentLength = length
	req.Body = body
	if len(trailer) > 0 {
		for k := range trailer {
			req.Header.Add("trailer", k)
		}
		req.Body = &trailerBody{r: body, set: func() {
			for k, v := range trailer {
				req.Trailer.Add(k, v)
			}
		}}
	}
	err := cl.RoundTrip(context.Background(), addr, &req, &resp, Deadlines{Total: time.Now().Add(20 * time.Second)})
	if err != nil {
		return result{}, err
	}
	defer resp.Close()
	var out result
	out.status = resp.Status
	if resp.Body != nil {
		out.body, err = io.ReadAll(resp.Body)
		if err != nil {
			return out, err
		}
	}
	out.trailer.CopyFrom(&resp.Trailer)
	return out, nil
}

// trailerBody sets the request trailers when the body ends, as a codec
// does once it has read them.
type trailerBody struct {
	r   io.Reader
	set func()
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.set != nil {
		b.set()
		b.set = nil
	}
	return n, err
}

func TestClient(t *testing.T) {
	big := make([]byte, 10<<20)
	_, _ = rand.Read(big)
	servers := []struct {
		name string
		addr string
	}{
		{"x/net h2c server", startGoH2C(t)},
		{"own server", startServer(t, &Server{}, testHandler)},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			cl := &Client{}
			defer cl.Close()
			tests := []struct {
				name    string
				method  string
				path    string
				body    []byte
				length  int64
				trailer map[string]string
				want    []byte
			}{
				{name: "get", method: "GET", path: "/hello", want: []byte("hello world, this is h2\n")},
				{name: "post", method: "POST", path: "/echo", body: []byte("ping"), length: 4, want: []byte("ping")},
				{name: "post unknown length", method: "POST", path: "/echo", body: []byte("pong"), length: -1, want: []byte("pong")},
				{name: "post 10MB", method: "POST", path: "/echo", body: big, length: int64(len(big)), want: big},
				{name: "trailers", method: "POST", path: "/echo", body: []byte("t"), length: -1, trailer: map[string]string{"x-req-trailer": "v1"}, want: []byte("t")},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					var body io.Reader
					if tt.body != nil {
						body = bytes.NewReader(tt.body)
					}
					res, err := doRequest(t, cl, srv.addr, tt.method, tt.path, body, tt.length, tt.trailer)
					if err != nil {
						t.Fatal(err)
					}
					if res.status != 200 || !bytes.Equal(res.body, tt.want) {
						t.Fatalf("status %d, body %d bytes (want %d)", res.status, len(res.body), len(tt.want))
					}
					if tt.body != nil {
						if v, _ := res.trailer.Get("x-echo-done"); string(v) != "1" {
							t.Fatalf("x-echo-done trailer missing")
						}
					}
					for k, v := range tt.trailer {
						if got, _ := res.trailer.Get(k); string(got) != v {
							t.Fatalf("trailer %s = %q, want %q", k, got, v)
						}
					}
				})
			}
			t.Run("full duplex", func(t *testing.T) { testFullDuplex(t, cl, srv.addr) })
		})
	}
}

// testFullDuplex sends a chunk and waits for its echo before sending the
// next: it only passes if request and response stream concurrently.
func testFullDuplex(t *testing.T, cl *Client, addr string) {
	pr, pw := io.Pipe()
	var req message.Request
	var resp message.Response
	req.SetMethod("POST")
	req.SetScheme("http")
	req.SetAuthority("test.local")
	req.SetPath("/echo")
	req.ContentLength = -1
	req.Body = pr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := pw.Write([]byte("chunk-0;"))
		errc <- err
	}()
	if err := cl.RoundTrip(ctx, addr, &req, &resp, Deadlines{}); err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for i := 0; i < 5; i++ {
		want := "chunk-" + string(rune('0'+i)) + ";"
		if _, err := io.ReadFull(resp.Body, buf[:len(want)]); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if string(buf[:len(want)]) != want {
			t.Fatalf("round %d: got %q want %q", i, buf[:len(want)], want)
		}
		if i < 4 {
			if _, err := pw.Write([]byte("chunk-" + string(rune('1'+i)) + ";")); err != nil {
				t.Fatal(err)
			}
		}
	}
	pw.Close()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("tail %q, %v", rest, err)
	}
}

func TestClientManyConcurrentStreams(t *testing.T) {
	addr := startServer(t, &Server{MaxConcurrentStreams: 250}, testHandler)
	cl := &Client{}
	defer cl.Close()
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := strings.Repeat("x", 1+i%300)
			res, err := doRequest(t, cl, addr, "POST", "/echo", strings.NewReader(body), int64(len(body)), nil)
			if err == nil && string(res.body) != body {
				err = errors.New("body mismatch")
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	p := cl.pool(addr)
	p.mu.Lock()
	conns := len(p.conns)
	p.mu.Unlock()
	if conns < 1 || conns > 8 {
		t.Fatalf("%d connections for %d streams", conns, n)
	}
}
