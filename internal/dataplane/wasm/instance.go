package wasm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// rootID is the root context of every instance; stream contexts count up
// from it.
const rootID = 1

// checkModule refuses a module the host cannot run, naming the reason: an
// import outside the host's function set, no Proxy-Wasm ABI export, no
// allocator. It returns the module's ABI and the start function to run.
func checkModule(cm wazero.CompiledModule) (abi, start string, err error) {
	var unknown []string
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch mod {
		case "env":
			if _, ok := hostFuncs[name]; !ok {
				unknown = append(unknown, "env."+name)
			}
		case "wasi_snapshot_preview1":
			// Provided in full; wazero names a missing one at instantiation.
		default:
			unknown = append(unknown, mod+"."+name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return "", "", fmt.Errorf("module imports unknown host functions: %s", strings.Join(unknown, ", "))
	}
	exp := cm.ExportedFunctions()
	switch {
	case exp[exportABI021] != nil:
		abi = ABI021
	case exp[exportABI020] != nil:
		abi = ABI020
	default:
		var found []string
		for name := range exp {
			if strings.HasPrefix(name, "proxy_abi_version_") {
				found = append(found, name)
			}
		}
		if len(found) > 0 {
			return "", "", fmt.Errorf("unsupported Proxy-Wasm ABI %s (want %s or %s)", strings.Join(found, ", "), exportABI021, exportABI020)
		}
		return "", "", fmt.Errorf("not a Proxy-Wasm module: no %s or %s export", exportABI021, exportABI020)
	}
	if exp["proxy_on_memory_allocate"] == nil && exp["malloc"] == nil {
		return "", "", errors.New("module exports no allocator (proxy_on_memory_allocate or malloc)")
	}
	for name, fn := range exp {
		want, known := callbackSignatures[name]
		if !known {
			continue
		}
		if got := signature(fn.ParamTypes(), fn.ResultTypes()); got != want {
			return "", "", fmt.Errorf("export %s has signature %s, want %s", name, got, want)
		}
	}
	if exp["memory"] == nil && len(cm.ExportedMemories()) == 0 {
		return "", "", errors.New("module exports no memory")
	}
	start = "_initialize"
	if exp[start] == nil && exp["_start"] != nil {
		start = "_start"
	}
	return abi, start, nil
}

// callbackSignatures are the ABI's callbacks as signature strings (see
// signature); an export of one of these names with another signature is
// refused at load rather than called with the wrong arguments.
var callbackSignatures = map[string]string{
	"proxy_on_memory_allocate":    "(i32) -> (i32)",
	"malloc":                      "(i32) -> (i32)",
	"proxy_on_context_create":     "(i32, i32) -> ()",
	"proxy_on_vm_start":           "(i32, i32) -> (i32)",
	"proxy_on_configure":          "(i32, i32) -> (i32)",
	"proxy_on_tick":               "(i32) -> ()",
	"proxy_on_queue_ready":        "(i32, i32) -> ()",
	"proxy_on_request_headers":    "(i32, i32, i32) -> (i32)",
	"proxy_on_request_body":       "(i32, i32, i32) -> (i32)",
	"proxy_on_response_headers":   "(i32, i32, i32) -> (i32)",
	"proxy_on_response_body":      "(i32, i32, i32) -> (i32)",
	"proxy_on_http_call_response": "(i32, i32, i32, i32, i32) -> ()",
	"proxy_on_log":                "(i32) -> ()",
	"proxy_on_done":               "(i32) -> (i32)",
	"proxy_on_delete":             "(i32) -> ()",
	"omnirelay_on_stream_start":   "(i32, i32, i32, i32) -> (i32)",
	"omnirelay_on_stream_end":     "(i32) -> ()",

	// Trailer and network-filter callbacks (trailers.go, network.go).
	"proxy_on_request_trailers":            "(i32, i32) -> (i32)",
	"proxy_on_response_trailers":           "(i32, i32) -> (i32)",
	"proxy_on_new_connection":              "(i32) -> (i32)",
	"proxy_on_downstream_data":             "(i32, i32, i32) -> (i32)",
	"proxy_on_upstream_data":               "(i32, i32, i32) -> (i32)",
	"proxy_on_downstream_connection_close": "(i32, i32) -> ()",
	"proxy_on_upstream_connection_close":   "(i32, i32) -> ()",
}

// signature spells a function type the way callbackSignatures does.
func signature(params, results []api.ValueType) string {
	list := func(ts []api.ValueType) string {
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(names, ", ") + ")"
	}
	return list(params) + " -> " + list(results)
}

// guestFuncs are the module's callbacks; nil when not exported.
type guestFuncs struct {
	alloc                                        api.Function
	contextCreate, vmStart, configure, tick      api.Function
	reqHeaders, reqBody, reqTrailers             api.Function
	respHeaders, respBody, respTrailers          api.Function
	log, done, del, httpCallResponse, queueReady api.Function

	// OmniRelay's optional fast path (see docs/wasm.md): one call for
	// proxy_on_context_create + proxy_on_request_headers, one for
	// proxy_on_done + proxy_on_log + proxy_on_delete: each guest call has a
	// fixed cost (the watchdog's timer, wazero's entry, the Go guest
	// runtime's), so this halves a stream's calls.
	streamStart, streamEnd api.Function
}

// instance is one instantiation of a plugin's module. It serves one stream
// (or the background loop) at a time; nothing in it is shared.
type instance struct {
	p   *Plugin
	mod api.Module
	mem api.Memory
	fn  guestFuncs

	stack      [8]uint64
	allocStack [1]uint64 // allocCopy's: a local array would escape, one allocation per value
	mapBuf     []byte    // a serialized header map on its way into guest memory
	cc         callCtx   // the context of the call in progress, reused call after call

	// The deadline watchdog (see interrupt.go and run): stop is the
	// module's interrupt global, set by timer's func once a call overruns
	// deadline. The timer is left armed between calls (armedAt: when it
	// fires; zero when idle) and re-armed only for an earlier deadline.
	stop     api.MutableGlobal
	timer    *time.Timer
	guard    sync.Mutex // the fields below, and stop's value
	running  bool
	fired    bool
	deadline time.Time
	armedAt  time.Time

	nextID     uint32
	st         *streamCtx // the stream being served; nil for root calls
	effective  uint32
	tickPeriod time.Duration
	broken     error // set once a call failed; the instance is then closed

	scratch []byte
	pairs   []pair

	// Root-context HTTP calls, on the background instance only: rootCalls
	// carries finished calls to the background loop.
	rootCalls   chan callResult
	rootPending int
	// callResp is the HTTP call response being delivered; nextTok numbers
	// the instance's calls, the root's and its streams' alike: every
	// response is delivered to the root context, where only the token tells
	// the calls apart.
	callResp *callResult
	nextTok  uint32
}

// callCtx wraps the caller's context so host functions find their
// instance. Each instance reuses its own: nothing keeps it after a call
// returns (wazero's per-call context watcher, which did, is off).
type callCtx struct {
	context.Context
	inst *instance
}

type instKey struct{}

func (c *callCtx) Value(k any) any {
	if _, ok := k.(instKey); ok {
		return c.inst
	}
	return c.Context.Value(k)
}

func instanceFrom(ctx context.Context) *instance {
	i, _ := ctx.Value(instKey{}).(*instance)
	return i
}

// newInstance instantiates the module and starts its root context. The
// instance is returned ready for streams.
func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	in := &instance{p: p, nextID: rootID}
	in.cc.inst = in
	// The start functions are called below, under the watchdog:
	// instantiation itself runs none (instrument turned a start section
	// into an export).
	mod, err := p.rt.rt.InstantiateModule(ctx, p.cm, p.rt.moduleConfig(p))
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", guestError(ctx, err))
	}
	in.mod = mod
	in.mem = mod.Memory()
	if in.mem == nil {
		_ = mod.Close(ctx)
		return nil, errors.New("instantiate: module has no memory")
	}
	stop, ok := mod.ExportedGlobal(interruptExport).(api.MutableGlobal)
	if !ok {
		_ = mod.Close(ctx)
		return nil, errors.New("instantiate: module lacks the interrupt global (not instrumented)")
	}
	in.stop = stop
	if start := mod.ExportedFunction(startExport); start != nil {
		// The module's start section, moved out of instantiation (see
		// interrupt.go).
		if err := in.run(ctx, start, in.stack[:]); err != nil {
			in.close()
			return nil, fmt.Errorf("start function: %w", guestError(ctx, err))
		}
	}
	if start := mod.ExportedFunction(p.start); start != nil {
		// Host functions may run during _initialize (a guest logging at
		// init). A command's _start ends in proc_exit(0): a success, as
		// wazero's own start-function handling takes it.
		var exit *sys.ExitError
		if err := in.run(ctx, start, in.stack[:]); err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
			in.close()
			return nil, fmt.Errorf("%s: %w", p.start, guestError(ctx, err))
		}
	}
	f := func(name string) api.Function { return mod.ExportedFunction(name) }
	in.fn = guestFuncs{
		alloc:            f("proxy_on_memory_allocate"),
		contextCreate:    f("proxy_on_context_create"),
		vmStart:          f("proxy_on_vm_start"),
		configure:        f("proxy_on_configure"),
		tick:             f("proxy_on_tick"),
		reqHeaders:       f("proxy_on_request_headers"),
		reqBody:          f("proxy_on_request_body"),
		reqTrailers:      f("proxy_on_request_trailers"),
		respHeaders:      f("proxy_on_response_headers"),
		respBody:         f("proxy_on_response_body"),
		respTrailers:     f("proxy_on_response_trailers"),
		log:              f("proxy_on_log"),
		done:             f("proxy_on_done"),
		del:              f("proxy_on_delete"),
		httpCallResponse: f("proxy_on_http_call_response"),
		queueReady:       f("proxy_on_queue_ready"),
		streamStart:      f("omnirelay_on_stream_start"),
		streamEnd:        f("omnirelay_on_stream_end"),
	}
	if in.fn.streamStart == nil || in.fn.streamEnd == nil {
		in.fn.streamStart, in.fn.streamEnd = nil, nil
	}
	if in.fn.alloc == nil {
		in.fn.alloc = f("malloc")
	}
	if err := in.startRoot(ctx); err != nil {
		in.close()
		return nil, err
	}
	return in, nil
}

