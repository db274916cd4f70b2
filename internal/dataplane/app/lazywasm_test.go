package app

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// The Wasm runtime is built by the first Load, not before; until then it
// still advertises what the eager runtime does and exports no metrics.
func TestLazyWasmBuildsOnFirstLoad(t *testing.T) {
	ctx := context.Background()
	eager, err := wasm.New(ctx, wasm.Options{})
	if err != nil {
		t.Fatalf("wasm.New: %v", err)
	}
	t.Cleanup(func() { _ = eager.Close(ctx) })

	l := newLazyWasm(wasm.Options{})
	if l.Kind() != eager.Kind() || !slices.Equal(l.ABIs(), eager.ABIs()) {
		t.Fatalf("lazy runtime advertises %s %v, the runtime %s %v", l.Kind(), l.ABIs(), eager.Kind(), eager.ABIs())
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(l.Collector()); err != nil {
		t.Fatalf("register collector: %v", err)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("metrics before any Wasm load: %d families, err %v", len(mfs), err)
	}
	if l.built() {
		t.Fatal("runtime built before any Load")
	}

	tests := []struct {
		name    string
		abi     string
		payload []byte
		wantErr string
	}{
		{name: "bad manifest ABI", abi: "proxy-wasm/9.9", payload: []byte("\x00asm\x01\x00\x00\x00"), wantErr: "manifest ABI"},
		{name: "not a module", abi: wasm.ABI021, payload: []byte("not wasm"), wantErr: "wasm plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := extpkg.Manifest{Name: "p", Kind: extpkg.KindWasm, ABI: tt.abi}
			_, err := l.Load(ctx, m, tt.payload, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load: err %v, want one containing %q", err, tt.wantErr)
			}
			if !l.built() {
				t.Fatal("Load did not build the runtime")
			}
		})
	}
	rt := l.rt.Load()
	if again, err := l.runtime(); err != nil || again != rt {
		t.Fatalf("second build: %p %v, want the first runtime %p", again, err, rt)
	}
	t.Cleanup(func() { _ = rt.Close(ctx) })
}

// TestLazyWasmClosedByFactory: the extension factory's Close (proxy
// shutdown, closeExtensions) closes the lazily built runtime, whose compiler
// then refuses modules, and a Load afterwards is refused without building a
// new runtime.
func TestLazyWasmClosedByFactory(t *testing.T) {
	ctx := context.Background()
	empty := []byte("\x00asm\x01\x00\x00\x00") // valid, but no memory: refused after compiling
	m := extpkg.Manifest{Name: "p", Kind: extpkg.KindWasm, ABI: wasm.ABI021}
	tests := []struct {
		name  string
		build bool // a Wasm load happened before shutdown
	}{
		{name: "built", build: true},
		{name: "never built"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLazyWasm(wasm.Options{})
			metrics, err := extension.NewMetrics(nil)
			if err != nil {
				t.Fatal(err)
			}
			f, err := extension.NewFactory(extension.Options{Runtimes: []extension.Runtime{l}, Metrics: metrics})
			if err != nil {
				t.Fatal(err)
			}
			var rt *wasm.Runtime
			if tt.build {
				if _, err := l.Load(ctx, m, empty, nil); err == nil || strings.Contains(err.Error(), "closed") {
					t.Fatalf("Load before Close: %v, want the module refused", err)
				}
				rt = l.rt.Load()
				if rt == nil {
					t.Fatal("Load did not build the runtime")
				}
			}
			if err := f.Close(); err != nil {
				t.Fatalf("Factory.Close: %v", err)
			}
			if rt != nil {
				if _, err := rt.LoadModule(ctx, "p", empty, nil); err == nil || !strings.Contains(err.Error(), "runtime closed") {
					t.Fatalf("compile on the runtime after Close: %v, want a closed runtime's refusal", err)
				}
			}
			if _, err := l.Load(ctx, m, empty, nil); !errors.Is(err, errWasmClosed) {
				t.Fatalf("Load after Close: %v, want %v", err, errWasmClosed)
			}
			if got := l.rt.Load(); got != rt {
				t.Fatalf("runtime after Close is %p, want %p (no new build)", got, rt)
			}
		})
	}
}
