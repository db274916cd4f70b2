package wasm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
)

// staticCluster builds a one-endpoint cluster to addr as the runtime would.
func staticCluster(t *testing.T, name, addr string) *cluster.Cluster {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}}},
		}}},
	}
	cl, err := cluster.Build(c, nil, nil, &cluster.Env{Stats: stats.New(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestClusterCaller: a call-out with a body and headers reaches the
// cluster's host and its answer comes back whole; a name that is no
// cluster is ErrUnknownCluster (proxy_http_call then says BadArgument).
func TestClusterCaller(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("x-seen", r.Method+" "+r.URL.Path+" "+r.Host+" "+r.Header.Get("x-in"))
		w.WriteHeader(201)
		_, _ = w.Write(append([]byte("echo:"), b...))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	cl := staticCluster(t, "auth", ln.Addr().String())
	cc := &ClusterCaller{Cluster: func(name string) *cluster.Cluster {
		if name == "auth" {
			return cl
		}
		return nil
	}}
	tests := []struct {
		name     string
		upstream string
		headers  []HeaderField
		wantErr  error
		want     string // x-seen
		wantBody string
	}{
		{name: "post with body", upstream: "auth", headers: []HeaderField{{":method", "POST"}, {":path", "/check"}, {"x-in", "1"}},
			want: "POST /check auth 1", wantBody: "echo:payload"},
		{name: "authority given", upstream: "auth", headers: []HeaderField{{":method", "POST"}, {":path", "/a"}, {":authority", "auth.example"}},
			want: "POST /a auth.example", wantBody: "echo:payload"},
		{name: "unknown cluster", upstream: "127.0.0.1:1", headers: []HeaderField{{":method", "GET"}, {":path", "/"}}, wantErr: ErrUnknownCluster},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cc.Known(tt.upstream); got != (tt.wantErr == nil) {
				t.Fatalf("Known(%q) = %v", tt.upstream, got)
			}
			resp, err := cc.Call(context.Background(), HTTPCallRequest{Upstream: tt.upstream, Headers: tt.headers, Body: []byte("payload"), Timeout: 5 * time.Second})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var status, seen string
			for _, h := range resp.Headers {
				switch h.Name {
				case ":status":
					status = h.Value
				case "x-seen":
					seen = h.Value
				}
			}
			if status != "201" || seen != tt.want || string(resp.Body) != tt.wantBody {
				t.Fatalf("got %s %q %q, want 201 %q %q", status, seen, resp.Body, tt.want, tt.wantBody)
			}
		})
	}
}
