//go:build wasip1

// Command http-callout is a Proxy-Wasm plugin that asks an authorization
// service about every request: it sends GET <path> to the upstream with the
// request's authorization header, lets the request through (adding
// x-auth-user from the answer's header of that name) on 200, and answers 403
// otherwise. Configuration: "upstream: <cluster>" and "path: /check" lines.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o http-callout.wasm .
package main

import (
	"strings"

	"github.com/omnirelay/omnirelay/sdk/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{path: "/check"} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	upstream, path string
}

func (r *root) OnPluginStart(int) bool {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "upstream":
			r.upstream = strings.TrimSpace(v)
		case "path":
			r.path = strings.TrimSpace(v)
		}
	}
	if r.upstream == "" {
		proxywasm.LogError("http-callout: configuration names no upstream")
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
	hs := [][2]string{{":method", "GET"}, {":path", s.root.path}, {":authority", s.root.upstream}}
	if auth, err := proxywasm.GetHTTPRequestHeader("authorization"); err == nil {
		hs = append(hs, [2]string{"authorization", auth})
	}
	if _, err := proxywasm.DispatchHTTPCall(s.root.upstream, hs, nil, nil, 1000, s.onAnswer); err != nil {
		proxywasm.LogError("http-callout: dispatch: " + err.Error())
		_ = proxywasm.SendHTTPResponse(503, nil, []byte("authorization service unavailable\n"), -1)
		return proxywasm.ActionPause
	}
	return proxywasm.ActionPause
}

func (s *stream) onAnswer(numHeaders, _, _ int) {
	hs, _ := proxywasm.GetHTTPCallResponseHeaders()
	status, user := "", ""
	for _, h := range hs {
		switch h[0] {
		case ":status":
			status = h[1]
		case "x-auth-user":
			user = h[1]
		}
	}
	if status != "200" {
		_ = proxywasm.SendHTTPResponse(403, nil, []byte("denied by the authorization service\n"), -1)
		return
	}
	if user != "" {
		_ = proxywasm.ReplaceHTTPRequestHeader("x-auth-user", user)
	}
	_ = proxywasm.ResumeHTTPRequest()
}
