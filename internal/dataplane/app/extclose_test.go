package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestShutdownClosesExtensions: a proxy that loaded an extension plugin
// releases it when it shuts down.
func TestShutdownClosesExtensions(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePublicKey(filepath.Join(dir, "trust.pem"), pub); err != nil {
		t.Fatal(err)
	}
	rules := "rules:\n  - name: stamp\n    actions: [{ set_header: { name: x-stamp, value: \"1\" } }]\n"
	pkg, err := extpkg.Pack(extpkg.Manifest{Name: "stamp", Version: "1.0.0", Kind: extpkg.KindDSL, ABI: dslrules.ABI}, []byte(rules))
	if err == nil {
		pkg, err = extpkg.Sign(pkg, signing.NewSigner(priv))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stamp.orx"), pkg, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testutil.Addr(t)
	cfg := filepath.Join(dir, "omnirelay.yaml")
	if err := os.WriteFile(cfg, []byte(`
listeners:
  - name: web
    address: `+addr+`
    filters:
      - extension: { name: stamp, package: stamp.orx, policy: fail_closed }
    virtual_hosts:
      - { name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, direct_response: { status: 200, body: ok } }] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Start(Options{ConfigPath: cfg, AdminAddress: "127.0.0.1:0", ExtensionTrustRoot: filepath.Join(dir, "trust.pem"),
		DrainTimeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f, _ := p.filters.Lookup(extension.ConfigType)
	ef := f.(*extension.Factory)
	if ef.Loaded() != 1 {
		t.Fatalf("%d plugins loaded, want 1", ef.Loaded())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := ef.Loaded(); n != 0 {
		t.Fatalf("%d plugins still loaded after shutdown", n)
	}
}
