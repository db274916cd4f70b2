// Package extension owns OmniRelay's extension HTTP filter and the watchdog
// every extension runs under, whatever its kind: Proxy-Wasm, DSL or native.
//
// The filter's typed config is omnirelay.extensions.v1.Extension, which
// carries a signed extension package (internal/shared/extpkg) inline. At
// Build the filter verifies the package against the proxy's trust roots,
// finds the Runtime registered for the package's kind, checks the ABI and
// the capabilities the manifest requires, and loads the plugin once: loads
// are cached by extension name, payload sha256 and config, so a config
// version that leaves an extension unchanged reuses the running plugin.
// Anything wrong fails Build with an error naming the extension and the
// reason, so the config version is rejected and the running one stays.
//
// Every call into a plugin runs under the extension's Watchdog: a deadline
// per call (in the ctx the plugin gets), a recover for panics, and a counter
// per outcome (ok, error, timeout, panic) in
// omnirelay_extension_calls_total{extension,kind,outcome}. A call that did
// not end ok is handled by the extension's Policy.
//
// The watchdog's clock reads were the largest host cost of a Wasm call, so
// it keeps them few: a call reads the monotonic clock only (time.Since of
// the watchdog's epoch, half the cost of time.Now, which reads the wall
// clock too) once at its start, for its deadline, and once at its end, to
// turn a late answer into a timeout; a plugin whose runtime enforces the
// deadline itself (DeadlineKeeper: Proxy-Wasm interrupts the guest, the
// native runtime checks after the call) skips the second read, and a plugin
// that knows a stream needs no response phase (ResponseSkipper: a Proxy-Wasm
// context without response callbacks, a DSL rule set without response
// rules) is not called for it, so such a Wasm request reads the clock once;
// a plugin with no request phase at all (RequestSkipper: a DSL rule set with
// response rules only) gets no request call. The resolution that costs: a Wasm guest call that ends after its deadline but
// before the interrupt timer has run (the timer's latency) counts as ok; a
// guest still running at its deadline is stopped as before, and every other
// kind is timed at the end of each call. Not taken: a coarse clock kept by a
// ticker goroutine (an atomic load instead of the start read, ~1 ms
// resolution) costs 20-30 µs of CPU per tick on an otherwise idle process,
// 2-3% of a core at 1 ms, against ~25 ns saved per call: it pays only past
// about a million extension calls per second. The watchdog keeps no latency
// histogram, so there is no timing to sample.
//
// Runtimes register with NewFactory at proxy start; two runtimes of one
// kind are an error.
package extension

