package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
	"github.com/omnirelay/omnirelay/internal/controlplane/registry"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memConfig is a small real ConfigService validating with the shared
// config package.
type memConfig struct {
	mu      sync.Mutex
	yaml    []byte
	version string
}

func (c *memConfig) Apply(_ context.Context, filename string, data []byte) (string, error) {
	if _, err := config.Parse(filename, data, config.SkipFileChecks()); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.yaml, c.version = data, hex.EncodeToString(sum[:6])
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

// startMeshKitAPI serves the real API on 127.0.0.1 over a bbolt store.
func startMeshKitAPI(t *testing.T, proxies proxyList) (addr string, reg *registry.Registry) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg = registry.New(st, registry.Options{})
	srv := api.New(api.Options{Registry: reg, Config: &memConfig{}, Proxies: proxies})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done; st.Close() })
	return l.Addr().String(), reg
}

// run executes omnictl in-process against addr.
func run(ctx context.Context, addr string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(append([]string{"--server", addr}, args...))
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

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

var nackingProxy = proxyList{{
	NodeId: "edge-1", Replica: "meshkit-a", Cluster: "edge", Kind: "omnirelay", Build: "dev", Connected: true,
	Acked:    map[string]string{"type.googleapis.com/envoy.config.cluster.v3.Cluster": "v7"},
	LastNack: &meshkitv1.Nack{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Version: "v6", Detail: "unknown filter x"},
	Withheld: []*meshkitv1.Withheld{{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Name: "web", Reason: "needs wasm"}},
}}

func TestCommands(t *testing.T) {
	addr, _ := startMeshKitAPI(t, nackingProxy)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "mesh.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(validConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(invalidConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		args    []string
		wantErr []string // substrings of the error; nil means success
		want    []string // substrings of stdout
	}{
		{name: "get config before apply", args: []string{"get", "config"}, wantErr: []string{"NotFound"}},
		{name: "apply invalid lists every error", args: []string{"apply", "-f", bad}, wantErr: []string{"InvalidArgument", "bad.yaml:10:22: listeners[0].virtual_hosts[0].routes[0].cluster: unknown cluster \"missing\"\n  ", "bad.yaml:14:11: clusters[1].name: duplicate cluster name"}},
		{name: "apply", args: []string{"apply", "-f", good}, want: []string{"applied " + good + ": version "}},
		{name: "apply json", args: []string{"apply", "-f", good, "-o", "json"}, want: []string{`"version": "`}},
		{name: "get config", args: []string{"get", "config"}, want: []string{"# version: ", validConfig}},
		{name: "get config json", args: []string{"get", "config", "-o", "json"}, want: []string{`"version": "`, `"yaml": "listeners:`}},
		{name: "register", args: []string{"register", "--service", "shop", "--address", "127.0.0.1:9001", "--weight", "3", "--region", "eu", "--zone", "eu-1", "--ttl", "1m", "--metadata", "v=2"},
			want: []string{"registered shop/127.0.0.1-9001 at 127.0.0.1:9001, lease 1m0s"}},
		{name: "register invalid", args: []string{"register", "--service", "shop", "--address", "nohost", "--weight", "300"},
			wantErr: []string{"InvalidArgument", "address", "weight"}},
		{name: "register without address", args: []string{"register", "--service", "shop"}, wantErr: []string{`"address" not set`}},
		{name: "get services", args: []string{"get", "services"}, want: []string{"SERVICE  ENDPOINTS  HEALTHY", "shop     1          1"}},
		{name: "get endpoints", args: []string{"get", "endpoints", "shop"},
			want: []string{"127.0.0.1-9001  127.0.0.1:9001  3       HEALTHY  eu/eu-1   expires in "}},
		{name: "get endpoints yaml", args: []string{"get", "endpoints", "shop", "-o", "yaml"},
			want: []string{"address: 127.0.0.1:9001", "weight: 3", "region: eu", "ttl: 60s"}},
		{name: "get proxies", args: []string{"get", "proxies"},
			want: []string{"NODE    REPLICA", "edge-1  meshkit-a", "yes", "Cluster=v7", "Listener v6: unknown filter x", "Listener/web (needs wasm)"}},
		{name: "get proxies json", args: []string{"get", "proxies", "-o", "json"}, want: []string{`"node_id": "edge-1"`, `"replica": "meshkit-a"`}},
		{name: "deregister", args: []string{"deregister", "--service", "shop", "--id", "127.0.0.1-9001"}, want: []string{"deregistered shop/127.0.0.1-9001"}},
		{name: "deregister again", args: []string{"deregister", "--service", "shop", "--id", "127.0.0.1-9001"}, wantErr: []string{"NotFound"}},
		{name: "bad output format", args: []string{"get", "services", "-o", "xml"}, wantErr: []string{`-o "xml"`}},
		{name: "unreachable server", args: []string{"--server", "127.0.0.1:1", "--timeout", "2s", "get", "services"}, wantErr: []string{"Unavailable"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			out, _, err := run(t.Context(), addr, s.args...)
			if s.wantErr != nil {
				if err == nil {
					t.Fatalf("succeeded, want an error; stdout:\n%s", out)
				}
				for _, w := range s.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range s.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// The json and yaml outputs are the API messages in their proto field names.
func TestStructuredOutputParses(t *testing.T) {
	addr, _ := startMeshKitAPI(t, nil)
	if _, _, err := run(t.Context(), addr, "register", "--service", "shop", "--address", "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		format    string
		unmarshal func([]byte, any) error
	}{
		{name: "json", format: "json", unmarshal: json.Unmarshal},
		{name: "yaml", format: "yaml", unmarshal: yaml.Unmarshal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t.Context(), addr, "get", "services", "-o", tt.format)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Services []struct {
					Name      string `json:"name" yaml:"name"`
					Endpoints int    `json:"endpoints" yaml:"endpoints"`
				} `json:"services" yaml:"services"`
			}
			if err := tt.unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v in:\n%s", err, out)
			}
			if len(got.Services) != 1 || got.Services[0].Name != "shop" || got.Services[0].Endpoints != 1 {
				t.Fatalf("parsed %+v from:\n%s", got, out)
			}
		})
	}
}

// register --heartbeat renews the lease until its context ends (SIGINT in
// main), then deregisters.
func TestRegisterHeartbeat(t *testing.T) {
	addr, reg := startMeshKitAPI(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		stderr string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, err := run(ctx, addr, "register", "--service", "shop", "--address", "127.0.0.1:9001", "--ttl", "1s", "--heartbeat")
		done <- result{stderr, err}
	}()

	// Poll until the lease has been renewed at least twice past its first
	// expiry: only heartbeats can keep a 1 s lease alive that long.
	var first time.Time
	deadline := time.Now().Add(10 * time.Second)
	for {
		ep, err := reg.Get(t.Context(), "shop", "127.0.0.1-9001")
		if err == nil && first.IsZero() {
			first = ep.ExpiresAt
		}
		if err == nil && ep.ExpiresAt.After(first.Add(1500*time.Millisecond)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease not renewed (last: %v, %v)", ep.ExpiresAt, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(r.stderr, "deregistered shop/127.0.0.1-9001") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if eps, err := reg.List(t.Context(), "shop"); err != nil || len(eps) != 0 {
		t.Fatalf("after exit: %v, %v; want no endpoints", eps, err)
	}
}
