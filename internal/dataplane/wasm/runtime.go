// Package wasm owns OmniRelay's Proxy-Wasm host: it runs HTTP filter plugins
// written against the Proxy-Wasm ABI (v0.2.1, and v0.2.0 modules) on wazero,
// a pure-Go WebAssembly runtime, so the proxy stays cgo-free.
//
// The host is hand-written rather than taken from an existing Go host because
// those (mosn/proxy-wasm-go-host and its forks) implement draft function
// names or get the header-map layout wrong, and because the pooling,
// deadlines and instance isolation must follow the extension watchdog.
//
// Lifecycle: a Runtime is created once per process and registered with the
// extension filter. Runtime.LoadModule (or the contract's Load) compiles a
// module once (wazero's compilation cache makes a restart cheap), checks its
// imports and ABI, instantiates a first instance and runs proxy_on_vm_start
// and proxy_on_configure: a plugin that rejects its configuration fails the
// load. A Plugin then keeps a pool of instances; each serves one stream at a
// time, from proxy_on_context_create to proxy_on_delete. An instance that
// trapped, exhausted its memory or overran its deadline is closed, never
// returned to the pool: the next stream gets a fresh one.
//
// Plugin methods run on the stream's goroutine; the deadline comes from the
// ctx they are given: when its deadline passes, the instance's watchdog
// makes the guest trap at its next loop iteration (see interrupt.go), which
// stops an infinite loop.
package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Options configure a Runtime. The zero value is usable.
type Options struct {
	// CacheDir holds wazero's compilation cache. Empty means
	// os.UserCacheDir()/omnirelay/wasm, falling back to memory only when
	// that is not writable.
	CacheDir string
	// MemoryLimitPages caps each instance's linear memory (64 KiB pages).
	// Zero means DefaultMemoryLimitPages.
	MemoryLimitPages uint32
	// MaxBodyBytes is the largest body the host buffers to show a plugin
	// (proxy_on_request_body / proxy_on_response_body). Zero means 1 MiB.
	MaxBodyBytes int
	// MaxIdle is how many idle instances a plugin keeps. Zero means 16.
	MaxIdle int
	// CompleteTimeout bounds proxy_on_done/on_log/on_delete, which run after
	// the response is written and have no stream deadline. Zero means 100ms.
	CompleteTimeout time.Duration
	// PauseTimeout bounds how long a stream stays paused by a plugin
	// waiting for its call-outs (and each call-out). Zero means 30s.
	PauseTimeout time.Duration
	// HTTPCall performs proxy_http_call. Nil means DirectHTTPCall (the
	// upstream names a host:port).
	HTTPCall HTTPCaller
	// KnownUpstream, when set, is asked at proxy_http_call whether the
	// upstream name exists; a name it refuses fails the call at once with
	// BadArgument. The proxy sets it with HTTPCall to a ClusterCaller's.
	KnownUpstream func(name string) bool
	// Running, when set, reports whether the proxy runs a config version.
	// Ticks start only then: a plugin loads while its config version is
	// built, before that version's clusters are in service, and in Envoy a
	// tick's call-out finds the clusters of the config that loaded it.
	Running func() bool
	// ClusterMetadata, when set, returns a cluster's metadata (the
	// cluster_metadata property); nil for none.
	ClusterMetadata func(name string) *corev3.Metadata
	// Logger receives proxy_log output and host errors. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// DefaultMemoryLimitPages is 64 MiB: Go-built guests need at least 44 pages
// to start, and a plugin that needs more than this is not a filter.
const DefaultMemoryLimitPages = 1024

// Runtime is the Proxy-Wasm runtime: one wazero runtime with the host
// functions and WASI instantiated, shared by every plugin it loads.
type Runtime struct {
	opts    Options
	rt      wazero.Runtime
	cache   wazero.CompilationCache
	log     *slog.Logger
	metrics *metricSet

	// life is held for reading by each load and for writing by Close,
	// which sets closed.
	life   sync.RWMutex
	closed bool

	mu      sync.Mutex
	plugins map[*Plugin]struct{}
	vmData  map[string]*vmShared // shared.go
	queues  queueSet
}

// New creates a Runtime. Close releases it.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	if opts.MemoryLimitPages == 0 {
		opts.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxIdle == 0 {
		opts.MaxIdle = 16
	}
	if opts.CompleteTimeout == 0 {
		opts.CompleteTimeout = 100 * time.Millisecond
	}
	if opts.PauseTimeout == 0 {
		opts.PauseTimeout = 30 * time.Second
	}
	if opts.HTTPCall == nil {
		opts.HTTPCall = DirectHTTPCall
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cache, err := compilationCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(cache).
		WithMemoryLimitPages(opts.MemoryLimitPages)
	// No WithCloseOnContextDone: modules are instrumented instead (see
	// interrupt.go), which costs a Go guest far less per call.
	r := &Runtime{
		opts:    opts,
		rt:      wazero.NewRuntimeWithConfig(ctx, cfg),
		cache:   cache,
		log:     opts.Logger.With("runtime", "wasm"),
		metrics: newMetricSet(),
		plugins: map[*Plugin]struct{}{},
		vmData:  map[string]*vmShared{},
		queues:  queueSet{byName: map[[2]string]uint32{}},
	}
	// Go-built guests import WASI functions beyond what Proxy-Wasm lists
	// (sched_yield, poll_oneoff, fd_fdstat_set_flags, ...): the whole
	// preview1 module is provided, with no filesystem or environment.
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r.rt); err != nil {
		r.close(ctx)
		return nil, fmt.Errorf("wasm runtime: instantiate WASI: %w", err)
	}
	if err := instantiateHost(ctx, r.rt); err != nil {
		r.close(ctx)
		return nil, fmt.Errorf("wasm runtime: instantiate host functions: %w", err)
	}
	return r, nil
}

