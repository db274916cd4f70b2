package e2e

// gRPC through the proxy: grpc-go's interop test server is the backend
// (h2c), and every interop client case that needs no outside infrastructure
// runs through an h2c listener and through a TLS listener (ALPN h2).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// The interop client reports failures with grpclog's Fatal, which exits the
// process. The logger installed here panics with interopFailure instead, so
// that runInterop can turn a failure into t.Fatal. grpclog keeps its logger
// in a package variable that must be set before any gRPC use, hence init.
func init() {
	grpclog.SetLoggerV2(interopLogger{verbose: os.Getenv("E2E_LOG") != ""})
}

type interopFailure string

type interopLogger struct{ verbose bool }

func (l interopLogger) print(args ...any) {
	if l.verbose {
		fmt.Fprintln(os.Stderr, args...)
	}
}

func (l interopLogger) Info(args ...any)                    { l.print(args...) }
func (l interopLogger) Infoln(args ...any)                  { l.print(args...) }
func (l interopLogger) Infof(format string, args ...any)    { l.print(fmt.Sprintf(format, args...)) }
func (l interopLogger) Warning(args ...any)                 { l.print(args...) }
func (l interopLogger) Warningln(args ...any)               { l.print(args...) }
func (l interopLogger) Warningf(format string, args ...any) { l.print(fmt.Sprintf(format, args...)) }
func (l interopLogger) Error(args ...any)                   { l.print(args...) }
func (l interopLogger) Errorln(args ...any)                 { l.print(args...) }
func (l interopLogger) Errorf(format string, args ...any)   { l.print(fmt.Sprintf(format, args...)) }
func (l interopLogger) Fatal(args ...any)                   { panic(interopFailure(fmt.Sprint(args...))) }
func (l interopLogger) Fatalln(args ...any)                 { panic(interopFailure(fmt.Sprint(args...))) }
func (l interopLogger) Fatalf(format string, args ...any) {
	panic(interopFailure(fmt.Sprintf(format, args...)))
}
func (l interopLogger) V(int) bool                      { return l.verbose }
func (l interopLogger) InfoDepth(_ int, args ...any)    { l.print(args...) }
func (l interopLogger) WarningDepth(_ int, args ...any) { l.print(args...) }
func (l interopLogger) ErrorDepth(_ int, args ...any)   { l.print(args...) }
func (l interopLogger) FatalDepth(_ int, args ...any)   { panic(interopFailure(fmt.Sprint(args...))) }

// runInterop runs one interop case and fails t if it reported a failure.
func runInterop(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interopFailure); ok {
				t.Fatalf("interop: %s", f)
			}
			panic(r)
		}
	}()
	fn()
}

// idServer fills ServerId, which the interop server leaves to its host
// (DoPickFirstUnary needs it).
type idServer struct{ testgrpc.TestServiceServer }

func (s idServer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	resp, err := s.TestServiceServer.UnaryCall(ctx, req)
	if err == nil && req.GetFillServerId() {
		resp.ServerId = "interop-backend"
	}
	return resp, err
}

func startInteropServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, idServer{interop.NewTestServer()})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

const grpcConfig = `
admin: { address: {{admin}} }
listeners:
  - name: grpc
    address: {{web}}
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: /, grpc: true }, cluster: interop }]
  - name: grpcs
    address: {{webtls}}
    protocol: https
    tls: { certificates: [{ cert_file: {{cert}}, key_file: {{key}} }] }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: /, grpc: true }, cluster: interop }]
clusters:
  - { name: interop, protocol: h2c, endpoints: [{{backend}}] }
`

func TestGRPCInterop(t *testing.T) {
	ca := newProtoCA(t)
	cert, key, _ := ca.issue(t, "grpc", "grpc.example.com")
	web, webTLS := testutil.Addr(t), testutil.Addr(t)
	startProxy(t, grpcConfig, map[string]string{"web": web, "webtls": webTLS, "cert": cert, "key": key,
		"backend": startInteropServer(t)})

	type interopCase struct {
		name string
		run  func(ctx context.Context, tc testgrpc.TestServiceClient, cc *grpc.ClientConn)
	}
	cases := []interopCase{
		{"empty_unary", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoEmptyUnaryCall(ctx, tc)
		}},
		{"large_unary", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoLargeUnaryCall(ctx, tc)
		}},
		{"client_streaming", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoClientStreaming(ctx, tc)
		}},
		{"server_streaming", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoServerStreaming(ctx, tc)
		}},
		{"ping_pong", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoPingPong(ctx, tc)
		}},
		{"empty_stream", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoEmptyStream(ctx, tc)
		}},
		{"timeout_on_sleeping_server", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoTimeoutOnSleepingServer(ctx, tc)
		}},
		{"cancel_after_begin", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCancelAfterBegin(ctx, tc)
		}},
		{"cancel_after_first_response", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCancelAfterFirstResponse(ctx, tc)
		}},
		{"custom_metadata", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCustomMetadata(ctx, tc)
		}},
		{"status_code_and_message", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoStatusCodeAndMessage(ctx, tc)
		}},
		{"special_status_message", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoSpecialStatusMessage(ctx, tc)
		}},
		{"unimplemented_service", func(ctx context.Context, _ testgrpc.TestServiceClient, cc *grpc.ClientConn) {
			interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
		}},
		{"unimplemented_method", func(ctx context.Context, _ testgrpc.TestServiceClient, cc *grpc.ClientConn) {
			interop.DoUnimplementedMethod(ctx, cc)
		}},
		{"pick_first_unary", func(ctx context.Context, tc testgrpc.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoPickFirstUnary(ctx, tc)
		}},
	}

	for _, down := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
	}{
		{name: "h2c", addr: web, creds: insecure.NewCredentials()},
		{name: "tls", addr: webTLS, creds: credentials.NewTLS(&tls.Config{RootCAs: ca.pool, ServerName: "grpc.example.com"})},
	} {
		t.Run(down.name, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///"+down.addr, grpc.WithTransportCredentials(down.creds))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			tc := testgrpc.NewTestServiceClient(cc)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					runInterop(t, func() { c.run(ctx, tc, cc) })
				})
			}
		})
	}
}

// TestGRPCRequestBodyOutlivesStream is a regression test for a lifetime
// bug: x/net/http2's upstream body writer reads the request body on its own
// goroutine, and that goroutine could still be inside Read after the
// downstream stream ended and its pooled objects were reused for the next
// stream (found by -race in interop cancel_after_first_response). Run under
// -race: responses end while request streams are still open.
func TestGRPCRequestBodyOutlivesStream(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// Answer at once without reading the body: the response ends while
		// the request body is still streaming.
		w.Header().Set("content-type", "application/grpc")
		w.Header().Set("grpc-status", "0")
	})
	web := startProtoProxy(t, b.addr, "h2c")
	client := testutil.H2CClient()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/svc/%d", web, i), pr)
			req.Header.Set("content-type", "application/grpc")
			go func() {
				_, _ = pw.Write([]byte("\x00\x00\x00\x00\x01x"))
				time.Sleep(time.Millisecond)
				pw.CloseWithError(errors.New("client gives up"))
			}()
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}
