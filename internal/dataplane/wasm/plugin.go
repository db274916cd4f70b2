package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// Continue and Stop are the extension filter's actions.
const (
	Continue = extension.Continue
	Stop     = extension.Stop
)

// Proxy-Wasm actions returned by the guest's header and body callbacks.
const (
	guestContinue = 0
	guestPause    = 1
)

// Bits above the action in omnirelay_on_stream_start's result: the later
// callbacks the stream's context implements. Modules without the fast path
// get them all.
const (
	wantsResponseHeaders = 1 << 8
	wantsResponseBody    = 1 << 9
	wantsRequestBody     = 1 << 10
	wantsEnd             = 1 << 11
	wantsAll             = wantsResponseHeaders | wantsResponseBody | wantsRequestBody | wantsEnd | wantsResponseTrailers | wantsRequestTrailers
)

// Plugin is a loaded module: its compiled code, the pool of instances that
// serve streams, and what the instances share (shared data, queues,
// metrics). Its methods are safe for concurrent use by many streams.
type Plugin struct {
	rt     *Runtime
	name   string
	abi    string
	start  string
	cm     wazero.CompiledModule
	config []byte
	vm     VM
	sum    [32]byte     // the (instrumented) module's sha256
	shared *sharedState // the VM's (vm_id's) shared data
	// vmStarted is whether proxy_on_vm_start ran (claimVMStart); shared by
	// the plugins of one vm_id and module.
	vmStarted *atomic.Bool
	// ready carries the ids of the plugin's queues with items to its
	// background instance; queued is set once it registered one.
	ready  chan uint32
	queued atomic.Bool
	// The metrics the plugin defined, by id-1.
	metricMu  sync.Mutex
	metricIDs map[string]uint32
	metrics   []*metric
	log       *slog.Logger

	// props are the properties declared with declare_property (foreign.go).
	propsMu sync.Mutex
	props   map[string]declaredProperty

	// states holds stream contexts when the plugin is called outside the
	// extension filter (tests, embedders); the filter gives each stream a
	// slot (extension.StreamState) instead.
	states sync.Map // *filter.Stream -> *streamCtx

	mu     sync.Mutex
	idle   []*instance
	closed bool

	// avail hands an instance being put back (or a new spare) straight to a
	// stream waiting in get.
	avail chan *instance
	// spares bounds concurrent background instantiations; warm tracks them
	// so that Close waits.
	spares chan struct{}
	warm   sync.WaitGroup

	bgStop chan struct{}
	bgDone chan struct{}
	// bgCtx bounds root-context HTTP calls: cancelled by Close.
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// Name is the plugin's name (logs, metrics, the plugin_name property).
func (p *Plugin) Name() string { return p.name }

// ABI is the module's declared ABI version.
func (p *Plugin) ABI() string { return p.abi }

// streamCtx is a stream's Proxy-Wasm HTTP context: which instance serves it
// and what the host functions need while the guest runs.
type streamCtx struct {
	id   uint32
	in   *instance
	s    *filter.Stream
	resp bool // in the response phase

	wants   uint64 // wants* bits: which later callbacks to make
	local   bool   // the guest sent a local response
	resumed bool   // proxy_continue_stream after a pause

	reqBody, respBody []byte
	props             map[string][]byte

	pending int
	calls   chan callResult
	cancel  context.CancelFunc // of the context afterCallback made, if any

	// streaming: a body streams to the guest after the phase (body.go);
	// ended, under tr.mu, tells it the stream completed.
	streaming, ended bool

	tr trailerState // trailers.go
}

// warmTimeout bounds the instantiation of a spare instance.
const warmTimeout = 10 * time.Second

// maxSpares bounds concurrent background instantiations (each takes a few
// milliseconds of CPU and a few MiB).
const maxSpares = 4

// get takes an idle instance. With none idle it starts a spare in the
// background and waits, within ctx, for the first instance to come back or
// be ready: instantiating a Go-built guest takes milliseconds (its
// runtime's init), more than a call deadline should pay, and it runs guest
// code that must not escape the watchdog. Taking the last idle instance
// also starts a spare, so that a steady load finds one ready.
func (p *Plugin) get(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("plugin closed")
	}
	n := len(p.idle)
	if n > 0 {
		in := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if n == 1 {
			p.startSpare()
		}
		return in, nil
	}
	p.mu.Unlock()
	p.startSpare()
	select {
	case in := <-p.avail:
		return in, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no instance free or ready before the deadline: %w", ctx.Err())
	}
}

