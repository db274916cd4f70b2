//go:build wasip1

package proxywasm

import "unsafe"

// The SDK's dispatcher state. One Wasm instance runs one goroutine of host
// calls at a time, and this is the instance's only dispatcher.
var (
	newRoot    func(contextID uint32) RootContext
	roots      = map[uint32]RootContext{}
	streams    = map[uint32]HTTPContext{}
	streamRoot = map[uint32]uint32{}
	callbacks  = map[uint32]func(numHeaders, bodySize, numTrailers int){}
	allocs     [][]byte
	currentID  uint32
)

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
	b := make([]byte, size)
	allocs = append(allocs, b)
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

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
		if newRoot == nil {
			roots[contextID] = DefaultRootContext{}
			return
		}
		roots[contextID] = newRoot(contextID)
		return
	}
	root, ok := roots[parentID]
	if !ok {
		return
	}
	streams[contextID] = root.NewHTTPContext(contextID)
	streamRoot[contextID] = parentID
}

// omnirelayOnStreamStart is proxy_on_context_create followed by
// proxy_on_request_headers in one call: OmniRelay's host uses it when
// present (each guest call has a fixed cost there); other hosts ignore it.
//
//go:wasmexport omnirelay_on_stream_start
func omnirelayOnStreamStart(id, rootID, n, eos uint32) uint32 {
	proxyOnContextCreate(id, rootID)
	return proxyOnRequestHeaders(id, n, eos)
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
	if r, ok := roots[rootID]; ok {
		return b2u(r.OnVMStart(int(size)))
	}
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, size uint32) uint32 {
	currentID = rootID
	if r, ok := roots[rootID]; ok {
		return b2u(r.OnPluginStart(int(size)))
	}
	return 1
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	currentID = rootID
	if r, ok := roots[rootID]; ok {
		r.OnTick()
	}
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(rootID, queueID uint32) {
	currentID = rootID
	if r, ok := roots[rootID]; ok {
		r.OnQueueReady(queueID)
	}
}

func stream(id uint32) HTTPContext {
	currentID = id
	if h, ok := streams[id]; ok {
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
	return uint32(stream(id).OnHTTPRequestBody(int(size), eos != 0))
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(id, n uint32) uint32 {
	return uint32(stream(id).OnHTTPRequestTrailers(int(n)))
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(id, n, eos uint32) uint32 {
	return uint32(stream(id).OnHTTPResponseHeaders(int(n), eos != 0))
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(id, size, eos uint32) uint32 {
	return uint32(stream(id).OnHTTPResponseBody(int(size), eos != 0))
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(id, n uint32) uint32 {
	return uint32(stream(id).OnHTTPResponseTrailers(int(n)))
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(id, token, numHeaders, bodySize, numTrailers uint32) {
	currentID = id
	cb, ok := callbacks[token]
	if !ok {
		return
	}
	delete(callbacks, token)
	cb(int(numHeaders), int(bodySize), int(numTrailers))
}

//go:wasmexport proxy_on_log
func proxyOnLog(id uint32) {
	if h, ok := streams[id]; ok {
		currentID = id
		h.OnHTTPStreamDone()
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(id uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(id uint32) {
	delete(streams, id)
	delete(streamRoot, id)
	delete(roots, id)
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
