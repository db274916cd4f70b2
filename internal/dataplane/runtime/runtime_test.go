package runtime

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/translate"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

func snapshot(t testing.TB, yaml string) *resources.Snapshot {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := translate.Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newRuntime(t testing.TB) *Runtime {
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	rt := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Filters: reg})
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

const cfgTmpl = `
listeners:
  - name: web
    address: ADDR
    protocol: http
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: CLUSTER
clusters:
  - { name: a, endpoints: [127.0.0.1:1] }
  - { name: b, endpoints: [127.0.0.1:2] }
`

func cfg(addr, cluster string) string {
	return strings.NewReplacer("ADDR", addr, "CLUSTER", cluster).Replace(cfgTmpl)
}

func TestApplyVersions(t *testing.T) {
	rt := newRuntime(t)
	addr := testutil.Addr(t)
	if err := rt.Apply(snapshot(t, cfg(addr, "a")), "test"); err != nil {
		t.Fatal(err)
	}
	v1 := rt.Current()
	if err := rt.Apply(snapshot(t, cfg(addr, "a")), "test"); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("same snapshot: err = %v, want ErrUnchanged", err)
	}
	if err := rt.Reapply(snapshot(t, cfg(addr, "a")), "test"); err != nil {
		t.Fatalf("Reapply: %v", err)
	}
	if err := rt.Apply(snapshot(t, cfg(addr, "b")), "test"); err != nil {
		t.Fatal(err)
	}
	v2 := rt.Current()
	if v2.ID == v1.ID {
		t.Fatal("new version has the old ID")
	}
	// Unchanged clusters are carried over, not rebuilt.
	if v2.Clusters.Get("a") != v1.Clusters.Get("a") {
		t.Fatal("unchanged cluster was rebuilt")
	}
	// The socket stays bound across versions.
	if got := rt.Listener("web").Addr().String(); got != addr {
		t.Fatalf("listener address %s, want %s", got, addr)
	}
}

func TestApplyRejectsWholeVersion(t *testing.T) {
	rt := newRuntime(t)
	addr := testutil.Addr(t)
	if err := rt.Apply(snapshot(t, cfg(addr, "a")), "test"); err != nil {
		t.Fatal(err)
	}
	before := rt.Current()

	// A second listener on a port someone else holds: the version must be
	// rejected without touching the running one.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := cfg(addr, "b") + ""
	bad = strings.Replace(bad, "clusters:", `  - name: other
    address: `+busy.Addr().String()+`
    protocol: tcp
    cluster: a
clusters:`, 1)
	err = rt.Apply(snapshot(t, bad), "test")
	if err == nil || !strings.Contains(err.Error(), "other") {
		t.Fatalf("apply with a busy port: err = %v, want an error naming listener other", err)
	}
	if rt.Current() != before {
		t.Fatal("rejected version replaced the running one")
	}
	if rt.Listener("other") != nil {
		t.Fatal("listener of a rejected version is running")
	}
}
