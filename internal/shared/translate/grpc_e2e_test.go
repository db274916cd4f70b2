package translate

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// backend is a gRPC server that answers UnaryCall with its own id, so the
// client can count who served each RPC.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (b *backend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.id}, nil
}

// serve starts srv on a fresh 127.0.0.1 port and stops it when the test
// ends.
func serve(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// TestGRPCProxylessClient serves ForGRPC's output from go-control-plane's
// ADS server (SotW, snapshot cache) to a real grpc-go xDS client dialing
// xds:///greeter.test, and checks that the client follows the header route
// and the weighted split. The resolver gets its bootstrap explicitly:
// grpc-go reads the bootstrap environment only once, at init.
func TestGRPCProxylessClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an xDS server, two backends and an xDS client")
	}
	// Registered first, so it runs after every other cleanup: the xDS
	// client, the ADS stream and the servers must all be gone.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	addrA := serve(t, func() *grpc.Server {
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, &backend{id: "a"})
		return s
	}())
	addrB := serve(t, func() *grpc.Server {
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, &backend{id: "b"})
		return s
	}())

	doc := fmt.Sprintf(`listeners:
  - name: greeter
    address: 127.0.0.1:8080
    filters: [{ cors: { allow_origins: ["*"] }, optional: true }]
    virtual_hosts:
      - name: greeter
        domains: [greeter.test, "*.greeter.test"]
        routes:
          - match: { path_prefix: /, headers: { x-pin: b } }
            cluster: b
          - match: { path_prefix: / }
            weighted_clusters: [{ cluster: a, weight: 75 }, { cluster: b, weight: 25 }]
clusters:
  - { name: a, protocol: h2c, endpoints: [{ address: %q, locality: { region: r1, zone: z1 } }] }
  - { name: b, protocol: h2c, endpoints: [%q] }
`, addrA, addrB)
	c, err := config.Parse("grpc-e2e.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := ForGRPC(c, Options{})
	if err != nil {
		t.Fatal(err)
	}

	// go-control-plane's snapshot cache in ADS mode answers a request only
	// when it names every resource of its type; gRPC names exactly what it
	// needs, and ForGRPC sends nothing more.
	res := map[resource.Type][]types.Resource{}
	for _, l := range snap.Listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, r := range snap.Routes {
		res[resource.RouteType] = append(res[resource.RouteType], r)
	}
	for _, cl := range snap.Clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], cl)
	}
	for _, e := range snap.Endpoints {
		res[resource.EndpointType] = append(res[resource.EndpointType], e)
	}
	cs, err := cachev3.NewSnapshot(snap.Hash(), res)
	if err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := cache.SetSnapshot(ctx, "grpc-e2e", cs); err != nil {
		t.Fatal(err)
	}
	xdsSrv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(xdsSrv, serverv3.NewServer(ctx, cache, nil))
	xdsAddr := serve(t, xdsSrv)

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "grpc-e2e", "locality": {"region": "r1", "zone": "z1"}}
}`, xdsAddr)
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///greeter.test",
		grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)

	call := func(ctx context.Context) (string, error) {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		return resp.GetServerId(), err
	}
	// The first RPC waits for LDS, RDS, CDS and EDS; a resource gRPC
	// never gets turns into DOES_NOT_EXIST after 15 s, so give it more.
	first, cancelFirst := context.WithTimeout(ctx, 30*time.Second)
	defer cancelFirst()
	if _, err := call(first); err != nil {
		t.Fatalf("first RPC through xds:///greeter.test: %v", err)
	}

	t.Run("header route", func(t *testing.T) {
		pinned := metadata.AppendToOutgoingContext(ctx, "x-pin", "b")
		for i := range 50 {
			rctx, cancel := context.WithTimeout(pinned, 5*time.Second)
			id, err := call(rctx)
			cancel()
			if err != nil {
				t.Fatalf("RPC %d: %v", i, err)
			}
			if id != "b" {
				t.Fatalf("RPC %d with x-pin: b went to backend %q", i, id)
			}
		}
	})

	t.Run("weighted split", func(t *testing.T) {
		const n = 400
		counts := map[string]int{}
		for i := range n {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			id, err := call(rctx)
			cancel()
			if err != nil {
				t.Fatalf("RPC %d: %v", i, err)
			}
			counts[id]++
		}
		// 75/25 over 400 RPCs: the standard deviation of b's share is
		// about 2.2 points, so 15-35% fails by chance far less than once
		// in a million runs.
		share := float64(counts["b"]) / n
		if share < 0.15 || share > 0.35 || counts["a"]+counts["b"] != n {
			t.Errorf("split = %v, want about 75%% a / 25%% b", counts)
		}
		t.Logf("split over %d RPCs: %v", n, counts)
	})

}
