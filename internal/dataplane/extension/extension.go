// Package extension owns the seam between the data plane and extension
// code, whatever its kind (Proxy-Wasm, DSL, native): the extension HTTP and
// network filters, the Factory that loads and caches plugins, and the
// Watchdog every call into a plugin runs under.
//
// Contract, for a runtime author:
//   - A Runtime loads plugins of one kind; it is registered with NewFactory
//     at proxy start (two runtimes of one kind are an error). Load runs off
//     the request path, once per distinct (extension name, payload sha256,
//     config): a config version that leaves an extension unchanged reuses
//     the running plugin.
//   - A Plugin is called concurrently from many streams, each from the
//     stream's goroutine; per-stream state belongs in StreamState. Calls
//     get a ctx carrying the watchdog's deadline and must honour it.
//   - A plugin may describe itself once at load (Describer, Capabilities):
//     the phases it has work in, whether it keeps its own deadline, and
//     whether a stream's response phase can be skipped. The filter then
//     makes no call where there is nothing to do.
//
// The filter's typed config is omnirelay.extensions.v1.Extension, which
// carries a signed extension package (internal/shared/extpkg) inline. At
// Build the filter verifies the package against the proxy's trust roots,
// finds the Runtime for the package's kind, checks the ABI and the
// capabilities the manifest requires, and loads the plugin; anything wrong
// fails Build with an error naming the extension and the reason, so the
// config version is rejected and the running one stays.
//
// Every call runs under the extension's Watchdog (a deadline per call, a
// recover for panics, a counter per outcome in
// omnirelay_extension_calls_total{extension,kind,outcome}); a call that did
// not end ok is handled by the extension's Policy.
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

// Describer is implemented by plugins that can say what they do; the
// filter asks once per loaded plugin, off the request path. A plugin that is
// not a Describer is called in both phases and timed by the watchdog.
type Describer interface {
	Describe() Capabilities
}

// Capabilities is what a loaded plugin says about itself so that the filter
// calls it only where it has work.
type Capabilities struct {
	// Phases are the phases the plugin has work in. A phase not listed gets
	// no call at all: no watchdog, no clock read, nothing counted in
	// omnirelay_extension_calls_total. A stream still takes the plugin, so
	// OnComplete runs as for any stream (and OnResponse, when listed, finds
	// an empty StreamState slot if OnRequest was skipped).
	Phases Phases
	// KeepsDeadline says the runtime enforces the call deadline itself: a
	// call past its deadline is interrupted there (Proxy-Wasm: the
	// instance's timer stops the guest) or returns an error wrapping
	// context.DeadlineExceeded (native: the runtime checks the deadline
	// after the call). The watchdog then skips its own after-call clock
	// read. A plugin that says so must keep the promise on every path of
	// OnRequest and OnResponse, host work outside the guest included.
	KeepsDeadline bool
	// SkipsResponse, when set, tells per stream, once OnRequest has run,
	// that OnResponse would do nothing for it (a Proxy-Wasm context without
	// response callbacks): the filter then makes no response call. state is
	// the stream's StreamState slot as OnRequest left it. It runs on the
	// stream's goroutine, must not block, and false is always correct.
	SkipsResponse func(state any, s *filter.Stream) bool
}

// Phases is a set of the phases a plugin has work in.
type Phases uint8

const (
	// PhaseRequest: OnRequest.
	PhaseRequest Phases = 1 << iota
	// PhaseResponse: OnResponse.
	PhaseResponse

	// AllPhases is what a plugin that does not describe itself gets.
	AllPhases = PhaseRequest | PhaseResponse
)

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
