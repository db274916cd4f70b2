package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

func startMeshKit(t *testing.T, configYAML string) *serve.Process {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p := meshtest.Start(t, serve.Options{
		XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: dir,
		ConfigFile: cfg, ReplicaID: "e2e", Log: testutil.Logger(t),
	})
	return p
}

// TestMeshCapabilityFiltering: a node whose build lacks the CORS filter
// gets the listener that uses CORS optionally without the filter, does not
// get the listener that requires it, and MeshKit shows what it withheld and
// why. A full build gets both listeners with the filter.
func TestMeshCapabilityFiltering(t *testing.T) {
	doc := fmt.Sprintf(`listeners:
  - name: strict
    address: %s
    filters: [{ cors: { allow_origins: ["*"] } }]
    virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: c }] }]
  - name: lenient
    address: %s
    filters: [{ cors: { allow_origins: ["*"] }, optional: true }]
    virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: c }] }]
clusters:
  - { name: c, endpoints: [127.0.0.1:9] }
`, testutil.Addr(t), testutil.Addr(t))
	mk := startMeshKit(t, doc)

	lean := capability.Set{Kind: capability.KindOmniRelay, Build: "lean",
		Filters: []string{translate.NameHCM, translate.NameRouter, translate.NameTCPProxy}}
	full := lean
	full.Build = "full"
	full.Filters = append([]string{translate.NameCORS}, lean.Filters...)

	for _, tc := range []struct {
		name      string
		caps      capability.Set
		listeners map[string]bool // listener -> has the CORS filter
	}{
		{"lean build", lean, map[string]bool{"lenient": false}},
		{"full build", full, map[string]bool{"strict": true, "lenient": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev3.Node{Id: "node-" + tc.caps.Build, Cluster: "e2e"}
			tc.caps.Apply(node)
			got := fetchListeners(t, mk.XDSAddr().String(), node)
			if len(got) != len(tc.listeners) {
				t.Fatalf("listeners = %v, want %v", keys(got), tc.listeners)
			}
			for name, wantCORS := range tc.listeners {
				l, ok := got[name]
				if !ok {
					t.Fatalf("listener %q missing; got %v", name, keys(got))
				}
				if has := hasHTTPFilter(t, l, translate.NameCORS); has != wantCORS {
					t.Errorf("listener %q has CORS filter = %v, want %v", name, has, wantCORS)
				}
			}
		})
	}
	// The lean node's group shows what was withheld, and why.
	var withheld []string
	cc := apiConn(t, mk.APIAddr().String())
	// The lean node's stream ended with fetchListeners; connect again and
	// keep it open while asking MeshKit.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := &corev3.Node{Id: "node-lean-2", Cluster: "e2e"}
	lean.Apply(node)
	openADS(ctx, t, mk.XDSAddr().String(), node)
	testutil.Eventually(t, 5*time.Second, 25*time.Millisecond, "withheld listener visible in the proxy directory", func() (bool, string) {
		p := proxyByNode(t, cc, "node-lean-2")
		withheld = withheld[:0]
		for _, w := range p.GetWithheld() {
			withheld = append(withheld, w.GetName()+": "+w.GetReason())
		}
		// The listener, and the route configuration only it used.
		for _, w := range withheld {
			if contains(w, "strict: requires filter "+translate.NameCORS) {
				return true, ""
			}
		}
		return false, fmt.Sprint(withheld)
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// openADS opens a delta ADS stream for node and subscribes to listeners;
// the stream stays open until ctx ends.
func openADS(ctx context.Context, t *testing.T, addr string, node *corev3.Node) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	return st
}

// fetchListeners subscribes to every listener over delta ADS and returns
// the first answer.
func fetchListeners(t *testing.T, addr string, node *corev3.Node) map[string]*listenerv3.Listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := openADS(ctx, t, addr, node)
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*listenerv3.Listener{}
	for _, r := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := r.GetResource().UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		out[l.GetName()] = l
	}
	return out
}

func hasHTTPFilter(t *testing.T, l *listenerv3.Listener, name string) bool {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != translate.NameHCM {
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			for _, hf := range h.GetHttpFilters() {
				if hf.GetName() == name {
					return true
				}
			}
		}
	}
	return false
}

type grpcBackend struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (b *grpcBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.id}, nil
}

func serveGRPC(t *testing.T, id string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &grpcBackend{id: id})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// TestMeshGRPCProxyless: a real grpc-go client dialing xds:///shop.test gets
// its routes, clusters and endpoints from MeshKit (the same omnirelay.v1
// document the proxies get) and follows the header route and the split.
func TestMeshGRPCProxyless(t *testing.T) {
	a, b := serveGRPC(t, "a"), serveGRPC(t, "b")
	doc := fmt.Sprintf(`listeners:
  - name: shop
    address: %s
    virtual_hosts:
      - name: shop
        domains: [shop.test]
        routes:
          - match: { path_prefix: /, headers: { x-canary: "true" } }
            cluster: b
          - match: { path_prefix: / }
            weighted_clusters: [{ cluster: a, weight: 80 }, { cluster: b, weight: 20 }]
clusters:
  - { name: a, protocol: h2c, endpoints: [%s] }
  - { name: b, protocol: h2c, endpoints: [%s] }
`, testutil.Addr(t), a, b)
	mk := startMeshKit(t, doc)
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "grpc-client-1", "cluster": "e2e", "locality": {"region": "r1", "zone": "z1"}}
}`, mk.XDSAddr().String())
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///shop.test", grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	call := func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		return resp.GetServerId(), err
	}
	if _, err := call(context.Background()); err != nil {
		t.Fatalf("first RPC through xds:///shop.test served by MeshKit: %v", err)
	}
	canary := metadata.AppendToOutgoingContext(context.Background(), "x-canary", "true")
	for i := 0; i < 30; i++ {
		if id, err := call(canary); err != nil || id != "b" {
			t.Fatalf("canary RPC %d: backend %q, %v", i, id, err)
		}
	}
	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		id, err := call(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		counts[id]++
	}
	// 80/20 over 300: b's share has a standard deviation of ~2.3 points.
	if share := float64(counts["b"]) / 300; share < 0.08 || share > 0.32 {
		t.Fatalf("split = %v, want about 80/20", counts)
	}
	cc := apiConn(t, mk.APIAddr().String())
	if p := proxyByNode(t, cc, "grpc-client-1"); p == nil || p.GetKind() != string(capability.KindGRPC) {
		t.Fatalf("MeshKit's directory entry for the gRPC client: %v", p)
	}
	t.Logf("split over 300 RPCs: %v", counts)
}
