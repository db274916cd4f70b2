package serve

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestMetricsEndpoint: /metrics on the API port counts applies (ok and
// rejected), rebuilds, open xDS streams by client kind and ACKs, from a
// real ADS stream, on either xDS transport.
func TestMetricsEndpoint(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) { testMetricsEndpoint(t, transport) })
	}
	if _, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", XDSTransport: "quic",
		DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "want lean or grpc") {
		t.Fatalf("unknown transport: %v", err)
	}
}

func testMetricsEndpoint(t *testing.T, transport string) {
	p, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", IdentityAddress: "", XDSTransport: transport,
		DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.MeshKit.Apply(ctx, "mesh.yaml", []byte(`
listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }]
clusters:
  - { name: app, endpoints: [127.0.0.1:9001] }
`)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.MeshKit.Apply(ctx, "bad.yaml", []byte("listeners: [{ name: web, cluster: nowhere }]")); err == nil {
		t.Fatal("a dangling reference was applied")
	}

	conn, err := grpc.NewClient(p.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "edge-1", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}

	scrape := func() string {
		resp, err := http.Get("http://" + p.APIAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := []string{
		`meshkit_config_applies_total{result="ok"} 1`,
		`meshkit_config_applies_total{result="rejected"} 1`,
		`meshkit_xds_acks_total{type="Cluster"} 1`,
		`meshkit_xds_streams{kind="envoy"} 1`,
		`go_goroutines`,
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "every metric on /metrics", func() (bool, string) {
		body := scrape()
		missing := "meshkit_snapshot_rebuilds_total"
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "meshkit_snapshot_rebuilds_total" && strings.Contains(body, missing) {
			return true, ""
		}
		return false, fmt.Sprintf("/metrics lacks %q:\n%s", missing, grepMeshkit(body))
	})
}

func grepMeshkit(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "meshkit_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