// startSpare instantiates an instance in the background unless maxSpares
// are already on their way.
func (p *Plugin) startSpare() {
	select {
	case p.spares <- struct{}{}:
	default:
		return
	}
	// Add under mu, checking closed: Close sets closed under mu before it
	// waits, so no spare starts after the wait began.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.spares
		return
	}
	p.warm.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.warm.Done()
		defer func() { <-p.spares }()
		ctx, cancel := context.WithTimeout(context.Background(), warmTimeout)
		defer cancel()
		in, err := p.newInstance(ctx)
		if err != nil {
			p.log.Warn("wasm spare instance failed", "reason", err.Error())
			return
		}
		p.put(in)
	}()
}

// put returns a healthy instance to the pool; a broken one, or one the pool
// has no room for, is closed.
func (p *Plugin) put(in *instance) {
	if in.broken != nil {
		p.log.Warn("wasm instance discarded", "reason", in.broken.Error())
		in.close()
		return
	}
	in.st = nil
	select {
	case p.avail <- in: // a stream was waiting for it
		return
	default:
	}
	p.mu.Lock()
	if !p.closed && len(p.idle) < p.rt.opts.MaxIdle {
		p.idle = append(p.idle, in)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	in.close()
}

// OnRequest creates the stream's HTTP context on an instance and runs
// proxy_on_request_headers, then proxy_on_request_body when the body is
// small enough to buffer (see Options.MaxBodyBytes). A guest that pauses is
// waited for (an HTTP call-out) until it resumes or ctx ends.
func (p *Plugin) OnRequest(ctx context.Context, s *filter.Stream) (extension.Action, error) {
	in, err := p.get(ctx)
	if err != nil {
		return Continue, fmt.Errorf("wasm plugin %q: %w", p.name, err)
	}
	st := &streamCtx{in: in, s: s, id: in.newID()}
	in.st = st
	in.effective = st.id
	p.setState(s, st)
	defer st.watchRequestTrailers()
	r := s.Req
	eos := r.Body == nil
	id, n := uint64(st.id), uint64(requestHeaderCount(r))
	var act uint64
	if in.fn.streamStart != nil {
		act, err = in.call(ctx, in.fn.streamStart, "omnirelay_on_stream_start", id, rootID, n, b2u(eos))
		st.wants, act = act&^0xff, act&0xff
	} else if _, err = in.call(ctx, in.fn.contextCreate, "proxy_on_context_create", id, rootID); err == nil {
		st.wants = wantsAll
		act, err = in.call(ctx, in.fn.reqHeaders, "proxy_on_request_headers", id, n, b2u(eos))
	}
	if err != nil {
		return Continue, p.fail(err)
	}
	if ctx, err = st.afterCallback(ctx, act); err != nil {
		return Continue, p.fail(err)
	}
	if st.local {
		return Stop, nil
	}
	if !eos && st.wants&wantsRequestBody != 0 && in.fn.reqBody != nil {
		// body.go: streamed as read, buffered while the guest asks.
		b := &bodyPump{st: st, src: r.Body, left: r.ContentLength}
		body, n, err := b.pumpHead(ctx)
		switch {
		case st.local:
			return Stop, nil
		case errors.Is(err, errBodyTooLarge):
			st.local = true
			s.Reply(413, "request body too large for extension "+p.name)
			return Stop, nil
		case err != nil:
			return Continue, p.fail(err)
		}
		r.Body, r.ContentLength = body, n
	}
	return Continue, nil
}

// needsResponse reports whether OnResponse has anything to do for st: a
// response, and a working instance whose context has a response callback
// (headers, body or trailers).
func needsResponse(st *streamCtx, s *filter.Stream) bool {
	return st != nil && st.in.broken == nil && s.Resp != nil &&
		st.wants&(wantsResponseHeaders|wantsResponseBody|wantsResponseTrailers) != 0
}

// OnResponse runs proxy_on_response_headers, then proxy_on_response_body
// for a small body of known length.
func (p *Plugin) OnResponse(ctx context.Context, s *filter.Stream) error {
	st := p.state(s)
	if !needsResponse(st, s) {
		return nil
	}
	st.tr.mu.Lock() // trailers.go: a request's trailers may arrive meanwhile
	defer st.leaveResponse()
	in := st.in
	st.resp = true
	st.resumed = false
	in.effective = st.id
	resp := s.Resp
	eos := resp.Body == nil
	var act uint64
	var err error
	if st.wants&wantsResponseHeaders != 0 {
		act, err = in.call(ctx, in.fn.respHeaders, "proxy_on_response_headers", uint64(st.id), uint64(responseHeaderCount(resp)), b2u(eos))
	}
	if err != nil {
		return p.fail(err)
	}
	if ctx, err = st.afterCallback(ctx, act); err != nil {
		return p.fail(err)
	}
	if st.local || eos || st.wants&wantsResponseBody == 0 || in.fn.respBody == nil {
		return nil
	}
	if resp.Status == 101 {
		return nil // an upgraded connection: a tunnel, not a body
	}
	// body.go: streamed as read, buffered while the guest asks.
	b := &bodyPump{st: st, resp: true, src: resp.Body, left: resp.ContentLength}
	body, n, err := b.pumpHead(ctx)
	switch {
	case st.local:
		return nil
	case errors.Is(err, errBodyTooLarge):
		st.local = true
		st.replaceResponse()
		s.Reply(500, "response body too large for extension "+p.name)
		return nil
	case err != nil:
		return p.fail(err)
	}
	resp.Body, resp.ContentLength = body, n
	return nil
}

// OnComplete ends the stream's context (proxy_on_done, proxy_on_log,
// proxy_on_delete, the order Envoy uses) and returns the instance to the
// pool, or closes it if it broke.
func (p *Plugin) OnComplete(s *filter.Stream) {
	st := p.takeState(s)
	if st == nil {
		return
	}
	in := st.in
	if st.cancel != nil {
		st.cancel()
	}
	if st.streaming {
		st.tr.mu.Lock()
		st.ended = true
		st.tr.mu.Unlock()
	}
	if in.broken == nil && st.wants&wantsEnd != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), p.rt.opts.CompleteTimeout)
		id := uint64(st.id)
		if in.fn.streamEnd != nil {
			_, _ = in.call(ctx, in.fn.streamEnd, "omnirelay_on_stream_end", id)
		} else if _, err := in.call(ctx, in.fn.done, "proxy_on_done", id); err == nil {
			if _, err := in.call(ctx, in.fn.log, "proxy_on_log", id); err == nil {
				_, _ = in.call(ctx, in.fn.del, "proxy_on_delete", id)
			}
		}
		cancel()
	}
	p.put(in)
}