func compilationCache(dir string) (wazero.CompilationCache, error) {
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return wazero.NewCompilationCache(), nil
		}
		dir = filepath.Join(base, "omnirelay", "wasm")
		if c, err := wazero.NewCompilationCacheWithDir(dir); err == nil {
			return c, nil
		}
		return wazero.NewCompilationCache(), nil
	}
	c, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wasm runtime: compilation cache %q: %w", dir, err)
	}
	return c, nil
}

// Kind names the extension kind this runtime serves.
func (r *Runtime) Kind() string { return "wasm" }

// ABI versions as manifests spell them, and the exports that declare them
// in a module.
const (
	ABI021 = "proxy-wasm/0.2.1"
	ABI020 = "proxy-wasm/0.2.0"

	exportABI021 = "proxy_abi_version_0_2_1"
	exportABI020 = "proxy_abi_version_0_2_0"
)

// ABIs lists the accepted ABI versions (advertised as capabilities).
func (r *Runtime) ABIs() []string { return []string{ABI021, ABI020} }

// Close closes every plugin and the wazero runtime.
func (r *Runtime) Close(ctx context.Context) error {
	// Wait for loads in flight (a reload racing the shutdown): wazero must
	// not compile on a closed runtime, and their plugins must be closed too.
	r.life.Lock()
	r.closed = true
	r.life.Unlock()
	r.mu.Lock()
	ps := make([]*Plugin, 0, len(r.plugins))
	for p := range r.plugins {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Close())
	}
	errs = append(errs, r.close(ctx))
	return errors.Join(errs...)
}

func (r *Runtime) close(ctx context.Context) error {
	return errors.Join(r.rt.Close(ctx), r.cache.Close(ctx))
}

// VM is a plugin's VM settings, Envoy's PluginConfig fields of the same
// meaning.
type VM struct {
	// ID is the vm_id: plugins of one ID share shared data and queues.
	// Empty gives the plugin its own.
	ID string
	// RootID is the root_id (the plugin_root_id property).
	RootID string
	// Config is the VM configuration, read in proxy_on_vm_start.
	Config []byte
}