func (in *instance) startRoot(ctx context.Context) error {
	if _, err := in.call(ctx, in.fn.contextCreate, "proxy_on_context_create", rootID, 0); err != nil {
		return err
	}
	// proxy_on_vm_start runs once per VM: on the first instance of a
	// plugin (of a vm_id and module, for plugins sharing one), not on the
	// instances the pool adds, where it would redo VM-wide work such as
	// resetting shared data while streams run.
	if in.p.claimVMStart() {
		ok, err := in.call(ctx, in.fn.vmStart, "proxy_on_vm_start", rootID, uint64(len(in.p.vm.Config)))
		if err == nil && in.fn.vmStart != nil && ok == 0 {
			err = errors.New("proxy_on_vm_start returned false: the plugin refused to start")
		}
		if err != nil {
			in.p.vmStarted.Store(false) // the VM did not start: the next instance tries
			return err
		}
	}
	ok, err := uint64(0), error(nil)
	ok, err = in.call(ctx, in.fn.configure, "proxy_on_configure", rootID, uint64(len(in.p.config)))
	if err != nil {
		return err
	}
	if in.fn.configure != nil && ok == 0 {
		return errors.New("proxy_on_configure returned false: the plugin rejected its configuration")
	}
	return nil
}

// call runs a guest callback with up to three i32 arguments (the ABI's
// callbacks take at most five; callN covers those). A missing callback is a
// no-op returning 0 (Continue). Any failure breaks the instance.
func (in *instance) call(ctx context.Context, fn api.Function, name string, args ...uint64) (uint64, error) {
	if in.broken != nil {
		return 0, in.broken
	}
	if fn == nil {
		return 0, nil
	}
	copy(in.stack[:], args)
	if err := in.run(ctx, fn, in.stack[:]); err != nil {
		in.broken = fmt.Errorf("%s: %w", name, guestError(ctx, err))
		return 0, in.broken
	}
	return uint64(uint32(in.stack[0])), nil // i32 results: the upper half is undefined
}

