package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// lazyWasm is the Proxy-Wasm extension runtime, built on the first Load.
// Building one starts a wazero runtime and instantiates the WASI host module,
// which runs wazero's compiler: about 1 MiB of idle RSS (docs/benchmarks.md)
// that a proxy whose config loads no Wasm extension would carry for nothing.
// Kind and ABIs are known without it, so capabilities are advertised as
// before.
//
// The extension factory closes it at proxy shutdown (RuntimeCloser), after
// the last plugin: the runtime, if built, is closed, and a Load afterwards
// is refused rather than building a new one nobody would close.
type lazyWasm struct {
	opts   wasm.Options
	mu     sync.Mutex // serialises the build and Close
	closed atomic.Bool
	rt     atomic.Pointer[wasm.Runtime]
}

var (
	_ extension.Runtime       = (*lazyWasm)(nil)
	_ extension.RuntimeCloser = (*lazyWasm)(nil)
	_ extension.VMLoader      = (*lazyWasm)(nil)
	_ prometheus.Collector    = lazyWasmCollector{}
)

// errWasmClosed refuses a Load after Close.
var errWasmClosed = errors.New("wasm extension runtime closed (the proxy is shutting down)")

func newLazyWasm(opts wasm.Options) *lazyWasm { return &lazyWasm{opts: opts} }

// Kind implements extension.Runtime.
func (*lazyWasm) Kind() string { return extpkg.KindWasm }

// ABIs implements extension.Runtime.
func (*lazyWasm) ABIs() []string { return []string{wasm.ABI021, wasm.ABI020} }

// Load implements extension.Runtime: it builds the runtime if this is the
// first Wasm extension, then loads the plugin on it.
func (l *lazyWasm) Load(ctx context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	rt, err := l.runtime()
	if err != nil {
		return nil, fmt.Errorf("wasm %q: %w", m.Name, err)
	}
	return rt.Load(ctx, m, payload, config)
}

// LoadVM implements extension.VMLoader, as Load.
func (l *lazyWasm) LoadVM(ctx context.Context, m extpkg.Manifest, payload, config []byte, vm extension.VM) (extension.Plugin, error) {
	rt, err := l.runtime()
	if err != nil {
		return nil, fmt.Errorf("wasm %q: %w", m.Name, err)
	}
	return rt.LoadVM(ctx, m, payload, config, vm)
}

// runtime returns the runtime, building it on first use. A failed build is
// not remembered: the next Load tries again (the cause, such as an
// unwritable compilation cache directory, may have been fixed).
func (l *lazyWasm) runtime() (*wasm.Runtime, error) {
	if l.closed.Load() {
		return nil, errWasmClosed
	}
	if rt := l.rt.Load(); rt != nil {
		return rt, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return nil, errWasmClosed
	}
	if rt := l.rt.Load(); rt != nil {
		return rt, nil
	}
	// The runtime outlives the Load that built it, so it does not get
	// that Load's context.
	rt, err := wasm.New(context.Background(), l.opts)
	if err != nil {
		return nil, fmt.Errorf("wasm extension runtime unavailable: %w", err)
	}
	l.rt.Store(rt)
	return rt, nil
}

// Close implements extension.RuntimeCloser: it closes the runtime if one
// was built (its plugins first, then wazero and the compilation cache).
// Loads fail afterwards; the metrics of the closed runtime stay readable.
func (l *lazyWasm) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Swap(true) {
		return nil
	}
	if rt := l.rt.Load(); rt != nil {
		if err := rt.Close(ctx); err != nil {
			return fmt.Errorf("close wasm extension runtime: %w", err)
		}
	}
	return nil
}

// built reports whether the runtime exists (tests).
func (l *lazyWasm) built() bool { return l.rt.Load() != nil }

// Collector exports the metrics Wasm plugins define, once there is a
// runtime (see wasm.Runtime.Collector).
func (l *lazyWasm) Collector() prometheus.Collector { return lazyWasmCollector{l} }

type lazyWasmCollector struct{ l *lazyWasm }

// Describe sends nothing, which makes this an unchecked collector for the
// registry: the runtime that holds the metrics may not exist yet.
func (lazyWasmCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c lazyWasmCollector) Collect(ch chan<- prometheus.Metric) {
	if rt := c.l.rt.Load(); rt != nil {
		rt.Collector().Collect(ch)
	}
}
