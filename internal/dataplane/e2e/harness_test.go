package e2e

import (
	"context"
	"crypto/tls"
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

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// freePort returns a loopback address that was free a moment ago. Configs
// name fixed addresses, so tests reserve ports this way.
//
// The kernel may hand a just-released port out again at once, so ports given
// out by this process are remembered and never returned twice.
func freePort(t testing.TB) string {
	t.Helper()
	for {
		addr := testutil.Addr(t)
		portsMu.Lock()
		dup := portsGiven[addr]
		portsGiven[addr] = true
		portsMu.Unlock()
		if !dup {
			return addr
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{}
)

// backend is a real HTTP/1.1 + h2c server on loopback.
type backend struct {
	Name string
	Addr string
	Hits atomic.Int64
	srv  *http.Server
	ln   net.Listener
}

func startBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Name: name, Addr: ln.Addr().String(), ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.Hits.Add(1)
		w.Header().Set("x-backend", name)
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.RequestURI(), r.Proto)
	})
	b.srv = &http.Server{Handler: h2c.NewHandler(mux, &http2.Server{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// proxy starts OmniRelay on a config string; {{name}} placeholders are
// replaced from vars.
type proxy struct {
	*app.Proxy
	path string
	t    testing.TB
}

func startProxy(t testing.TB, cfg string, vars map[string]string) *proxy {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["admin"]; !ok {
		vars["admin"] = freePort(t)
	}
	writeConfig(t, path, cfg, vars)
	p, err := app.Start(app.Options{ConfigPath: path, Log: testLogger(t), AdminAddress: "127.0.0.1:0",
		DrainTimeout: 5 * time.Second, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return &proxy{Proxy: p, path: path, t: t}
}

func writeConfig(t testing.TB, path, cfg string, vars map[string]string) {
	t.Helper()
	for k, v := range vars {
		cfg = strings.ReplaceAll(cfg, "{{"+k+"}}", v)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (p *proxy) adminURL(path string) string {
	return "http://" + p.Admin.Addr().String() + path
}

func get(t testing.TB, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
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
		t.Fatalf("GET %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}, Timeout: 10 * time.Second}
}
