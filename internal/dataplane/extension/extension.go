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
