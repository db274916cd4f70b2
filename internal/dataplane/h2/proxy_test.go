package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// proxyHandler forwards each stream to upstream through cl, the way the
// connection manager does: request straight through, response head, body
// and trailers copied back as they come.
func proxyHandler(cl *Client, upstream string) Handler {
	return func(st *Stream) {
		resp := respPool.Get().(*message.Response)
		defer respPool.Put(resp)
		resp.Reset()
		err := cl.RoundTrip(st.Context(), upstream, st.Request(), resp, Deadlines{})
		if err != nil {
			// A reset upstream is passed on as a reset: gRPC clients read
			// RST_STREAM(CANCEL) after their deadline as DEADLINE_EXCEEDED.
			var se *StreamError
			if errors.As(err, &se) && se.Remote {
				st.Reset(se.Code)
				return
			}
			var r message.Response
			r.Status = 502
			_ = st.WriteHeaders(&r, true)
			return
		}
		defer resp.Close()
		if resp.Body == nil {
			if resp.Trailer.Len() > 0 {
				_ = st.WriteHeaders(resp, false)
				_ = st.WriteTrailers(&resp.Trailer)
				return
			}
			_ = st.WriteHeaders(resp, true)
			return
		}
		if err := st.WriteHeaders(resp, false); err != nil {
			return
		}
		bp := cl.getBuf()
		defer cl.bufs.Put(bp)
		buf := *bp
		for {
			n, err := resp.Body.Read(buf)
			end := err == io.EOF && resp.Trailer.Len() == 0
			if n > 0 || end {
				if werr := st.WriteData(buf[:n], end); werr != nil {
					return
				}
			}
			if err == io.EOF {
				if !end {
					_ = st.WriteTrailers(&resp.Trailer)
				}
				return
			}
			if err != nil {
				st.Reset(http2.ErrCodeCancel)
				return
			}
		}
	}
}

func startGRPC(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// TestGRPCThroughProxy runs grpc-go's interop cases: grpc-go client ->
// Server -> Client -> grpc-go server.
func TestGRPCThroughProxy(t *testing.T) {
	backend := startGRPC(t)
	cl := &Client{}
	defer cl.Close()
	addr := startServer(t, &Server{}, proxyHandler(cl, backend))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testgrpc.NewTestServiceClient(conn)
	tests := []struct {
		name string
		run  func(ctx context.Context)
	}{
		{"empty unary", func(ctx context.Context) { interop.DoEmptyUnaryCall(ctx, tc) }},
		{"large unary", func(ctx context.Context) { interop.DoLargeUnaryCall(ctx, tc) }},
		{"client streaming", func(ctx context.Context) { interop.DoClientStreaming(ctx, tc) }},
		{"server streaming", func(ctx context.Context) { interop.DoServerStreaming(ctx, tc) }},
		{"ping pong", func(ctx context.Context) { interop.DoPingPong(ctx, tc) }},
		{"empty stream", func(ctx context.Context) { interop.DoEmptyStream(ctx, tc) }},
		{"timeout on sleeping server", func(ctx context.Context) { interop.DoTimeoutOnSleepingServer(ctx, tc) }},
		{"cancel after begin", func(ctx context.Context) { interop.DoCancelAfterBegin(ctx, tc) }},
		{"cancel after first response", func(ctx context.Context) { interop.DoCancelAfterFirstResponse(ctx, tc) }},
		{"custom metadata", func(ctx context.Context) { interop.DoCustomMetadata(ctx, tc) }},
		{"status code and message", func(ctx context.Context) { interop.DoStatusCodeAndMessage(ctx, tc) }},
		{"special status message", func(ctx context.Context) { interop.DoSpecialStatusMessage(ctx, tc) }},
		{"unimplemented method", func(ctx context.Context) { interop.DoUnimplementedMethod(ctx, conn) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tt.run(ctx)
		})
	}
}