func (p *Plugin) setState(s *filter.Stream, st *streamCtx) {
	if slot := extension.StreamState(s); slot != nil {
		*slot = st
		return
	}
	p.states.Store(s, st)
}

func (p *Plugin) state(s *filter.Stream) *streamCtx {
	if slot := extension.StreamState(s); slot != nil {
		st, _ := (*slot).(*streamCtx)
		return st
	}
	v, ok := p.states.Load(s)
	if !ok {
		return nil
	}
	return v.(*streamCtx)
}

func (p *Plugin) takeState(s *filter.Stream) *streamCtx {
	if slot := extension.StreamState(s); slot != nil {
		st, _ := (*slot).(*streamCtx)
		*slot = nil
		return st
	}
	v, ok := p.states.LoadAndDelete(s)
	if !ok {
		return nil
	}
	return v.(*streamCtx)
}

func (p *Plugin) fail(err error) error {
	return fmt.Errorf("wasm plugin %q: %w", p.name, err)
}

// Close stops the background loop and closes every idle instance. Streams
// in flight keep their instance until OnComplete, which then closes it.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	if p.bgStop != nil {
		p.bgCancel()
		close(p.bgStop)
		<-p.bgDone
	}
	p.warm.Wait() // its instance goes to put, which closes it
	for _, in := range idle {
		in.close()
	}
	p.rt.forget(p)
	p.rt.releaseShared(p.vm.ID)
	// Instances still serving streams keep working: wazero allows closing
	// a compiled module with instances outstanding.
	return p.cm.Close(context.Background())
}

