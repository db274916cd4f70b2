package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	dpdemo "github.com/omnirelay/omnirelay/internal/dataplane/demo"
	"github.com/omnirelay/omnirelay/internal/demo"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// meshConfig is the demo's config shape on free ports: a web listener with
// a canary route and a weighted split, shop-v1 static, shop-v2 static plus
// the registry's "shop-v2" service.
type meshConfig struct {
	Web, Admin         string
	V1a, V1b, V2, V2b  string
	WeightV1, WeightV2 int
	Extra              string // appended to the web listener (e.g. filters)
}

func (c meshConfig) YAML() []byte {
	return []byte(fmt.Sprintf(`version: omnirelay.v1
admin: { address: %s }
listeners:
  - name: web
    address: %s
    protocol: http
%s    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - match: { path_prefix: /api/, headers: { x-canary: "true" } }
            cluster: shop-v2
          - match: { path_prefix: / }
            %s
            timeout: 5s
            retry: { attempts: 3, on: [connect-failure, reset, 5xx], per_try_timeout: 1s }
clusters:
  - name: shop-v1
    endpoints: [%s, %s]
  - name: shop-v2
    service: shop-v2
    endpoints: [%s]
`, c.Admin, c.Web, c.Extra, c.action(), c.V1a, c.V1b, c.V2))
}

// action is the default route's action: a weighted split, or one cluster
// when a weight is zero (a zero weight is invalid).
func (c meshConfig) action() string {
	switch {
	case c.WeightV1 == 0:
		return "cluster: shop-v2"
	case c.WeightV2 == 0:
		return "cluster: shop-v1"
	}
	return fmt.Sprintf("weighted_clusters: [{ cluster: shop-v1, weight: %d }, { cluster: shop-v2, weight: %d }]", c.WeightV1, c.WeightV2)
}

func newMeshConfig(t *testing.T) meshConfig {
	return meshConfig{
		Web: testutil.Addr(t), Admin: testutil.Addr(t),
		V1a: testutil.Addr(t), V1b: testutil.Addr(t), V2: testutil.Addr(t), V2b: testutil.Addr(t),
		WeightV1: 80, WeightV2: 20,
	}
}

func (c meshConfig) backends() []dpdemo.Backend {
	return []dpdemo.Backend{{Name: "shop-v1-a", Addr: c.V1a}, {Name: "shop-v1-b", Addr: c.V1b}, {Name: "shop-v2", Addr: c.V2}, {Name: "shop-v2-b", Addr: c.V2b}}
}

// startDemo runs the demo assembly (MeshKit + proxy over xDS + backends) on
// free ports.
func startDemo(t *testing.T, c meshConfig, mod func(*demo.Options)) *demo.Demo {
	t.Helper()
	opt := demo.Options{
		Log: testutil.Logger(t), Dir: t.TempDir(), XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0",
		// A free admin port: the config's default (9901) would collide with
		// anything else on the machine using it.
		AdminAddress: testutil.Addr(t),
		Backends:     c.backends(), Config: c.YAML(),
	}
	if mod != nil {
		mod(&opt)
	}
	d, err := demo.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Stop(ctx)
	})
	return d
}

// get sends one request through the proxy and returns the backend's name.
func get(client *http.Client, addr, path string, hdr map[string]string) (string, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return resp.Header.Get("x-backend"), nil
}

// spread sends n requests and counts answers per backend.
func spread(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		b, err := get(client, addr, "/", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		counts[b]++
	}
	return counts
}

// apiConn dials MeshKit's API.
func apiConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func proxyByNode(t *testing.T, cc *grpc.ClientConn, node string) *meshkitv1.Proxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := meshkitv1.NewProxiesClient(cc).List(ctx, &meshkitv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.GetProxies() {
		if p.GetNodeId() == node {
			return p
		}
	}
	return nil
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// okBackend serves "ok" on loopback and returns its address.
func okBackend(t *testing.T) string {
	t.Helper()
	return testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
}

// startSignedMeshKit starts MeshKit on dir (embedded store) signing with
// dir/mesh.key, stopped when the test ends.
func startSignedMeshKit(t *testing.T, dir string) *serve.Process {
	t.Helper()
	mk := meshtest.Start(t, serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: dir,
		SigningKey: filepath.Join(dir, "mesh.key"), ReplicaID: "e2e", Log: testutil.Logger(t)})
	return mk
}
