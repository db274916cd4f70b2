//go:build wasip1

// Command grpc-trailers is a Proxy-Wasm plugin that works on trailers: it
// copies a gRPC response's grpc-status into an x-wasm-grpc-status trailer
// (and counts non-OK statuses in the grpc_errors metric), and marks request
// trailers by adding x-wasm-request-trailers with how many it saw.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o grpc-trailers.wasm .
package main

import (
	"strconv"

	"github.com/omnirelay/omnirelay/sdk/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	errors proxywasm.Counter
}

func (r *root) OnPluginStart(int) bool {
	r.errors = proxywasm.DefineCounterMetric("grpc_errors")
	return true
}

func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext { return &stream{root: r} }

type stream struct {
	proxywasm.DefaultHTTPContext
	root *root
}

func (s *stream) OnHTTPResponseTrailers(int) proxywasm.Action {
	status, err := proxywasm.GetHTTPResponseTrailer("grpc-status")
	if err != nil {
		status = "none"
	}
	if status != "0" {
		s.root.errors.Increment(1)
	}
	if err := proxywasm.AddHTTPResponseTrailer("x-wasm-grpc-status", status); err != nil {
		proxywasm.LogError("grpc-trailers: add trailer: " + err.Error())
	}
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPRequestTrailers(n int) proxywasm.Action {
	if err := proxywasm.AddHTTPRequestTrailer("x-wasm-request-trailers", strconv.Itoa(n)); err != nil {
		proxywasm.LogError("grpc-trailers: add request trailer: " + err.Error())
	}
	return proxywasm.ActionContinue
}
