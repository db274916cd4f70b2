//go:build wasip1

package proxywasm

import "strconv"

// Action is what a header or body callback tells the host.
type Action uint32

const (
	// ActionContinue lets the stream go on.
	ActionContinue Action = 0
	// ActionPause holds the stream until ResumeHTTPRequest/Response or
	// SendHTTPResponse (typically after DispatchHTTPCall).
	ActionPause Action = 1
)

// Status is a host function's result; non-zero values are errors.
type Status uint32

// Host status codes.
const (
	StatusOK                  Status = 0
	StatusNotFound            Status = 1
	StatusBadArgument         Status = 2
	StatusSerializationFailed Status = 3
	StatusInvalidMemoryAccess Status = 6
	StatusEmpty               Status = 7
	StatusCasMismatch         Status = 8
	StatusInternalFailure     Status = 10
	StatusUnimplemented       Status = 12
)

func (s Status) Error() string {
	switch s {
	case StatusNotFound:
		return "proxy-wasm: not found"
	case StatusBadArgument:
		return "proxy-wasm: bad argument"
	case StatusSerializationFailed:
		return "proxy-wasm: serialization failure"
	case StatusInvalidMemoryAccess:
		return "proxy-wasm: invalid memory access"
	case StatusEmpty:
		return "proxy-wasm: empty"
	case StatusCasMismatch:
		return "proxy-wasm: CAS mismatch"
	case StatusInternalFailure:
		return "proxy-wasm: internal failure"
	case StatusUnimplemented:
		return "proxy-wasm: unimplemented"
	}
	return "proxy-wasm: status " + strconv.Itoa(int(s))
}

func asErr(s uint32) error {
	if s == 0 {
		return nil
	}
	return Status(s)
}

// RootContext is the plugin's per-instance root: configuration, ticks,
// queues, and the factory of HTTP contexts.
type RootContext interface {
	// OnVMStart receives the VM configuration size; false fails the load.
	OnVMStart(vmConfigurationSize int) bool
	// OnPluginStart receives the plugin configuration size (read it with
	// GetPluginConfiguration); false fails the load.
	OnPluginStart(pluginConfigurationSize int) bool
	// OnTick runs every SetTickPeriodMilliSeconds.
	OnTick()
	// OnQueueReady runs when a queue this plugin registered has items.
	OnQueueReady(queueID uint32)
	// NewHTTPContext creates the context of one stream.
	NewHTTPContext(contextID uint32) HTTPContext
}

// HTTPContext handles one HTTP stream. The other callbacks are optional
// interfaces (HTTPRequestBodyHandler, HTTPResponseHeadersHandler, ...): a
// context implements only those it needs, and OmniRelay's host skips the
// calls it does not (each guest call has a fixed cost).
type HTTPContext interface {
	OnHTTPRequestHeaders(numHeaders int, endOfStream bool) Action
}

// HTTPRequestBodyHandler sees the whole request body (OmniRelay buffers
// bodies of known length up to its limit).
type HTTPRequestBodyHandler interface {
	OnHTTPRequestBody(bodySize int, endOfStream bool) Action
}

// HTTPRequestTrailersHandler sees request trailers, when the request has
// some, once its body has been read (OmniRelay calls it as the upstream
// transport reaches the end of the body, before the trailers go upstream).
type HTTPRequestTrailersHandler interface {
	OnHTTPRequestTrailers(numTrailers int) Action
}

// HTTPResponseHeadersHandler sees the response headers.
type HTTPResponseHeadersHandler interface {
	OnHTTPResponseHeaders(numHeaders int, endOfStream bool) Action
}

// HTTPResponseBodyHandler sees the whole response body (known length, up
// to the host's limit).
type HTTPResponseBodyHandler interface {
	OnHTTPResponseBody(bodySize int, endOfStream bool) Action
}

// HTTPResponseTrailersHandler sees response trailers (a gRPC response's
// grpc-status), when the response has some, once its body has been sent and
// before the trailers are; it may edit them. The head is sent by then:
// SendHTTPResponse fails with StatusBadArgument.
type HTTPResponseTrailersHandler interface {
	OnHTTPResponseTrailers(numTrailers int) Action
}

// HTTPStreamDoneHandler runs once the stream is over (proxy_on_log).
type HTTPStreamDoneHandler interface {
	OnHTTPStreamDone()
}

// DefaultRootContext implements RootContext with no-ops; embed it.
type DefaultRootContext struct{}

func (DefaultRootContext) OnVMStart(int) bool                { return true }
func (DefaultRootContext) OnPluginStart(int) bool            { return true }
func (DefaultRootContext) OnTick()                           {}
func (DefaultRootContext) OnQueueReady(uint32)               {}
func (DefaultRootContext) NewHTTPContext(uint32) HTTPContext { return DefaultHTTPContext{} }

// DefaultHTTPContext lets every request through; embed it and add the
// optional handlers you need.
type DefaultHTTPContext struct{}

func (DefaultHTTPContext) OnHTTPRequestHeaders(int, bool) Action { return ActionContinue }
