package extension

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "omnirelay.extensions.v1.Extension"

// DefaultFailStatus answers requests under FailClosed when the config
// names no status.
const DefaultFailStatus = 503

// loadTimeout bounds one Runtime.Load.
const loadTimeout = 30 * time.Second

// Options configure the extension factory of a proxy.
type Options struct {
	// Trust verifies package signatures. Nil refuses every package: a proxy
	// without extension trust roots runs no extension.
	Trust *signing.Verifier
	// Runtimes are the extension runtimes of this build, one per kind. The
	// factory owns them: Close closes those that are RuntimeClosers.
	Runtimes []Runtime
	// Capabilities, when set, returns what the proxy advertises (filter
	// names, runtimes, ABIs); a manifest requiring anything else is
	// refused. Nil skips the check.
	Capabilities func() []string
	// Metrics receives the extension metrics (required).
	Metrics *Metrics
	Log     *slog.Logger
}

// Factory builds extension filters (filter.Factory for ConfigType). It
// holds the load cache, so one Factory serves the process.
//
// Each cache entry (a loaded extension name, package digest and config) is
// reference-counted by the filters built on it: a config version that keeps
// an extension unchanged takes a reference on the running entry, so the
// plugin is neither recompiled nor closed across the swap. A filter gives
// its references back once it is unreachable, that is once its config
// version was replaced and the last stream holding its chain finished (the
// data plane has no "version drained" event, and a filter cannot know when
// no stream will pick it again: the garbage collector can, see
// runtime.AddCleanup). An entry whose last filter is gone leaves the cache
// and its plugin closes when its last stream completes.
type Factory struct {
	opt      Options
	runtimes map[string]Runtime

	mu     sync.Mutex
	cache  map[string]*entry
	closed bool
	// open counts the plugins loaded and not closed yet; once Close was
	// called and it reaches zero the runtimes are closed (closeRuntimes).
	open           int
	runtimesClosed bool
}

// RuntimeCloser is implemented by runtimes that hold resources beyond
// their plugins (the Proxy-Wasm runtime: a compiler and its code cache).
// The factory owns its runtimes: after Close, once the last plugin it
// loaded has closed, it closes each runtime that implements this, once.
type RuntimeCloser interface {
	Close(ctx context.Context) error
}

// runtimeCloseTimeout bounds the runtimes' Close at shutdown.
const runtimeCloseTimeout = 10 * time.Second

var _ filter.Factory = (*Factory)(nil)

