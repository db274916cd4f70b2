package xdsserver

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

type idBackend struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (b *idBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.id}, nil
}

// proxylessSnapshot is translate.ForGRPC's output for one virtual host
// greeter.test routing to a cluster whose only endpoint is addr.
func proxylessSnapshot(t *testing.T, version, addr string) *Snapshot {
	t.Helper()
	doc := fmt.Sprintf(`listeners:
  - name: greeter
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: greeter
        domains: [greeter.test]
        routes:
          - match: { path_prefix: / }
            cluster: backend
clusters:
  - { name: backend, protocol: h2c, endpoints: [{ address: %q, locality: { region: r1, zone: z1 } }] }
`, addr)
	c, err := config.Parse("proxyless.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := translate.ForGRPC(c, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := &Snapshot{Version: version, Resources: map[string][]*Resource{}}
	add := func(name string, m proto.Message) {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		out.Resources[a.TypeUrl] = append(out.Resources[a.TypeUrl], &Resource{Name: name, Body: a})
	}
	for _, l := range snap.Listeners {
		add(l.Name, l)
	}
	for _, r := range snap.Routes {
		add(r.Name, r)
	}
	for _, cl := range snap.Clusters {
		add(cl.Name, cl)
	}
	for _, e := range snap.Endpoints {
		add(e.ClusterName, e)
	}
	return out
}

// TestGRPCProxylessClient: a real grpc-go xDS client (ADS, SotW) dialing
// xds:///greeter.test through this server, on either transport, follows an
// endpoint change.
func TestGRPCProxylessClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an xDS client and two backends")
	}
	backend := func(id string) string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, &idBackend{id: id})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.Serve(lis)
		}()
		t.Cleanup(func() {
			s.Stop()
			<-done
		})
		return lis.Addr().String()
	}
	addrA, addrB := backend("a"), backend("b")
	srv := startServer(t, Options{Group: func(*corev3.Node) (string, error) { return "grpc", nil }})
	srv.cache.Set("grpc", proxylessSnapshot(t, "1", addrA))

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "proxyless", "locality": {"region": "r1", "zone": "z1"}}
}`, srv.addr)
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///greeter.test", grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		return resp.GetServerId(), err
	}
	if id, err := call(); err != nil || id != "a" {
		t.Fatalf("first RPC: %q, %v", id, err)
	}
	srv.cache.Set("grpc", proxylessSnapshot(t, "2", addrB))
	deadline := time.Now().Add(testTimeout)
	for {
		id, err := call()
		if err != nil {
			t.Fatal(err)
		}
		if id == "b" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never followed the endpoint change")
		}
	}
}