import (
	"context"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// Runtime loads plugins of one kind. One value serves the whole process.
type Runtime interface {
	// Kind is extpkg.KindWasm, KindDSL or KindNative.
	Kind() string
	// ABIs lists the ABI versions accepted, as manifests spell them (they
	// are advertised in the proxy's capabilities).
	ABIs() []string
	// Load compiles payload with config and returns a ready plugin. It runs
	// off the request path, once per distinct (package, config), and must
	// return an error that says what is wrong with the payload or config.
	// ctx bounds the load.
	Load(ctx context.Context, m extpkg.Manifest, payload, config []byte) (Plugin, error)
}

// VM is a Proxy-Wasm plugin's VM settings (omnirelay.extensions.v1.Wasm):
// the vm_id whose shared data and queues it shares, its root_id, and the VM
// configuration. The zero value is a plugin with a VM of its own.
type VM struct {
	ID, RootID string
	Config     []byte
}

func (v VM) isZero() bool { return v.ID == "" && v.RootID == "" && len(v.Config) == 0 }

// VMLoader is implemented by runtimes whose plugins have VM settings
// (Proxy-Wasm). An extension with settings is refused by other runtimes.
type VMLoader interface {
	LoadVM(ctx context.Context, m extpkg.Manifest, payload, config []byte, vm VM) (Plugin, error)
}

// Plugin is a loaded extension. Its methods are called concurrently from
// many streams (each stream from its own goroutine), so per-stream state
// belongs in StreamState, never in the plugin value.
type Plugin interface {
	// OnRequest runs on the stream's goroutine with ctx carrying the
	// watchdog deadline (honour ctx.Done in anything that can run long).
	// Stop means the plugin answered (s.Reply or s.LocalResponse) and the
	// chain must not go on.
	OnRequest(ctx context.Context, s *filter.Stream) (Action, error)
	// OnResponse runs for streams whose OnRequest succeeded, once the
	// response headers are known.
	OnResponse(ctx context.Context, s *filter.Stream) error
	// OnComplete runs once per stream that ran OnRequest, whatever its
	// outcome: release the instance and per-stream state here.
	OnComplete(s *filter.Stream)
	// Close releases the plugin. It is called once no stream uses the
	// plugin any more (after a reload replaced it, or once the cache lets
	// it go).
	Close() error
}

// DeadlineKeeper is implemented by plugins whose runtime enforces the call
// deadline itself: a call past its deadline is interrupted there (Proxy-Wasm:
// the instance's timer stops the guest) or returns an error wrapping
// context.DeadlineExceeded (native: the runtime checks the deadline after
// the call). The watchdog then skips its own after-call clock read, which
// for such a plugin would only repeat what the runtime did. A plugin that
// says yes must keep that promise on every path of OnRequest and
// OnResponse, including host work outside the guest (body reads); the
// watchdog asks once per loaded plugin, off the request path.
type DeadlineKeeper interface {
	KeepsDeadline() bool
}

// ResponseSkipper is implemented by plugins that know, once OnRequest has
// run, that a stream's OnResponse would do nothing (a Proxy-Wasm stream
// whose context has no response callbacks). The filter then makes no
// response call for it: no watchdog, no clock read, nothing counted in
// omnirelay_extension_calls_total. state is the stream's StreamState slot
// as OnRequest left it. It runs on the stream's goroutine, must not block,
// and false is always a correct answer.
type ResponseSkipper interface {
	SkipsResponse(state any, s *filter.Stream) bool
}

// RequestSkipper is implemented by plugins whose OnRequest does nothing for
// any stream (a DSL rule set with response rules only). The filter asks
// once per loaded plugin, off the request path, and for a plugin that says
// yes makes no request call: no watchdog, no clock read, nothing counted in
// omnirelay_extension_calls_total. The stream still takes the plugin, so
// OnResponse and OnComplete run as for any stream (OnResponse then finds
// an empty StreamState slot). Unlike ResponseSkipper it is not asked per
// stream: what a plugin's OnRequest would do depends on the request, which
// only the call can tell.
type RequestSkipper interface {
	SkipsRequest() bool
}

// Action is what a plugin's OnRequest tells the chain.
type Action int

const (
	// Continue passes the request on.
	Continue Action = 0
	// Stop ends the request phase: the plugin has set the response.
	Stop Action = 1
)

// Policy is what a failed call does to the request.
type Policy string

const (
	// FailOpen skips the extension for the rest of the stream.
	FailOpen Policy = "fail_open"
	// FailClosed answers the request with the extension's fail status.
	FailClosed Policy = "fail_closed"
	// Reload replaces the plugin with a fresh Load and applies the
	// extension's fallback (FailOpen or FailClosed) until it is ready.
	Reload Policy = "reload"
)

// StreamState returns the per-stream state slot of the plugin being called
// for s; a plugin keeps whatever it needs there between OnRequest,
// OnResponse and OnComplete (an instance taken from its pool, say). The slot
// starts nil for every stream and is dropped after OnComplete. It may be
// called only from inside those three calls; elsewhere it returns nil.
//
// The filter keeps the slot in its own per-stream state and marks it active
// around each call, so the lookup is a scan of the stream's filter slots
// (at most filter.MaxFilters type checks) with no allocation.
func StreamState(s *filter.Stream) *any {
	for i := range filter.MaxFilters {
		if st, ok := s.State(i).(*streamState); ok && st.active {
			return &st.slot
		}
	}
	return nil
}
