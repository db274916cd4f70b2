package testutil

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// Backend is a real HTTP server on 127.0.0.1 speaking HTTP/1.1 and h2c,
// stopped when the test ends.
type Backend struct {
	Name string
	Addr string // host:port
	// Hits counts requests other than GET /healthz.
	Hits atomic.Int64
	srv  *http.Server
}

// StartBackend starts a backend. Every answer carries "x-backend: name";
// GET /healthz answers "ok" (for health checks); other requests go to h,
// or, with h nil, are answered with the name as the body.
func StartBackend(t testing.TB, name string, h http.HandlerFunc) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Name: name, Addr: ln.Addr().String()}
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.Hits.Add(1)
		w.Header().Set("x-backend", name)
		h(w, r)
	})
	b.srv = &http.Server{Handler: h2c.NewHandler(mux, &http2.Server{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	// Close, not Shutdown: a test may leave streams open that a graceful
	// stop would wait for.
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// Close stops the backend now (a test that wants it gone mid-test).
func (b *Backend) Close() { _ = b.srv.Close() }

// Serve starts an HTTP/1.1 server for h on 127.0.0.1, stopped when the
// test ends, and returns its address.
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