// LoadModule compiles binary, checks it and starts a plugin named name with
// config as its plugin configuration (proxy_on_configure). The VM
// configuration is empty. Errors say what is wrong with the module.
func (r *Runtime) LoadModule(ctx context.Context, name string, binary, config []byte) (*Plugin, error) {
	return r.LoadModuleVM(ctx, name, binary, config, VM{})
}

// LoadModuleVM is LoadModule with the plugin's VM settings.
func (r *Runtime) LoadModuleVM(ctx context.Context, name string, binary, config []byte, vm VM) (*Plugin, error) {
	r.life.RLock()
	defer r.life.RUnlock()
	if r.closed {
		return nil, fmt.Errorf("wasm plugin %q: wasm runtime closed", name)
	}
	binary, err := instrument(binary)
	if err != nil {
		return nil, fmt.Errorf("wasm plugin %q: compile: %w", name, err)
	}
	cm, err := r.rt.CompileModule(ctx, binary)
	if err != nil {
		return nil, fmt.Errorf("wasm plugin %q: compile: %w", name, err)
	}
	abi, start, err := checkModule(cm)
	if err != nil {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("wasm plugin %q: %w", name, err)
	}
	p := &Plugin{
		rt:     r,
		name:   name,
		abi:    abi,
		start:  start,
		cm:     cm,
		config: append([]byte(nil), config...),
		vm:     VM{ID: vm.ID, RootID: vm.RootID, Config: append([]byte(nil), vm.Config...)},
		sum:    sha256.Sum256(binary),
		ready:  make(chan uint32, 64),
		log:    pluginLogger(r.log, name, vm),
		avail:  make(chan *instance),
		spares: make(chan struct{}, maxSpares),
	}
	p.shared, p.vmStarted = r.sharedFor(vm.ID, p.sum)
	first, err := p.newInstance(ctx)
	if err != nil {
		_ = cm.Close(ctx)
		r.releaseShared(vm.ID)
		return nil, fmt.Errorf("wasm plugin %q: %w", name, err)
	}
	if first.tickPeriod > 0 || p.queued.Load() {
		// Ticks and queue notifications go to one dedicated instance so that
		// they never wait behind a stream.
		p.startBackground(first)
		// And one ready for streams, so that the first ones do not wait.
		second, err := p.newInstance(ctx)
		if err != nil {
			_ = p.Close()
			return nil, fmt.Errorf("wasm plugin %q: %w", name, err)
		}
		p.put(second)
	} else {
		p.put(first)
	}
	r.mu.Lock()
	r.plugins[p] = struct{}{}
	r.mu.Unlock()
	return p, nil
}

func pluginLogger(l *slog.Logger, name string, vm VM) *slog.Logger {
	l = l.With("plugin", name)
	if vm.RootID != "" {
		l = l.With("root_id", vm.RootID)
	}
	if vm.ID != "" {
		l = l.With("vm_id", vm.ID)
	}
	return l
}

func (r *Runtime) forget(p *Plugin) {
	r.mu.Lock()
	delete(r.plugins, p)
	r.mu.Unlock()
}

// moduleConfig is the per-instance wazero configuration: no filesystem, no
// arguments or environment; clocks and randomness from the host.
func (r *Runtime) moduleConfig(p *Plugin) wazero.ModuleConfig {
	w := &logWriter{log: p.log}
	return wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(). // newInstance calls p.start under the watchdog
		WithStdout(w).
		WithStderr(w).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader)
}

// logWriter forwards a guest's stdout/stderr (a Go runtime panic message,
// typically) to the plugin's logger, a line at a time: the Go runtime
// writes a panic in many small pieces. One per instance; an instance runs
// one call at a time.
type logWriter struct {
	log *slog.Logger
	buf []byte
}

// maxLogLine bounds what a guest can make the host buffer.
const maxLogLine = 4096

func (w *logWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if i > 0 {
			w.log.Warn("wasm guest output", "line", string(w.buf[:i]))
		}
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLogLine {
		w.log.Warn("wasm guest output", "line", string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(b), nil
}

var _ io.Writer = (*logWriter)(nil)
