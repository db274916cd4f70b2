package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// backend is a real HTTP/1.1 + h2c server on loopback.
type backend = testutil.Backend

// startBackend starts a backend; with h nil it answers
// "NAME METHOD URI PROTO", which tests read to see what reached it.
func startBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.RequestURI(), r.Proto)
		}
	}
	return testutil.StartBackend(t, name, h)
}

// proxy is OmniRelay started on a config template.
type proxy struct {
	*proxytest.Proxy
}

// startProxy starts OmniRelay on cfg with its {{name}} placeholders
// replaced from vars; {{admin}} defaults to a free address.
func startProxy(t testing.TB, cfg string, vars map[string]string) *proxy {
	t.Helper()
	return startProxyOpts(t, cfg, vars, nil)
}

// startProxyOpts is startProxy with Options adjusted by the caller (a test
// that must prove SIGHUP works needs polling out of the way).
func startProxyOpts(t testing.TB, cfg string, vars map[string]string, adjust func(*app.Options)) *proxy {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["admin"]; !ok {
		vars["admin"] = testutil.Addr(t)
	}
	var mods []func(*app.Options)
	if adjust != nil {
		mods = append(mods, adjust)
	}
	return &proxy{Proxy: proxytest.Start(t, testutil.Render(cfg, vars), mods...)}
}

// writeConfig renders cfg with vars and writes it to path atomically.
func writeConfig(t testing.TB, path, cfg string, vars map[string]string) {
	t.Helper()
	testutil.WriteFile(t, path, []byte(testutil.Render(cfg, vars)))
}