// run calls fn under the deadline watchdog: if ctx has a deadline, the
// instance's timer raises the interrupt global when it passes, and the
// guest traps at its next loop iteration. The error of an interrupted call
// wraps errInterrupted. A call made from a host function (the allocator)
// runs inside its caller's run and calls fn directly.
//
// Only a deadline interrupts a guest, not a cancellation: a call runs to
// its end or its deadline. A context with no deadline is checked for a
// cancellation before the call; one with a deadline is not (with the
// extension filter's contexts that costs a clock read per call), so a
// stream cancelled mid-way still makes its calls, each bounded.
//
// The timer is not stopped after a call, nor reset for the next one if it
// is due to fire before that call's deadline: calls come one after another
// with deadlines a fixed time ahead, so in steady use a call costs no clock
// read and no timer operation, and the timer fires about once a deadline
// period, finds the deadline moved on, and is re-armed for it.
func (in *instance) run(ctx context.Context, fn api.Function, stack []uint64) error {
	d, has := ctx.Deadline()
	if has {
		in.guard.Lock()
		in.running, in.deadline = true, d
		if in.armedAt.IsZero() || d.Before(in.armedAt) {
			wait := time.Until(d)
			if wait <= 0 {
				in.running = false
				in.guard.Unlock()
				return errInterrupted
			}
			in.armedAt = d
			if in.timer == nil {
				in.timer = time.AfterFunc(wait, in.interrupt)
			} else {
				in.timer.Reset(wait)
			}
		}
		in.guard.Unlock()
	} else if err := ctx.Err(); err != nil {
		return err
	}
	in.cc.Context = ctx
	err := fn.CallWithStack(&in.cc, stack)
	in.cc.Context = nil
	if in.disarm(has) && err != nil {
		return errInterrupted
	}
	return err
}

