//go:build wasip1

// Command noop is the benchmarks' baseline plugin: a stream context that
// does nothing, so that a request through it costs what the host and the
// Go guest runtime charge per call, and nothing of a plugin's own work.
// bench_empty is an export with no body at all, called directly by the
// benchmarks to price one guest call through wazero.
package main

import "github.com/omnirelay/omnirelay/sdk/proxywasm"

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return root{} })
}

func main() {}

type root struct{ proxywasm.DefaultRootContext }

func (root) NewHTTPContext(uint32) proxywasm.HTTPContext { return proxywasm.DefaultHTTPContext{} }

//go:wasmexport bench_empty
func benchEmpty() {}
