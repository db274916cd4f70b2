package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/registry"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memConfig is a small real ConfigService: it validates with the shared
// config package and keeps the last good document in memory.
type memConfig struct {
	mu      sync.Mutex
	yaml    []byte
	version string
}

func (c *memConfig) Apply(_ context.Context, filename string, yaml []byte) (string, error) {
	if _, err := config.Parse(filename, yaml, config.SkipFileChecks()); err != nil {
		return "", err
	}
	sum := sha256.Sum256(yaml)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.yaml, c.version = append([]byte(nil), yaml...), hex.EncodeToString(sum[:6])
	return c.version, nil
}

func (c *memConfig) Get(context.Context) ([]byte, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.yaml == nil {
		return nil, "", fmt.Errorf("no config applied yet: %w", store.ErrNotFound)
	}
	return c.yaml, c.version, nil
}

type proxyList []*meshkitv1.Proxy

func (p proxyList) Proxies() []*meshkitv1.Proxy { return p }

var testProxies = proxyList{{
	NodeId: "edge-1", Cluster: "edge", Kind: "omnirelay", Build: "dev",
	Filters: []string{"envoy.filters.http.router"}, Runtimes: []string{"native"},
	Connected: true, ConnectedSince: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
	Acked:    map[string]string{"type.googleapis.com/envoy.config.cluster.v3.Cluster": "v7"},
	LastNack: &meshkitv1.Nack{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Version: "v6", Detail: "unknown filter"},
	Withheld: []*meshkitv1.Withheld{{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Name: "web", Reason: "needs wasm"}},
}}

const validConfig = `listeners:
  - name: web
    address: 127.0.0.1:8080
    protocol: http
    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: shop
clusters:
  - name: shop
    endpoints: [127.0.0.1:9001]
`

// invalidConfig has two independent mistakes.
const invalidConfig = `listeners:
  - name: web
    address: 127.0.0.1:8080
    protocol: http
    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: missing
clusters:
  - name: shop
    endpoints: [127.0.0.1:9001]
  - name: shop
    endpoints: [127.0.0.1:9002]
`

type env struct {
	reg      *registry.Registry
	grpcAddr string
	httpURL  string
	conn     *grpc.ClientConn
}

// start runs the API on real gRPC and HTTP listeners on 127.0.0.1 over a
// bbolt store in a temporary directory.
func start(t *testing.T) *env {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, registry.Options{})
	srv := New(Options{Registry: reg, Config: &memConfig{}, Proxies: testProxies})

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(gl) })
	wg.Go(func() { _ = hs.Serve(hl) })

	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		_ = hs.Close()
		wg.Wait()
		st.Close()
	})
	return &env{reg: reg, grpcAddr: gl.Addr().String(), httpURL: "http://" + hl.Addr().String(), conn: conn}
}
