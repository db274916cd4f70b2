package wasm_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

const trailersConfig = `
admin: { address: {{admin}} }
listeners:
  - name: grpc
    address: {{grpc}}
    filters:
      - extension: { name: grpc-trailers, package: grpc-trailers.orx, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: /, grpc: true }, cluster: grpc }] }]
  - name: trailer-panic
    address: {{trailerpanic}}
    filters:
      - extension: { name: trailer-panic, package: guest.orx, config: trailerpanic, policy: fail_closed, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: /, grpc: true }, cluster: grpc }] }]
  - name: trailer-reply
    address: {{trailerreply}}
    filters:
      - extension: { name: trailer-reply, package: guest.orx, config: trailerreply, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: /, grpc: true }, cluster: grpc }] }]
  - name: http
    address: {{http}}
    filters:
      - extension: { name: grpc-trailers-http, package: grpc-trailers.orx, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: http }] }]
  - name: http-h2up
    address: {{httph2up}}
    filters:
      - extension: { name: grpc-trailers-h2up, package: grpc-trailers.orx, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: h2up }] }]
clusters:
  - { name: grpc, protocol: h2c, endpoints: [{{grpcbackend}}] }
  - { name: http, protocol: http1, endpoints: [{{httpbackend}}] }
  - { name: h2up, protocol: h2c, endpoints: [{{h2backend}}] }

`

// TestTrailersThroughProxy: a real gRPC call through OmniRelay, where the
// grpc-trailers plugin reads grpc-status from the response trailers and
// adds a trailer the client receives; and an HTTP/1.1 request with
// trailers, where it adds a request trailer the backend receives.
func TestTrailersThroughProxy(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "grpc-trailers", wasm.GuestTrailers, wasm.ABI021)
	writePackage(t, dir, "guest", wasm.GuestTest, wasm.ABI021)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("ok", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	seenTrailers := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the trailers are known once the body is read
		w.Header().Set("x-upstream-proto", r.Proto)
		fmt.Fprintf(w, "client=%s wasm=%s", r.Trailer.Get("x-client"), r.Trailer.Get("x-wasm-request-trailers"))
	})
	httpBackend := serveOn(t, seenTrailers)
	h2Backend := serveOn(t, h2c.NewHandler(seenTrailers, &http2.Server{}))
	vars := map[string]string{"grpc": testutil.Addr(t), "trailerpanic": testutil.Addr(t), "trailerreply": testutil.Addr(t), "http": testutil.Addr(t), "httph2up": testutil.Addr(t),
		"grpcbackend": ln.Addr().String(), "httpbackend": httpBackend, "h2backend": h2Backend}
	startProxy(t, dir, trailersConfig, vars)

	// check makes a health Check through listener and returns the
	// response trailers.
	check := func(t *testing.T, listener string) metadata.MD {
		t.Helper()
		cc, err := grpc.NewClient(vars[listener], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var tr metadata.MD
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}, grpc.Trailer(&tr))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("status %v", resp.GetStatus())
		}
		return tr
	}
	trailerTests := []struct {
		name, listener, trailer, want string
	}{
		{name: "plugin reads grpc-status and adds a trailer", listener: "grpc", trailer: "x-wasm-grpc-status", want: "0"},
		// The head is sent: a local response from a trailer callback is
		// refused with BadArgument, and the call goes on.
		{name: "local response refused in trailers", listener: "trailerreply", trailer: "x-reply-err", want: "proxy-wasm: bad argument"},
		// A guest that fails in its trailers breaks its instance; the
		// trailers pass unchanged whatever the policy (here fail_closed):
		// the call succeeds, so grpc-status 0 arrived (grpc-go keeps it
		// out of the trailer metadata).
		{name: "guest panic in trailers passes them unchanged", listener: "trailerpanic"},
	}
	for _, tt := range trailerTests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				tr := check(t, tt.listener)
				if tt.trailer == "" {
					continue
				}
				if got := tr.Get(tt.trailer); len(got) != 1 || got[0] != tt.want {
					t.Fatalf("trailer %s = %q, want [%s] (trailers %v)", tt.trailer, got, tt.want, tr)
				}
			}
		})
	}

	t.Run("http/1.1 request trailers", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", "http://"+vars["http"]+"/", pr)
		req.Trailer = http.Header{"X-Client": nil}
		go func() {
			_, _ = pw.Write([]byte("some body"))
			req.Trailer.Set("X-Client", "c1")
			_ = pw.Close()
		}()
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.TrimSpace(string(b)); resp.StatusCode != 200 || got != "client=c1 wasm=1" {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, got, "client=c1 wasm=1")
		}
	})

	// The same over HTTP/2 (h2c, prior knowledge) from the client: the
	// trailers arrive as a HEADERS frame after the DATA, and the plugin's
	// request-trailers callback runs on them before they are forwarded,
	// to an HTTP/1.1 upstream (chunked trailer section) or an h2c one.
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	h2Tests := []struct {
		name, listener, upstream string
	}{
		{name: "h2c request trailers to an http/1.1 upstream", listener: "http", upstream: "HTTP/1.1"},
		{name: "h2c request trailers to an h2c upstream", listener: "httph2up", upstream: "HTTP/2.0"},
	}
	for _, tt := range h2Tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 3 { // several streams on one connection
				pr, pw := io.Pipe()
				req, _ := http.NewRequest("POST", "http://"+vars[tt.listener]+"/", pr)
				// Go's HTTP/2 server shows a handler only the trailers the
				// request declared (its "trailer" header), so the one the
				// plugin adds is declared here; the client never sends it.
				req.Trailer = http.Header{"X-Client": nil, "X-Wasm-Request-Trailers": nil}
				go func() {
					_, _ = pw.Write([]byte("some body"))
					req.Trailer.Set("X-Client", fmt.Sprintf("c%d", i))
					_ = pw.Close()
				}()
				resp, err := h2.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("client=c%d wasm=1", i)
				if got := strings.TrimSpace(string(b)); resp.StatusCode != 200 || got != want {
					t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, got, want)
				}
				if resp.ProtoMajor != 2 {
					t.Fatalf("client spoke %s to the proxy, want HTTP/2", resp.Proto)
				}
				if got := resp.Header.Get("x-upstream-proto"); got != tt.upstream {
					t.Fatalf("upstream saw %q, want %q", got, tt.upstream)
				}
			}
		})
	}
}
