package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

func writeOtherKey(path string) error {
	pk, _, err := signing.GenerateKey()
	if err != nil {
		return err
	}
	return signing.WritePublicKey(path, pk)
}

// startProxy starts an OmniRelay in xDS mode against addr.
func startProxy(t *testing.T, addr, node, trustRoot, lkgDir, admin string, sotw bool) *app.Proxy {
	t.Helper()
	p := proxytest.StartWith(t, app.Options{
		XDS: &app.XDSOptions{
			Address: addr, NodeID: node, Cluster: "e2e", LKGDir: lkgDir, TrustRoot: trustRoot, SotW: sotw,
			Build: "e2e", LKGAfter: 500 * time.Millisecond,
			Backoff: xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		},
		AdminAddress: admin, Log: testutil.Logger(t).With("node", node), DrainTimeout: 2 * time.Second,
	})
	return p
}

// TestMeshLastKnownGood: a proxy that ran MeshKit's signed config restarts
// while MeshKit is down, serves from its last-known-good file, says so on
// /ready, and takes MeshKit's config again when MeshKit is back.
func TestMeshLastKnownGood(t *testing.T) {
	c := newMeshConfig(t)
	d := startDemo(t, c, nil)
	if counts := spread(t, c.Web, 20); len(counts) == 0 {
		t.Fatal("no traffic through the demo proxy")
	}
	lkgDir := d.Dir + "/lkg"
	trust := d.Dir + "/trust-root.pem"
	xdsAddr := d.MeshKit.XDSAddr().String()

	// Stop the demo's proxy and MeshKit; keep the backends (and the LKG).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Proxy.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.MeshKit.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	p := startProxy(t, xdsAddr, "edge-1", trust, lkgDir, testutil.Addr(t), false)
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "proxy serves from last-known-good", func() (bool, string) {
		v := p.Runtime.Current()
		return v != nil, "no config"
	})
	counts := spread(t, c.Web, 20)
	if counts["shop-v1-a"]+counts["shop-v1-b"]+counts["shop-v2"] != 20 {
		t.Fatalf("traffic from last-known-good: %v", counts)
	}
	resp, err := http.Get("http://" + p.Admin.Addr().String() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !contains(string(body), "last-known-good") {
		t.Fatalf("/ready from LKG: %d %q; want 200 saying last-known-good", resp.StatusCode, body)
	}
	metrics := httpGet(t, "http://"+p.Admin.Addr().String()+"/metrics")
	if !contains(metrics, `omnirelay_config_source{source="lkg"} 1`) {
		t.Errorf("metrics do not say the config comes from LKG:\n%s", grepLines(metrics, "omnirelay_config_source"))
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	out := ""
	for _, l := range strings.Split(s, "\n") {
		if contains(l, sub) {
			out += l + "\n"
		}
	}
	return fmt.Sprint(out)
}
