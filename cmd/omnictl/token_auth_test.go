package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// TestAPITokenFlag: against a MeshKit that requires a token, omnictl is
// refused without one and works with --token-file or $OMNICTL_TOKEN.
func TestAPITokenFlag(t *testing.T) {
	const token = "omnictl-test-token-0123456789abcdef"
	p := meshtest.Start(t, serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0",
		DataDir: t.TempDir(), APIToken: token})
	addr := p.APIAddr().String()
	ctx := context.Background()
	if _, stderr, err := run(ctx, addr, "get", "services"); err == nil || !strings.Contains(err.Error()+stderr, "Unauthenticated: missing bearer token") {
		t.Fatalf("without a token: err %v, stderr %q", err, stderr)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(ctx, addr, "--token-file", f, "get", "services"); err != nil {
		t.Fatalf("--token-file: %v %s", err, stderr)
	}
	t.Setenv("OMNICTL_TOKEN", token)
	if _, stderr, err := run(ctx, addr, "get", "services"); err != nil {
		t.Fatalf("$OMNICTL_TOKEN: %v %s", err, stderr)
	}
}
