package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const basicConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    protocol: http
    virtual_hosts:
      - name: shop
        domains: ["shop.example.com", "*"]
        routes:
          - match: { path_prefix: /api/, headers: { x-canary: "true" } }
            cluster: v2
          - match: { path_prefix: / }
            weighted_clusters: [{ cluster: v1, weight: 80 }, { cluster: v2, weight: 20 }]
            timeout: 5s
            retry: { attempts: 3, on: [connect-failure, reset, 5xx], per_try_timeout: 1s }
clusters:
  - name: v1
    lb: least_request
    endpoints: [{{b1}}, {{b2}}]
  - name: v2
    endpoints: [{{b3}}]
`

func TestProxyRoutesAndSplits(t *testing.T) {
	b1 := startBackend(t, "v1a", nil)
	b2 := startBackend(t, "v1b", nil)
	b3 := startBackend(t, "v2", nil)
	web := testutil.Addr(t)
	startProxy(t, basicConfig, map[string]string{"web": web, "b1": b1.Addr, "b2": b2.Addr, "b3": b3.Addr})
	c := &http.Client{Timeout: 5 * time.Second}

	resp, body := testutil.Get(t, c, "http://"+web+"/api/x", "x-canary", "true")
	if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "v2" {
		t.Fatalf("canary: status %d backend %q body %q", resp.StatusCode, resp.Header.Get("x-backend"), body)
	}
	if !strings.Contains(body, "GET /api/x HTTP/1.1") {
		t.Fatalf("canary body %q", body)
	}

	counts := map[string]int{}
	const n = 1000
	for i := 0; i < n; i++ {
		resp, _ := testutil.Get(t, c, "http://"+web+"/")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		counts[resp.Header.Get("x-backend")]++
	}
	v1 := counts["v1a"] + counts["v1b"]
	if v1 < 720 || v1 > 880 {
		t.Fatalf("80/20 split off: %v", counts)
	}
	if counts["v1a"] == 0 || counts["v1b"] == 0 {
		t.Fatalf("least_request never used one host: %v", counts)
	}

	// h2c prior knowledge downstream -> h2c upstream (protocol auto).
	resp, body = testutil.Get(t, testutil.H2CClient(), "http://"+web+"/api/h2", "x-canary", "true")
	if resp.StatusCode != 200 || !strings.Contains(body, "HTTP/2.0") {
		t.Fatalf("h2c: status %d body %q", resp.StatusCode, body)
	}
}
