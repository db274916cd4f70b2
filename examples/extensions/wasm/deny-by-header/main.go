//go:build wasip1

// Command deny-by-header is a Proxy-Wasm plugin that answers 403 to requests
// carrying a header. Its configuration is "name" (deny when present) or
// "name: value" (deny when equal).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o deny-by-header.wasm .
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
	name, value string
	exact       bool
}

func (r *root) OnPluginStart(int) bool {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return false
	}
	name, value, exact := strings.Cut(strings.TrimSpace(string(cfg)), ":")
	r.name, r.value, r.exact = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value), exact
	if r.name == "" {
		proxywasm.LogError("deny-by-header: configuration names no header")
		return false
	}
	return true
}

func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext { return &stream{root: r} }

type stream struct {
	proxywasm.DefaultHTTPContext
	root *root
}

func (s *stream) OnHTTPRequestHeaders(int, bool) proxywasm.Action {
	v, err := proxywasm.GetHTTPRequestHeader(s.root.name)
	if err != nil || (s.root.exact && v != s.root.value) {
		return proxywasm.ActionContinue
	}
	_ = proxywasm.SendHTTPResponse(403, [][2]string{{"x-denied-by", "deny-by-header"}}, []byte("denied by deny-by-header\n"), -1)
	return proxywasm.ActionPause
}
