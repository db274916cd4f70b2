package extension_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// collected runs the garbage collector until cond holds: a filter gives its
// references back once it is unreachable, which only a collection sees.
func collected(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	// The 5 ms poll lets cleanups, which run on their own goroutine, finish.
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, what, func() (bool, string) {
		runtime.GC()
		ok, got := cond()
		return ok, "still " + got
	})
}

// TestVersionsReleased: many config versions come and go; the plugins only
// dropped versions used are closed, the one kept across every swap is loaded
// once and never closed.
func TestVersionsReleased(t *testing.T) {
	rt := newGoRuntime()
	f := newFactory(t, rt)
	kept := pkg(t, 1, extpkg.Manifest{Name: "kept", Version: "1.0.0", Kind: extpkg.KindNative, ABI: "go-test/1"}, "x-kept")
	p := pkg(t, 1, extpkg.Manifest{}, "x-added")
	const versions = 40
	var cur []*filter.Chain
	for i := range versions {
		// Version i: the kept extension, unchanged, and add-header with a
		// config of its own (a new load each time).
		next := []*filter.Chain{
			filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Name: "kept", Package: kept, Config: []byte("k")})),
			filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: p, Config: fmt.Appendf(nil, "v%d", i)})),
		}
		for _, c := range next {
			if status, _, _ := run(c, ""); status != 200 {
				t.Fatalf("version %d: status %d", i, status)
			}
		}
		cur = next // the previous version is now unreachable
	}
	collected(t, "dropped versions released", func() (bool, string) {
		got := fmt.Sprintf("loaded %d, loads %d, closes %d", f.Loaded(), rt.loads.Load(), rt.closes.Load())
		return f.Loaded() == 2 && rt.closes.Load() == versions-1, got
	})
	if n := rt.loads.Load(); n != versions+1 {
		t.Fatalf("loads = %d, want %d: the kept extension was reloaded", n, versions+1)
	}
	runtime.KeepAlive(cur)
	cur = nil
	collected(t, "every version released", func() (bool, string) {
		return f.Loaded() == 0 && rt.closes.Load() == rt.loads.Load(),
			fmt.Sprintf("loaded %d, loads %d, closes %d", f.Loaded(), rt.loads.Load(), rt.closes.Load())
	})
}

// TestCloseWaitsForStreams: a plugin released while a stream is inside it
// closes only when that stream completes.
func TestCloseWaitsForStreams(t *testing.T) {
	rt := newGoRuntime()
	f := newFactory(t, rt)
	c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes")}))
	s := newStream(context.Background(), "")
	c.Run(s)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rt.closes.Load(); n != 0 {
		t.Fatalf("closed %d plugins under a running stream", n)
	}
	c.Complete(s)
	if n := rt.closes.Load(); n != 1 {
		t.Fatalf("closes = %d after the stream completed, want 1", n)
	}
	// After Close, the filter applies its policy (fail_closed) and Build
	// refuses.
	if status, _, _ := run(c, ""); status != extension.DefaultFailStatus {
		t.Fatalf("status after Close: %d", status)
	}
	if _, err := f.Build(extAny(t, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "x-added")}), &filter.Env{}); err == nil {
		t.Fatal("Build after Close succeeded")
	}
}

// closingRuntime is a goRuntime that owns something to close (as the
// Proxy-Wasm runtime owns wazero): it records its Close calls and, like a
// closed wazero runtime, refuses loads afterwards.
type closingRuntime struct {
	*goRuntime
	rtCloses atomic.Int64
}

func (r *closingRuntime) Close(context.Context) error {
	r.rtCloses.Add(1)
	r.refuse.Store(true)
	return nil
}

var _ extension.RuntimeCloser = (*closingRuntime)(nil)

// TestCloseClosesRuntimes: Factory.Close (proxy shutdown) closes the
// runtimes that own resources, once, and only after the last plugin they
// serve has closed, so that a stream still inside a plugin at Close keeps
// a working runtime until it completes.
func TestCloseClosesRuntimes(t *testing.T) {
	tests := []struct {
		name      string
		streaming bool // a stream is inside the plugin at Close
	}{
		{name: "idle"},
		{name: "stream in flight", streaming: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &closingRuntime{goRuntime: newGoRuntime()}
			plain := newGoRuntime() // no Close: left alone
			plain.kind = extpkg.KindDSL
			f := newFactory(t, rt, plain)
			c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes")}))
			if status, added, _ := run(c, ""); status != 200 || added != "yes" {
				t.Fatalf("before Close: %d %q", status, added)
			}
			s := newStream(context.Background(), "")
			if tt.streaming {
				c.Run(s)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.streaming {
				if n := rt.rtCloses.Load(); n != 0 {
					t.Fatalf("runtime closed %d times under a running stream", n)
				}
				c.Complete(s)
			}
			if n := rt.rtCloses.Load(); n != 1 {
				t.Fatalf("runtime closed %d times after Close and the last stream, want 1", n)
			}
			if n := rt.closes.Load(); n != 1 {
				t.Fatalf("plugin closed %d times, want 1", n)
			}
			if err := f.Close(); err != nil || rt.rtCloses.Load() != 1 {
				t.Fatalf("second Close: %v, runtime closes %d, want nil and still 1", err, rt.rtCloses.Load())
			}
		})
	}
}

// TestWasmVersionsReleased does TestVersionsReleased with the wazero runtime
// and the add-header example: every replaced version's compiled module is
// closed and the runtime's live plugins go back to the baseline.
func TestWasmVersionsReleased(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go wasip1 module")
	}
	out := filepath.Join(t.TempDir(), "add-header.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./examples/extensions/wasm/add-header")
	cmd.Dir = "../../.."
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the wasm example: %v\n%s", err, b)
	}
	module, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wrt, err := wasm.New(ctx, wasm.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wrt.Close(ctx) })
	f := newFactory(t, wrt)
	p := pkg(t, 1, extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindWasm, ABI: wasm.ABI021}, string(module))
	const versions = 8
	var cur *filter.Chain
	for i := range versions {
		cfg := fmt.Appendf(nil, "x-added: v%d", i)
		c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: p, Config: cfg}))
		if status, added, _ := run(c, ""); status != 200 || added != fmt.Sprintf("v%d", i) {
			t.Fatalf("version %d: status %d, x-added %q", i, status, added)
		}
		cur = c
	}
	collected(t, "replaced wasm versions released", func() (bool, string) {
		return wrt.LivePlugins() == 1 && f.Loaded() == 1, fmt.Sprintf("%d live plugins, %d loaded", wrt.LivePlugins(), f.Loaded())
	})
	runtime.KeepAlive(cur)
	cur = nil
	collected(t, "back to baseline", func() (bool, string) {
		return wrt.LivePlugins() == 0 && f.Loaded() == 0, fmt.Sprintf("%d live plugins, %d loaded", wrt.LivePlugins(), f.Loaded())
	})
}
