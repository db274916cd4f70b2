package wasm_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
)

const trailersConfig = `
admin: { address: {{admin}} }
listeners:
  - name: grpc
    address: {{grpc}}
    filters:
      - extension: { name: grpc-trailers, package: grpc-trailers.orx, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: /, grpc: true }, cluster: grpc }] }]
  - name: http
    address: {{http}}
    filters:
      - extension: { name: grpc-trailers-http, package: grpc-trailers.orx, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: http }] }]
clusters:
  - { name: grpc, protocol: h2c, endpoints: [{{grpcbackend}}] }
  - { name: http, endpoints: [{{httpbackend}}] }

`

// TestTrailersThroughProxy: a real gRPC call through OmniRelay, where the
// grpc-trailers plugin reads grpc-status from the response trailers and
// adds a trailer the client receives; and an HTTP/1.1 request with
// trailers, where it adds a request trailer the backend receives.
func TestTrailersThroughProxy(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "grpc-trailers", wasm.GuestTrailers, wasm.ABI021)

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

	httpBackend := serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "client=%s wasm=%s", r.Trailer.Get("x-client"), r.Trailer.Get("x-wasm-request-trailers"))
	}))
	vars := map[string]string{"grpc": freeAddr(t), "http": freeAddr(t), "grpcbackend": ln.Addr().String(), "httpbackend": httpBackend}
	startProxy(t, dir, trailersConfig, vars)

	t.Run("grpc response trailers", func(t *testing.T) {
		cc, err := grpc.NewClient(vars["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		hc := healthpb.NewHealthClient(cc)
		for range 4 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var tr metadata.MD
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}, grpc.Trailer(&tr))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("status %v", resp.GetStatus())
			}
			if got := tr.Get("x-wasm-grpc-status"); len(got) != 1 || got[0] != "0" {
				t.Fatalf("trailer x-wasm-grpc-status = %q, want [0] (trailers %v)", got, tr)
			}
		}
	})

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
}
