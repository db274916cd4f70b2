//go:build wasip1

package proxywasm

import "unsafe"

// The SDK's dispatcher state. One Wasm instance runs one host call at a
// time, and this is the instance's only dispatcher. Contexts live in small
// slices searched linearly: an instance holds a root and a few streams (one
// in OmniRelay), and Go maps cost microseconds per insert and delete in
// Wasm.
var (
	newRoot   func(contextID uint32) RootContext
	roots     []rootEntry
	streams   []streamEntry
	callbacks []callbackEntry
	allocs    [][]byte
	currentID uint32
)

type rootEntry struct {
	id  uint32
	ctx RootContext
}

type streamEntry struct {
	id  uint32
	ctx HTTPContext
}

type callbackEntry struct {
	token  uint32
	caller uint32 // the context that dispatched the call
	fn     func(numHeaders, bodySize, numTrailers int)
}

func findRoot(id uint32) (RootContext, bool) {
	for _, r := range roots {
		if r.id == id {
			return r.ctx, true
		}
	}
	return nil, false
}

func findStream(id uint32) (HTTPContext, bool) {
	for _, s := range streams {
		if s.id == id {
			return s.ctx, true
		}
	}
	return nil, false
}

func deleteContext(id uint32) {
	if deleteTCPContext(id) { // network.go
		return
	}
	for i, s := range streams {
		if s.id == id {
			last := len(streams) - 1
			streams[i] = streams[last]
			streams[last] = streamEntry{}
			streams = streams[:last]
			return
		}
	}
	for i, r := range roots {
		if r.id == id {
			roots = append(roots[:i], roots[i+1:]...)
			return
		}
	}
}

// SetNewRootContext registers the plugin. Call it from init.
func SetNewRootContext(f func(contextID uint32) RootContext) { newRoot = f }

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion021() {}

// proxyOnMemoryAllocate gives the host memory to return data in. The buffer
// is kept reachable in allocs until the host call that asked for it hands it
// to the SDK (takeAlloc), so the collector cannot free it in between.
//
//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	var b []byte
	if copiedOut {
		// The caller copies the value out before the next host call: one
		// buffer serves them all, and the guest's collector sees no
		// garbage per header read.
		copiedOut = false
		if cap(scratch) < int(size) {
			scratch = make([]byte, size)
		}
		b = scratch[:size]
	} else {
		b = make([]byte, size)
	}
	allocs = append(allocs, b)
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

// copiedOut, set just before a host call, tells proxyOnMemoryAllocate that
// the value the call returns is copied out at once (a header value, a
// header map), so it may land in scratch.
var (
	copiedOut bool
	scratch   []byte
)

// takeAlloc returns the Go slice behind a host-returned (ptr, size).
func takeAlloc(ptr, size uint32) []byte {
	defer func() { allocs = allocs[:0] }()
	if size == 0 {
		return nil
	}
	for _, b := range allocs {
		if uint32(uintptr(unsafe.Pointer(&b[0]))) == ptr && int(size) <= len(b) {
			return b[:size:size]
		}
	}
	// A host following the ABI returns data only in memory it obtained
	// from proxy_on_memory_allocate.
	return nil
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	if parentID == 0 {
		var r RootContext = DefaultRootContext{}
		if newRoot != nil {
			r = newRoot(contextID)
		}
		roots = append(roots, rootEntry{contextID, r})
		return
	}
	root, ok := findRoot(parentID)
	if !ok {
		return
	}
	if newTCPContext(contextID, root) { // network.go
		return
	}
	streams = append(streams, streamEntry{contextID, root.NewHTTPContext(contextID)})
}

// Bits OR-ed into omnirelay_on_stream_start's result above the action,
// telling OmniRelay's host which later callbacks the stream's context has.
const (
	wantsResponseHeaders = 1 << 8
	wantsResponseBody    = 1 << 9
	wantsRequestBody     = 1 << 10
	wantsEnd             = 1 << 11 // the context is alive: call omnirelay_on_stream_end
	wantsRespTrailers    = 1 << 12
	wantsReqTrailers     = 1 << 13
)

// omnirelayOnStreamStart is proxy_on_context_create followed by
// proxy_on_request_headers in one call, for OmniRelay's host (each guest
// call has a fixed cost there); other hosts use the standard exports. Its
// result is the action plus the wants* bits; a context that needs nothing
// more is never registered and the host makes no further call for the
// stream.
//
//go:wasmexport omnirelay_on_stream_start
func omnirelayOnStreamStart(id, rootID, n, eos uint32) uint32 {
	root, ok := findRoot(rootID)
	if !ok {
		return uint32(ActionContinue)
	}
	h := root.NewHTTPContext(id)
	currentID = id
	act := uint32(h.OnHTTPRequestHeaders(int(n), eos != 0))
	bits := wantsOf(h)
	if bits != 0 || act != uint32(ActionContinue) || len(callbacks) > 0 {
		streams = append(streams, streamEntry{id, h})
		return act | bits | wantsEnd
	}
	return act
}

