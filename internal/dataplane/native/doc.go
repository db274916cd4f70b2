// Package native is the runtime for native extension plugins: shared
// objects written in C (or anything with a C ABI) against omnirelay_native.h,
// loaded with dlopen through github.com/ebitengine/purego so that the proxy
// stays a cgo-free build.
//
// Native code is trusted code: it runs in the proxy's address space and a
// call into it cannot be interrupted. The watchdog still times every call;
// one that comes back after its deadline is a timeout (the extension's
// policy applies to the request), and the plugin instance that overran is
// quarantined: it is never called again, and a fresh instance (a new init)
// serves the next stream.
//
// The runtime exists only in builds with the "native" build tag; in the
// default build NewRuntime returns nil and the proxy does not advertise the
// native runtime in its capabilities.
package native

// ABI is the native plugin ABI version this runtime implements, as
// manifests name it (OMNIRELAY_NATIVE_ABI in omnirelay_native.h).
const ABI = "omnirelay-native/1"
