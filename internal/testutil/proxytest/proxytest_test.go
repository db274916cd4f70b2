package proxytest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

func config(listen, backend string) string {
	return fmt.Sprintf(`
listeners:
  - name: web
    address: %s
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: app }] }]
clusters:
  - { name: app, endpoints: [%s] }
`, listen, backend)
}

// A proxy started from a YAML string is ready, routes to a real backend,
// and follows a rewritten config.
func TestStartRewrite(t *testing.T) {
	a, b := testutil.StartBackend(t, "a", nil), testutil.StartBackend(t, "b", nil)
	web := testutil.Addr(t)
	p := proxytest.Start(t, config(web, a.Addr))
	proxytest.WaitReady(t, p.Proxy)
	if _, body := testutil.Get(t, nil, "http://"+web+"/"); body != "a" {
		t.Fatalf("through the proxy: %q, want a", body)
	}
	p.Rewrite(t, config(web, b.Addr))
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "traffic on b", func() (bool, string) {
		code, body := testutil.Fetch("http://" + web + "/")
		return code == 200 && body == "b", fmt.Sprint(code, " ", body)
	})
	if n := proxytest.Counter(t, p.Proxy, "omnirelay_config_reloads_total"); n < 1 {
		t.Fatalf("config reloads counted %v, want at least 1", n)
	}
}
