//go:build wasip1

// Command add-header is a Proxy-Wasm plugin that adds the headers named in
// its configuration to every request, one "name: value" per line, and counts
// the requests it saw in the add_header_requests metric.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o add-header.wasm .
package main

import (
	"strings"

	"github.com/omnirelay/omnirelay/sdk/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	headers  [][2]string
	requests proxywasm.Counter
}

func (r *root) OnPluginStart(int) bool {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogError("add-header: read configuration: " + err.Error())
		return false
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			proxywasm.LogError("add-header: configuration line " + line + " is not \"name: value\"")
			return false
		}
		r.headers = append(r.headers, [2]string{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)})
	}
	if len(r.headers) == 0 {
		proxywasm.LogError("add-header: configuration names no header")
		return false
	}
	r.requests = proxywasm.DefineCounterMetric("add_header_requests")
	return true
}

func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext { return &stream{root: r} }

type stream struct {
	proxywasm.DefaultHTTPContext
	root *root
}

func (s *stream) OnHTTPRequestHeaders(int, bool) proxywasm.Action {
	for _, h := range s.root.headers {
		if err := proxywasm.AddHTTPRequestHeader(h[0], h[1]); err != nil {
			proxywasm.LogError("add-header: " + err.Error())
		}
	}
	s.root.requests.Increment(1)
	return proxywasm.ActionContinue
}
