package serve

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/examples"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// A start that fails half-way (here at the identity port, after the store,
// the xDS and API ports and the config-file follower have started) undoes
// all of it: no goroutine is left, the ports are free and the store is
// closed, so that the same start succeeds once the cause is gone.
func TestFailedStartReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	mesh, err := examples.FS.ReadFile("mesh-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(cfg, mesh, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{XDSAddress: testutil.Addr(t), APIAddress: testutil.Addr(t), IdentityAddress: busy.Addr().String(),
		DataDir: filepath.Join(dir, "data"), ConfigFile: cfg, PollInterval: 10 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	if _, err := Start(opt); err == nil || !strings.Contains(err.Error(), "identity address") {
		t.Fatalf("start on a busy identity port: err = %v, want identity address", err)
	}
	_ = busy.Close()

	// bbolt holds an exclusive lock on an open store: a leaked one makes
	// this open time out.
	opt.IdentityAddress = "127.0.0.1:0"
	p, err := Start(opt)
	if err != nil {
		t.Fatalf("the same start after the failed one: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