// NewFactory returns a factory running extensions of the given runtimes.
// Two runtimes of one kind are an error.
func NewFactory(opt Options) (*Factory, error) {
	if opt.Metrics == nil {
		return nil, errors.New("extension factory: no metrics")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	f := &Factory{opt: opt, runtimes: map[string]Runtime{}, cache: map[string]*entry{}}
	for _, rt := range opt.Runtimes {
		k := rt.Kind()
		if _, dup := f.runtimes[k]; dup {
			return nil, fmt.Errorf("extension factory: two runtimes of kind %q", k)
		}
		f.runtimes[k] = rt
	}
	return f, nil
}

// ConfigType implements filter.Factory.
func (f *Factory) ConfigType() string { return ConfigType }

// Kinds lists the runtime kinds registered, sorted (capabilities).
func (f *Factory) Kinds() []string {
	var ks []string
	for k := range f.runtimes {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ABIs lists the ABI versions of every registered runtime, sorted.
func (f *Factory) ABIs() []string {
	var as []string
	for _, rt := range f.runtimes {
		as = append(as, rt.ABIs()...)
	}
	sort.Strings(as)
	return slices.Compact(as)
}

// Build implements filter.Factory: verify, check, load (or reuse) and wrap
// the plugin in the policy and the watchdog.
func (f *Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	var pb extv1.Extension
	if err := unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("extension: %w", err)
	}
	name := pb.GetName()
	if name == "" {
		return nil, errors.New("extension: name: empty")
	}
	x := &extFilter{index: env.Index, name: name}
	x.pool.New = func() any { return &streamState{ctx: &callCtx{}} }
	var err error
	if x.policy, err = policyOf(pb.GetPolicy()); err != nil {
		return nil, fmt.Errorf("extension %q: policy: %w", name, err)
	}
	x.fallback = FailClosed
	if x.policy == Reload {
		if x.fallback, err = policyOf(pb.GetFallback()); err != nil || x.fallback == Reload {
			return nil, fmt.Errorf("extension %q: fallback: want fail_open or fail_closed, got %v", name, pb.GetFallback())
		}
	}
	x.status = int(pb.GetFailStatus())
	if x.status == 0 {
		x.status = DefaultFailStatus
	}
	if x.status < 200 || x.status > 599 {
		return nil, fmt.Errorf("extension %q: fail_status %d: want 200-599", name, x.status)
	}
	d := pb.GetDeadline().AsDuration()
	if !pb.GetDeadline().IsValid() || d <= 0 {
		return nil, fmt.Errorf("extension %q: deadline: want > 0, got %v", name, pb.GetDeadline())
	}
	if c := pb.GetCanary(); c != nil && c.GetPercent() > 100 {
		return nil, fmt.Errorf("extension %q: canary.percent %d: want 0-100", name, c.GetPercent())
	}
	vm := vmOf(pb.GetWasm())
	x.main, err = f.load(name, pb.GetPackage(), pb.GetConfig(), vm)
	if err != nil {
		return nil, err
	}
	refs := []*entry{x.main}
	if c := pb.GetCanary(); c != nil {
		pcfg := c.GetPreviousConfig()
		if len(pcfg) == 0 {
			pcfg = pb.GetConfig()
		}
		x.prev, err = f.load(name, c.GetPreviousPackage(), pcfg, vm)
		if err != nil {
			f.unref(refs)
			return nil, fmt.Errorf("canary.previous_package: %w", err)
		}
		refs = append(refs, x.prev)
		x.percent = c.GetPercent()
	}
	x.watchdog = NewWatchdog(name, x.main.kind, d, f.opt.Metrics, f.opt.Log)
	x.failBody = fmt.Sprintf("extension %s failed", name)
	// refs must not point back at x, or x would never be unreachable.
	runtime.AddCleanup(x, f.unref, refs)
	return x, nil
}

func unmarshal(cfg *anypb.Any, m proto.Message) error {
	if cfg == nil {
		return errors.New("no typed_config")
	}
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(cfg.GetValue(), m); err != nil {
		return fmt.Errorf("decode %s: %w", ConfigType, err)
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return fmt.Errorf("decode %s: unknown fields", ConfigType)
	}
	return nil
}

func policyOf(p extv1.Policy) (Policy, error) {
	switch p {
	case extv1.Policy_POLICY_UNSPECIFIED, extv1.Policy_FAIL_CLOSED:
		return FailClosed, nil
	case extv1.Policy_FAIL_OPEN:
		return FailOpen, nil
	case extv1.Policy_RELOAD:
		return Reload, nil
	}
	return "", fmt.Errorf("unknown policy %v", p)
}

func vmOf(w *extv1.Wasm) VM {
	if w == nil {
		return VM{}
	}
	return VM{ID: w.GetVmId(), RootID: w.GetRootId(), Config: w.GetVmConfig()}
}

// load verifies and checks a package and returns its cache entry, loading
// the plugin if this (name, payload, config, vm) is not loaded yet.
func (f *Factory) load(name string, pkg, config []byte, vm VM) (*entry, error) {
	if f.opt.Trust == nil {
		return nil, fmt.Errorf("extension %q: package refused: this proxy has no extension trust root (omnirelay run --extension-trust-root)", name)
	}
	p, err := extpkg.Open(pkg, f.opt.Trust)
	if err != nil {
		return nil, fmt.Errorf("extension %q: package refused: %w", name, err)
	}
	m := p.Manifest
	rt, ok := f.runtimes[m.Kind]
	if !ok {
		return nil, fmt.Errorf("extension %q: package %s@%s is kind %q: no %s runtime in this build (runtimes: %v)",
			name, m.Name, m.Version, m.Kind, m.Kind, f.Kinds())
	}
	if !slices.Contains(rt.ABIs(), m.ABI) {
		return nil, fmt.Errorf("extension %q: package %s@%s needs ABI %q; the %s runtime accepts %v",
			name, m.Name, m.Version, m.ABI, m.Kind, rt.ABIs())
	}
	if f.opt.Capabilities != nil {
		have := f.opt.Capabilities()
		var missing []string
		for _, c := range m.Capabilities {
			if !slices.Contains(have, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("extension %q: package %s@%s requires capabilities %v this proxy lacks", name, m.Name, m.Version, missing)
		}
	}
	vl, isVM := rt.(VMLoader)
	if !vm.isZero() && !isVM {
		return nil, fmt.Errorf("extension %q: package %s@%s is kind %s, which has no VM: vm_id, root_id and vm_config are Proxy-Wasm settings", name, m.Name, m.Version, m.Kind)
	}
	csum := sha256.Sum256(config)
	key := name + "\x00" + m.PayloadSHA256 + "\x00" + hex.EncodeToString(csum[:])
	if !vm.isZero() {
		vsum := sha256.Sum256(vm.Config)
		key += "\x00" + vm.ID + "\x00" + vm.RootID + "\x00" + hex.EncodeToString(vsum[:])
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("extension %q: the extension factory is closed", name)
	}
	if e, ok := f.cache[key]; ok {
		e.users++
		return e, nil
	}
	// Loading under the lock serialises loads; they happen only while a
	// config version is built, which is serialised anyway.
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	var pl Plugin
	if isVM {
		pl, err = vl.LoadVM(ctx, m, p.Payload, config, vm)
	} else {
		pl, err = rt.Load(ctx, m, p.Payload, config)
	}
	if err != nil {
		return nil, fmt.Errorf("extension %q: %s runtime refused package %s@%s: %w", name, m.Kind, m.Name, m.Version, err)
	}
	e := &entry{name: name, key: key, kind: m.Kind, rt: rt, manifest: m, payload: p.Payload, config: config, vm: vm, f: f, users: 1}
	e.cur.Store(f.newInstance(pl, name))
	f.cache[key] = e
	f.opt.Log.Info("extension loaded", "extension", name, "package", m.Name, "version", m.Version, "kind", m.Kind, "abi", m.ABI, "sha256", m.PayloadSHA256)
	return e, nil
}

// unref gives back one filter's references. An entry no filter uses any
// more leaves the cache; its plugin closes once its last stream completes
// (streams hold their own reference on the instance).
func (f *Factory) unref(es []*entry) {
	var gone []*instance
	f.mu.Lock()
	for _, e := range es {
		if e.dead {
			continue
		}
		if e.users--; e.users > 0 {
			continue
		}
		gone = append(gone, f.drop(e))
		f.opt.Log.Info("extension unloaded: no config version uses it any more", "extension", e.name,
			"package", e.manifest.Name, "version", e.manifest.Version, "sha256", e.manifest.PayloadSHA256)
	}
	f.mu.Unlock()
	retire(gone)
}

// drop removes e from the cache and returns its current instance, to be
// retired once f.mu is released (retiring may close the plugin, which may
// take a while: a Build must not wait behind it); f.mu is held.
func (f *Factory) drop(e *entry) *instance {
	e.dead = true
	delete(f.cache, e.key)
	return e.cur.Load()
}

func retire(ins []*instance) {
	for _, in := range ins {
		if in != nil {
			in.retire()
		}
	}
}

// Loaded is the number of distinct (extension, package, config) loads in
// use by some config version: it goes back down as versions are replaced
// and drained.
func (f *Factory) Loaded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cache)
}

// Close releases every loaded extension at proxy shutdown: each plugin
// closes once the streams using it complete; filters still running after
// Close apply their fallback policy. Build fails afterwards. The runtimes
// (see RuntimeCloser) close after the last plugin: at once when no stream
// holds one, which is the case after the listeners drained; the error is
// theirs. Otherwise the last stream's completion closes them and logs a
// failure.
func (f *Factory) Close() error {
	var gone []*instance
	f.mu.Lock()
	f.closed = true
	for _, e := range f.cache {
		gone = append(gone, f.drop(e))
	}
	f.mu.Unlock()
	retire(gone)
	return f.closeRuntimes()
}

// pluginClosed counts a closed plugin and closes the runtimes if it was
// the last one after Close.
func (f *Factory) pluginClosed() {
	f.mu.Lock()
	f.open--
	f.mu.Unlock()
	if err := f.closeRuntimes(); err != nil {
		f.opt.Log.Error("extension runtimes close failed", "error", err)
	}
}

// closeRuntimes closes the runtimes if Close was called and no plugin is
// open, once.
func (f *Factory) closeRuntimes() error {
	f.mu.Lock()
	if !f.closed || f.open > 0 || f.runtimesClosed {
		f.mu.Unlock()
		return nil
	}
	f.runtimesClosed = true
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), runtimeCloseTimeout)
	defer cancel()
	var errs []error
	for _, k := range f.Kinds() {
		if c, ok := f.runtimes[k].(RuntimeCloser); ok {
			if err := c.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close %s runtime: %w", k, err))
			}
		}
	}
	return errors.Join(errs...)
}
