package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no source", args: []string{"run"}, wantErr: "--config FILE or --xds ADDR is required"},
		{name: "both sources", args: []string{"run", "--config", "x.yaml", "--xds", "127.0.0.1:1"}, wantErr: "exclusive"},
		{name: "xds without node id", args: []string{"run", "--xds", "127.0.0.1:1"}, wantErr: "--xds needs --node-id"},
		{name: "xds flag in file mode", args: []string{"run", "--config", "x.yaml", "--lkg-dir", "/tmp"}, wantErr: "--lkg-dir only applies with --xds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			root.SetArgs(tc.args)
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestXDSProcess runs the real binary against go-control-plane: it serves
// the control plane's config, persists it, and, restarted while the control
// plane is down, serves from last-known-good and says so on /ready.
func TestXDSProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "omnirelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "backend") }))
	defer be.Close()
	laddr, admin := testutil.Addr(t), testutil.Addr(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, cache, nil))
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	setSnapshot(t, cache, laddr, strings.TrimPrefix(be.URL, "http://"))

	lkgDir := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--xds", ln.Addr().String(), "--node-id", "edge-1", "--lkg-dir", lkgDir,
			"--admin", admin, "--drain-timeout", "1s")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}

	p := start()
	testutil.Eventually(t, 20*time.Second, 25*time.Millisecond, "traffic through the xDS config", func() (bool, string) { got := body("http://" + laddr + "/"); return got == "backend", fmt.Sprint(got) })
	testutil.Eventually(t, 20*time.Second, 25*time.Millisecond, "lkg file", testutil.Bool(func() bool { _, err := os.Stat(filepath.Join(lkgDir, "lkg.pb")); return err == nil }))
	stop(p)
	g.Stop()

	p = start()
	defer stop(p)
	testutil.Eventually(t, 20*time.Second, 25*time.Millisecond, "traffic from last-known-good", func() (bool, string) { got := body("http://" + laddr + "/"); return got == "backend", fmt.Sprint(got) })
	if r := body("http://" + admin + "/ready"); !strings.Contains(r, "ready (last-known-good; control plane unreachable)") {
		t.Fatalf("/ready = %q", r)
	}
}

func setSnapshot(t *testing.T, cache cachev3.SnapshotCache, laddr, backend string) {
	t.Helper()
	y := `
listeners:
  - name: web
    address: ` + laddr + `
    protocol: http
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - { match: { path_prefix: / }, cluster: be }
clusters:
  - { name: be, endpoints: [` + backend + `] }
`
	c, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s, err := translate.TranslateWith(c, translate.Options{ADS: true})
	if err != nil {
		t.Fatal(err)
	}
	rs := map[resourcev3.Type][]types.Resource{}
	for _, r := range s.Listeners {
		rs[resourcev3.ListenerType] = append(rs[resourcev3.ListenerType], r)
	}
	for _, r := range s.Routes {
		rs[resourcev3.RouteType] = append(rs[resourcev3.RouteType], r)
	}
	for _, r := range s.Clusters {
		rs[resourcev3.ClusterType] = append(rs[resourcev3.ClusterType], r)
	}
	for _, r := range s.Endpoints {
		rs[resourcev3.EndpointType] = append(rs[resourcev3.EndpointType], r)
	}
	snap, err := cachev3.NewSnapshot("1", rs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.SetSnapshot(context.Background(), "edge-1", snap); err != nil {
		t.Fatal(err)
	}
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func body(url string) string {
	resp, err := client.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
