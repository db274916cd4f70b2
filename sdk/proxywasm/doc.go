// Package proxywasm is OmniRelay's guest SDK for Proxy-Wasm plugins (ABI
// v0.2.1) written in standard Go:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// A plugin registers its root context from an init function and leaves main
// empty (a c-shared module runs init from _initialize; main never runs):
//
//	func init() {
//		proxywasm.SetNewRootContext(func(id uint32) proxywasm.RootContext { return &root{} })
//	}
//	func main() {}
//
// The root context receives the VM and plugin configuration, ticks and queue
// notifications, and creates an HTTP context per stream. HTTP contexts see
// request and response headers and bodies and may answer a stream with
// SendHTTPResponse. Everything else (headers, properties, shared data,
// queues, metrics, call-outs, logging) is a function of this package calling
// the host.
//
// The SDK exists because the upstream Go SDK targets TinyGo and is not
// available here; this one relies only on //go:wasmimport and
// //go:wasmexport (Go 1.24+). It keeps the plugin's contexts in
// package-level maps: a Wasm instance is single-threaded and this package
// is its only dispatcher, so there is exactly one of each per instance.
// Outside GOOS=wasip1 only this documentation and the header-map codec
// compile.
package proxywasm