// disarm ends a call's watch and reports whether its deadline interrupted
// it. The global is cleared so that a late firing does not stop the next
// call.
func (in *instance) disarm(armed bool) (fired bool) {
	if !armed {
		return false
	}
	in.guard.Lock()
	fired = in.fired
	in.running, in.fired = false, false
	if fired {
		in.stop.Set(0)
	}
	in.guard.Unlock()
	return fired
}

// interrupt is the timer's func. With no call running the timer goes
// idle; with one whose deadline is still ahead (the timer was armed for an
// earlier call's) it is re-armed for that deadline; otherwise the guest is
// stopped.
func (in *instance) interrupt() {
	in.guard.Lock()
	defer in.guard.Unlock()
	if !in.running {
		in.armedAt = time.Time{}
		return
	}
	if wait := time.Until(in.deadline); wait > 0 {
		in.armedAt = in.deadline
		in.timer.Reset(wait)
		return
	}
	in.armedAt = time.Time{}
	in.fired = true
	in.stop.Set(1)
}

// errInterrupted marks a guest stopped because its deadline passed.
var errInterrupted = errors.New("wasm guest interrupted at its deadline")

// guestError explains why a guest call failed: the deadline (wrapping
// ctx.Err() so that the watchdog counts a timeout), a Go guest that exited
// (a panic or out-of-memory in a Go guest ends in proc_exit), or a trap.
func guestError(ctx context.Context, err error) error {
	if errors.Is(err, errInterrupted) {
		// The instance's own timer: the deadline passed, whether or not
		// ctx has noticed yet.
		return fmt.Errorf("%w: %w", errInterrupted, context.DeadlineExceeded)
	}
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return err // not called: ctx ended before
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("%w: %w", errInterrupted, cerr)
			}
			return errInterrupted
		}
		return fmt.Errorf("wasm guest exited with code %d (a Go guest panics or runs out of memory this way): %w", exit.ExitCode(), err)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return fmt.Errorf("wasm guest trapped: %w", err)
}

// newID numbers a stream context on the instance.
func (in *instance) newID() uint32 {
	in.nextID++
	return in.nextID
}

func (in *instance) close() {
	if in.timer != nil {
		in.timer.Stop()
	}
	if in.mod != nil {
		_ = in.mod.Close(context.Background())
	}
}

// alloc reserves n bytes in guest memory through the guest's allocator and
// copies b there. It is called from host functions, re-entering the guest.
func (in *instance) allocCopy(ctx context.Context, b []byte) (uint32, bool) {
	if in.fn.alloc == nil {
		return 0, false
	}
	in.allocStack[0] = uint64(len(b))
	if err := in.fn.alloc.CallWithStack(ctx, in.allocStack[:]); err != nil {
		return 0, false
	}
	ptr := uint32(in.allocStack[0])
	if len(b) > 0 && (ptr == 0 || !in.mem.Write(ptr, b)) {
		return 0, false
	}
	return ptr, true
}

// returnBytes implements the ABI's (return_data, return_size) convention:
// copy b into guest memory and write its address and length at the two
// given pointers.
func (in *instance) returnBytes(ctx context.Context, b []byte, retPtr, retSize uint32) uint32 {
	ptr := uint32(0)
	if len(b) > 0 {
		var ok bool
		if ptr, ok = in.allocCopy(ctx, b); !ok {
			return statusInvalidMemoryAccess
		}
	}
	if !in.mem.WriteUint32Le(retPtr, ptr) || !in.mem.WriteUint32Le(retSize, uint32(len(b))) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// read returns a view of guest memory; ok is false when out of range.
func (in *instance) read(ptr, size uint32) ([]byte, bool) {
	if size == 0 {
		return nil, true
	}
	return in.mem.Read(ptr, size)
}
