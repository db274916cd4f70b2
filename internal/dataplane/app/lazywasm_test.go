package app

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
