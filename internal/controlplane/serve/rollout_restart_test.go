package serve

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
)

// TestRestartMidRolloutWithConfigFile: a MeshKit that follows a config
// file restarts while a rollout runs; the unchanged file is not a change,
// so it starts, and the rollout goes on from the store.
func TestRestartMidRolloutWithConfigFile(t *testing.T) {
	dir := t.TempDir()
	doc := func(n int) []byte {
		return fmt.Appendf(nil, "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n    virtual_hosts: [{ name: a, routes: [{ match: { path_prefix: /v%d }, cluster: c }] }]\nclusters:\n  - { name: c, endpoints: [127.0.0.1:9001] }\n", n)
	}
	file := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(file, doc(1), 0o600); err != nil {
		t.Fatal(err)
	}
	opt := Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), ConfigFile: file,
		Log: slog.New(slog.DiscardHandler)}
	p, err := Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.MeshKit.StartRollout(ctx, "mesh.yaml", doc(2), rollout.Plan{Steps: []uint32{10, 50}, Pause: time.Hour}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	p, err = Start(opt)
	if err != nil {
		t.Fatalf("restart mid-rollout: %v", err)
	}
	defer func() { _ = p.Shutdown(sctx) }()
	s, err := p.MeshKit.Rollout(ctx)
	if err != nil || !s.Active() || s.Percent() != 10 || s.Canary.Version != versions.DigestOf(doc(2)) {
		t.Fatalf("rollout after the restart: %+v %v", s, err)
	}
	if p.MeshKit.Current() != 1 {
		t.Fatalf("current version %d", p.MeshKit.Current())
	}
}
