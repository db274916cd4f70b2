package extension

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// reloadEvery bounds how often one extension is reloaded: a plugin that
// fails on every request must not turn into a load loop.
const reloadEvery = time.Second

// instance is one loaded plugin and its reference count: one reference
// while it is an entry's current instance, one per stream using it. The
// plugin is closed when the count reaches zero.
type instance struct {
	plugin  Plugin
	refs    atomic.Int64
	broken  atomic.Bool // a call failed under the reload policy
	retired atomic.Bool
	caps    Capabilities // what the plugin said at load (Describer)
	f       *Factory
	name    string
}

// newInstance counts p among the factory's open plugins; f.mu is held.
func (f *Factory) newInstance(p Plugin, name string) *instance {
	in := &instance{plugin: p, f: f, name: name, caps: Capabilities{Phases: AllPhases}}
	if d, ok := p.(Describer); ok {
		in.caps = d.Describe()
	}
	in.refs.Store(1)
	f.open++
	return in
}

// acquire takes a reference for a stream; false once the plugin is closed.
func (in *instance) acquire() bool {
	for {
		n := in.refs.Load()
		if n <= 0 {
			return false
		}
		if in.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (in *instance) release() {
	if in.refs.Add(-1) == 0 {
		if err := in.plugin.Close(); err != nil {
			in.f.opt.Log.Warn("extension plugin close failed", "extension", in.name, "error", err)
		}
		in.f.pluginClosed()
	}
}

// retire drops the current-instance reference, once.
func (in *instance) retire() {
	if in.retired.CompareAndSwap(false, true) {
		in.release()
	}
}

// entry is a loaded (name, package, config): its current instance, shared
// by every filter (every config version, every listener) that uses it, so
// a reload repairs them all.
type entry struct {
	name, kind string
	key        string
	rt         Runtime
	manifest   extpkg.Manifest
	payload    []byte
	config     []byte
	vm         VM
	f          *Factory

	// users counts the filters built on the entry and dead marks it
	// dropped from the cache; both under f.mu.
	users int
	dead  bool

	cur        atomic.Pointer[instance]
	reloading  atomic.Bool
	lastReload atomic.Int64
}

// reload replaces in (which failed) with a fresh Load, off the request
// path. Until the new instance is in, in is marked broken and streams get
// the fallback policy. A failed load puts in back in service (the next
// failure tries again, at most once per reloadEvery).
func (e *entry) reload(in *instance) {
	if !in.broken.CompareAndSwap(false, true) {
		return
	}
	now := time.Now().UnixNano()
	if now-e.lastReload.Load() < int64(reloadEvery) || !e.reloading.CompareAndSwap(false, true) {
		in.broken.Store(false)
		return
	}
	e.lastReload.Store(now)
	m := e.f.opt.Metrics.reloads
	log := e.f.opt.Log
	// The goroutine ends with the load (bounded by loadTimeout).
	go func() {
		defer e.reloading.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		p, err := e.loadPlugin(ctx)
		if err != nil {
			m.WithLabelValues(e.name, e.kind, "error").Inc()
			log.Error("extension reload failed; the failed instance stays in service", "extension", e.name, "kind", e.kind, "error", err)
			in.broken.Store(false)
			return
		}
		e.f.mu.Lock()
		if e.dead {
			// Unloaded while the reload ran: nobody will use p.
			e.f.mu.Unlock()
			_ = p.Close()
			return
		}
		e.cur.Store(e.f.newInstance(p, e.name))
		e.f.mu.Unlock()
		in.retire()
		m.WithLabelValues(e.name, e.kind, "ok").Inc()
		log.Info("extension reloaded", "extension", e.name, "kind", e.kind)
	}()
}

// streamState is the filter's per-stream state, pooled.
type streamState struct {
	ctx    *callCtx
	e      *entry
	in     *instance
	skip   bool // the policy took the extension out of this stream
	active bool // a call into the plugin is in progress (StreamState)
	slot   any
}

// extFilter is one configured extension in one chain.
type extFilter struct {
	index      int
	name       string
	policy     Policy
	fallback   Policy // under Reload, while the reload runs
	status     int
	failBody   string
	watchdog   *Watchdog
	main, prev *entry
	percent    uint32 // canary share of main when prev is set
	canaryN    atomic.Uint64
	pool       sync.Pool
}

var (
	_ filter.Filter    = (*extFilter)(nil)
	_ filter.Completer = (*extFilter)(nil)
)

func (x *extFilter) pick() *entry {
	if x.prev == nil {
		return x.main
	}
	if uint32(x.canaryN.Add(1)%100) < x.percent {
		return x.main
	}
	return x.prev
}

func (x *extFilter) OnRequest(s *filter.Stream) filter.Status {
	e := x.pick()
	in := e.cur.Load()
	if in.broken.Load() || !in.acquire() {
		// Reload in progress, or the plugin was let go by the cache under a
		// config version still draining.
		return x.fail(s, x.fallback)
	}
	st := x.pool.Get().(*streamState)
	st.e, st.in = e, in
	s.SetState(x.index, st)
	if in.caps.Phases&PhaseRequest == 0 {
		// The stream keeps the plugin (and its state) for OnResponse and
		// OnComplete; there is just no request call to make.
		return filter.Continue
	}
	st.active = true
	a, o, _ := x.watchdog.onRequest(in, st.ctx, s)
	st.active = false
	st.renewCtx()
	if o == OutcomeOK {
		if a == Stop {
			return filter.Stop
		}
		return filter.Continue
	}
	st.skip = true
	return x.fail(s, x.onFailure(e, in))
}

// onFailure applies the policy's side effect and returns what the request
// gets: fail_open or fail_closed.
func (x *extFilter) onFailure(e *entry, in *instance) Policy {
	if x.policy == Reload {
		e.reload(in)
		return x.fallback
	}
	return x.policy
}

func (x *extFilter) fail(s *filter.Stream, p Policy) filter.Status {
	if p == FailOpen {
		return filter.Continue
	}
	s.Reply(x.status, x.failBody)
	return filter.Stop
}

func (x *extFilter) OnResponse(s *filter.Stream) {
	st, _ := s.State(x.index).(*streamState)
	if st == nil || st.skip || st.in.caps.Phases&PhaseResponse == 0 ||
		(st.in.caps.SkipsResponse != nil && st.in.caps.SkipsResponse(st.slot, s)) {
		return
	}
	st.active = true
	o, _ := x.watchdog.onResponse(st.in, st.ctx, s)
	st.active = false
	st.renewCtx()
	if o == OutcomeOK {
		return
	}
	st.skip = true
	if x.onFailure(st.e, st.in) == FailClosed {
		// The upstream response is replaced: release what backs it.
		if r := s.Resp; r != nil && r.Close != nil {
			r.Close()
			r.Close = nil
		}
		s.Reply(x.status, x.failBody)
	}
}

func (x *extFilter) OnComplete(s *filter.Stream) {
	st, _ := s.State(x.index).(*streamState)
	if st == nil {
		return
	}
	st.active = true
	x.watchdog.onComplete(st.in.plugin, s)
	st.active = false
	st.in.release()
	if !st.ctx.detach() {
		st.ctx = &callCtx{}
	}
	s.SetState(x.index, nil)
	st.e, st.in, st.skip, st.slot = nil, nil, false, nil
	x.pool.Put(st)
}

// renewCtx replaces the call context if the last call closed its Done
// channel (a runtime goroutine may still watch that one).
func (st *streamState) renewCtx() {
	if !st.ctx.release() {
		st.ctx = &callCtx{}
	}
}

// loadPlugin loads the entry's plugin again (a reload).
func (e *entry) loadPlugin(ctx context.Context) (Plugin, error) {
	if vl, ok := e.rt.(VMLoader); ok {
		return vl.LoadVM(ctx, e.manifest, e.payload, e.config, e.vm)
	}
	return e.rt.Load(ctx, e.manifest, e.payload, e.config)
}
