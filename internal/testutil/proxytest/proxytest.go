// Package proxytest starts an OmniRelay data plane for a test: from a YAML
// string in file mode, or from app.Options (xDS mode), shut down when the
// test ends. It imports the data plane only; see package testutil for the
// plane rule.
package proxytest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Proxy is a running proxy started by Start.
type Proxy struct {
	*app.Proxy
	// ConfigPath is the config file the proxy follows; Rewrite changes it.
	ConfigPath string
}

// Start writes yaml to a config file in a temporary directory and starts a
// proxy on it with what tests want: the admin server on 127.0.0.1:0 (the
// config's admin address is overridden; read it from Admin.Addr), a 5 s
// drain, the file polled every 50 ms, logs through testutil.Logger. mod,
// when given, adjusts the options before the start. The proxy is shut down
// when the test ends. A config that does not start fails the test.
func Start(t testing.TB, yaml string, mod ...func(*app.Options)) *Proxy {
	t.Helper()
	return StartIn(t, t.TempDir(), yaml, mod...)
}

// StartIn is Start with the config written to dir/config.yaml, so that
// relative paths in it (extension packages, certificates) resolve against
// dir.
func StartIn(t testing.TB, dir, yaml string, mod ...func(*app.Options)) *Proxy {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(t, path, []byte(yaml))
	opt := app.Options{ConfigPath: path, AdminAddress: "127.0.0.1:0", DrainTimeout: 5 * time.Second,
		PollInterval: 50 * time.Millisecond, Log: testutil.Logger(t)}
	for _, m := range mod {
		m(&opt)
	}
	p, err := app.Start(opt)
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	testutil.ShutdownAtCleanup(t, p)
	return &Proxy{Proxy: p, ConfigPath: opt.ConfigPath}
}

// StartWith starts a proxy from opt as given (a nil Log becomes
// testutil.Logger), for xDS mode and other shapes Start does not cover,
// and shuts it down when the test ends.
func StartWith(t testing.TB, opt app.Options) *app.Proxy {
	t.Helper()
	if opt.Log == nil {
		opt.Log = testutil.Logger(t)
	}
	p, err := app.Start(opt)
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	testutil.ShutdownAtCleanup(t, p)
	return p
}

// Rewrite replaces the config file atomically; the proxy picks it up at its
// next poll.
func (p *Proxy) Rewrite(t testing.TB, yaml string) {
	t.Helper()
	testutil.WriteFile(t, p.ConfigPath, []byte(yaml))
}

// AdminURL is the admin server's URL for path ("/ready", "/metrics").
func AdminURL(p *app.Proxy, path string) string {
	return "http://" + p.Admin.Addr().String() + path
}

// AdminURL is the admin server's URL for path.
func (p *Proxy) AdminURL(path string) string { return AdminURL(p.Proxy, path) }

// WaitReady waits up to 10 s for the proxy's /ready to answer 200.
func WaitReady(t testing.TB, p *app.Proxy) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "proxy ready", func() (bool, string) {
		code, body := testutil.Fetch(AdminURL(p, "/ready"))
		return code == 200, fmt.Sprintf("/ready: %d %s", code, body)
	})
}

// Counter sums the samples of the counter metric name in p's registry.
func Counter(t testing.TB, p *app.Proxy, name string) float64 {
	t.Helper()
	mfs, err := p.Runtime.Stats().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
