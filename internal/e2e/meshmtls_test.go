package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// TestMeshMTLSWithMeshKit: two proxies get SVIDs from a running MeshKit
// identity service (join tokens, 2 s lifetimes so the agents renew every
// second or so) and talk mTLS, proxy A's cluster to proxy B's STRICT
// listener, while clients send requests continuously across several
// rotations: no request may fail, and B sees A's SPIFFE ID.
func TestMeshMTLSWithMeshKit(t *testing.T) {
	const td = "omnirelay.test"
	webID := "spiffe://" + td + "/ns/shop/sa/web"
	apiID := "spiffe://" + td + "/ns/shop/sa/api"

	ids := startIdentitySvc(t, td, 2*time.Second)
	token := func(node, id string) string { return ids.token(t, node, id) }
	backend := testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("x-peer"))
	}))

	aAddr, bAddr := testutil.Addr(t), testutil.Addr(t)
	start := func(cfg string, id *app.IdentityOptions) *app.Proxy {
		return proxytest.Start(t, cfg, func(o *app.Options) { o.DrainTimeout, o.Identity = time.Second, id }).Proxy
	}
	b := start(`
listeners:
  - name: in
    address: `+bAddr+`
    mtls: { mode: STRICT, trust_domain: `+td+`, allowed_ids: ["`+webID+`"] }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: app
            request_headers_add: { x-peer: "%DOWNSTREAM_PEER_URI_SAN%" }
clusters:
  - { name: app, endpoints: [`+backend+`] }
`, &app.IdentityOptions{Address: ids.addr, JoinToken: token("b", apiID), CAFile: ids.caFile, NodeID: "b"})
	a := start(`
listeners:
  - name: out
    address: `+aAddr+`
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: b
clusters:
  - name: b
    endpoints: [`+bAddr+`]
    mtls: { identity: "`+apiID+`" }
    max_requests_per_connection: 5
`, &app.IdentityOptions{Address: ids.addr, JoinToken: token("a", webID), CAFile: ids.caFile, NodeID: "a"})

	client := &http.Client{Timeout: 5 * time.Second}
	call := func() error {
		resp, err := client.Get("http://" + aAddr + "/x")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != webID {
			return fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return nil
	}
	// Both agents first need their SVIDs (the listener and the cluster warm
	// until then).
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "mTLS up", func() (bool, string) {
		err := call()
		return err == nil, fmt.Sprint(err)
	})

	serial := func(p *app.Proxy) string {
		return p.Runtime.Secrets().Ref(secrets.DefaultCertName).Load().Cert.Leaf.SerialNumber.String()
	}
	aFirst, bFirst := serial(a), serial(b)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(3500 * time.Millisecond) // several 2 s SVIDs renewed at half-life
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := call(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across rotations; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if serial(a) == aFirst || serial(b) == bFirst {
		t.Fatal("no SVID rotated during the load")
	}
	if ok.Load() < 50 {
		t.Fatalf("only %d requests", ok.Load())
	}
	if n := proxytest.Counter(t, b, "omnirelay_listener_connections_total"); n < 10 {
		t.Fatalf("B accepted %v mTLS connections; too few to have used rotated certificates", n)
	}
	t.Logf("%d requests through A->B mTLS with MeshKit SVIDs rotating every ~1s, 0 failures", ok.Load())
}