// afterCallback handles a paused guest: it waits for its HTTP call-outs,
// delivering each response with proxy_on_http_call_response, until the guest
// resumes the stream or answers it.
//
// The wait is not bounded by the call's deadline (ctx), which is for guest
// work: a call-out takes what its upstream takes. It lasts at most
// Options.PauseTimeout and ends with the stream (s.Ctx). Each response is
// delivered to the root context, as in Envoy (the SDKs then switch to the
// stream with proxy_set_effective_context), under the completion deadline.
// After a wait the phase's call deadline has likely passed: the returned
// context gives the phase's next calls the completion deadline from the
// resumption (it is the stream's, cancelled at OnComplete).
func (st *streamCtx) afterCallback(ctx context.Context, act uint64) (context.Context, error) {
	if act != guestPause || st.local {
		return ctx, nil
	}
	st.resumed = false
	in := st.in
	var wait context.Context
	for !st.resumed && !st.local {
		if st.pending == 0 {
			return ctx, errors.New("plugin paused the stream with no call-out pending and did not resume it")
		}
		if wait == nil {
			parent := st.s.Ctx
			if parent == nil {
				parent = context.Background()
			}
			var cancel context.CancelFunc
			wait, cancel = context.WithTimeout(parent, in.p.rt.opts.PauseTimeout)
			defer cancel()
		}
		select {
		case r := <-st.calls:
			st.pending--
			if err := in.deliverCall(wait, &r); err != nil {
				return ctx, err
			}
			in.effective = st.id
		case <-wait.Done():
			return ctx, fmt.Errorf("waiting for a paused plugin: %w", wait.Err())
		}
	}
	if wait == nil {
		return ctx, nil
	}
	if st.cancel != nil {
		st.cancel()
	}
	parent := st.s.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, st.cancel = context.WithTimeout(parent, in.p.rt.opts.CompleteTimeout)
	return ctx, nil
}

// deliverCall runs proxy_on_http_call_response for r on the root context,
// under the completion deadline.
func (in *instance) deliverCall(parent context.Context, r *callResult) error {
	ctx, cancel := context.WithTimeout(parent, in.p.rt.opts.CompleteTimeout)
	defer cancel()
	in.callResp, in.effective = r, rootID
	_, err := in.call(ctx, in.fn.httpCallResponse, "proxy_on_http_call_response",
		rootID, uint64(r.token), uint64(len(r.headers)), uint64(len(r.body)), uint64(len(r.trailers)))
	in.callResp = nil
	return err
}

// startBackground dedicates in to ticks and queue notifications.
func (p *Plugin) startBackground(in *instance) {
	p.bgStop = make(chan struct{})
	p.bgDone = make(chan struct{})
	p.bgCtx, p.bgCancel = context.WithCancel(context.Background())
	in.rootCalls = make(chan callResult, maxPendingCalls)
	go p.background(in)
}

func (p *Plugin) background(in *instance) {
	defer close(p.bgDone)
	defer in.close()
	var tick <-chan time.Time
	if in.tickPeriod > 0 {
		if running := p.rt.opts.Running; running != nil {
			// Until the first config version is in service (start-up), a
			// call-out from a tick would find no cluster.
			for !running() {
				select {
				case <-p.bgStop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		t := time.NewTicker(in.tickPeriod)
		defer t.Stop()
		tick = t.C
	}
	deadline := p.rt.opts.CompleteTimeout
	run := func(fn func(ctx context.Context) error) bool {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		in.effective = rootID
		if err := fn(ctx); err != nil {
			p.log.Warn("wasm background call failed; ticks and queue notifications stop", "reason", err.Error())
			return false
		}
		return true
	}
	for {
		select {
		case <-p.bgStop:
			return
		case <-tick:
			if !run(func(ctx context.Context) error {
				_, err := in.call(ctx, in.fn.tick, "proxy_on_tick", rootID)
				return err
			}) {
				return
			}
		case r := <-in.rootCalls:
			in.rootPending--
			if !run(func(ctx context.Context) error { return in.deliverCall(ctx, &r) }) {
				return
			}
		case id := <-p.ready:
			if !run(func(ctx context.Context) error {
				_, err := in.call(ctx, in.fn.queueReady, "proxy_on_queue_ready", rootID, uint64(id))
				return err
			}) {
				return
			}
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