// wantsCache holds the wants bits of the last HTTP context type seen: a
// plugin's streams are nearly always of one type, and the interface
// assertions that find the bits cost a Go guest more than the rest of a
// stream's start.
var wantsCache struct {
	typ  unsafe.Pointer
	bits uint32
}

// wantsOf returns the wants* bits of h's later callbacks; wantsEnd stands
// for an HTTPStreamDoneHandler.
func wantsOf(h HTTPContext) uint32 {
	e := any(h)
	typ := (*[2]unsafe.Pointer)(unsafe.Pointer(&e))[0] // the dynamic type: the runtime's eface layout
	if typ != nil && typ == wantsCache.typ {
		return wantsCache.bits
	}
	var bits uint32
	if _, ok := h.(HTTPResponseHeadersHandler); ok {
		bits |= wantsResponseHeaders
	}
	if _, ok := h.(HTTPResponseBodyHandler); ok {
		bits |= wantsResponseBody
	}
	if _, ok := h.(HTTPRequestBodyHandler); ok {
		bits |= wantsRequestBody
	}
	if _, ok := h.(HTTPResponseTrailersHandler); ok {
		bits |= wantsRespTrailers
	}
	if _, ok := h.(HTTPRequestTrailersHandler); ok {
		bits |= wantsReqTrailers
	}
	if _, ok := h.(HTTPStreamDoneHandler); ok {
		bits |= wantsEnd
	}
	wantsCache.typ, wantsCache.bits = typ, bits
	return bits
}

// omnirelayOnStreamEnd is proxy_on_done, proxy_on_log and proxy_on_delete.
//
//go:wasmexport omnirelay_on_stream_end
func omnirelayOnStreamEnd(id uint32) {
	proxyOnDone(id)
	proxyOnLog(id)
	proxyOnDelete(id)
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, size uint32) uint32 {
	currentID = rootID
	if r, ok := findRoot(rootID); ok {
		return b2u(r.OnVMStart(int(size)))
	}
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, size uint32) uint32 {
	currentID = rootID
	if r, ok := findRoot(rootID); ok {
		return b2u(r.OnPluginStart(int(size)))
	}
	return 1
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	currentID = rootID
	if r, ok := findRoot(rootID); ok {
		r.OnTick()
	}
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(rootID, queueID uint32) {
	currentID = rootID
	if r, ok := findRoot(rootID); ok {
		r.OnQueueReady(queueID)
	}
}

func stream(id uint32) HTTPContext {
	currentID = id
	if h, ok := findStream(id); ok {
		return h
	}
	return DefaultHTTPContext{}
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(id, n, eos uint32) uint32 {
	return uint32(stream(id).OnHTTPRequestHeaders(int(n), eos != 0))
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(id, size, eos uint32) uint32 {
	if h, ok := stream(id).(HTTPRequestBodyHandler); ok {
		return uint32(h.OnHTTPRequestBody(int(size), eos != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(id, n uint32) uint32 {
	if h, ok := stream(id).(HTTPRequestTrailersHandler); ok {
		return uint32(h.OnHTTPRequestTrailers(int(n)))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(id, n, eos uint32) uint32 {
	if h, ok := stream(id).(HTTPResponseHeadersHandler); ok {
		return uint32(h.OnHTTPResponseHeaders(int(n), eos != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(id, size, eos uint32) uint32 {
	if h, ok := stream(id).(HTTPResponseBodyHandler); ok {
		return uint32(h.OnHTTPResponseBody(int(size), eos != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(id, n uint32) uint32 {
	if h, ok := stream(id).(HTTPResponseTrailersHandler); ok {
		return uint32(h.OnHTTPResponseTrailers(int(n)))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(id, token, numHeaders, bodySize, numTrailers uint32) {
	// The host calls the root context (id), as the ABI has it; the callback
	// runs on the context that dispatched the call, made effective first so
	// that it can resume or answer its stream.
	currentID = id
	for i, c := range callbacks {
		if c.token == token {
			callbacks = append(callbacks[:i], callbacks[i+1:]...)
			if c.caller != id {
				proxySetEffectiveContext(c.caller)
				currentID = c.caller
			}
			c.fn(int(numHeaders), int(bodySize), int(numTrailers))
			return
		}
	}
}

//go:wasmexport proxy_on_log
func proxyOnLog(id uint32) {
	h, _ := findStream(id)
	if h, ok := h.(HTTPStreamDoneHandler); ok {
		currentID = id
		h.OnHTTPStreamDone()
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(id uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(id uint32) { deleteContext(id) }

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
