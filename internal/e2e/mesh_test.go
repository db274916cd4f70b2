package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/demo"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestMesh runs MeshKit and an OmniRelay proxy over real xDS streams (delta
// and state of the world), with signed resources, and drives it the way an
// operator does: through MeshKit's API.
func TestMesh(t *testing.T) {
	for _, mode := range []struct {
		name string
		sotw bool
	}{{"delta", false}, {"sotw", true}} {
		t.Run(mode.name, func(t *testing.T) {
			c := newMeshConfig(t)
			d := startDemo(t, c, func(o *demo.Options) { o.SotW = mode.sotw })
			cc := apiConn(t, d.MeshKit.APIAddr().String())
			cfgClient := meshkitv1.NewConfigClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			counts := spread(t, c.Web, 100)
			if counts["shop-v1-a"]+counts["shop-v1-b"] < 50 || counts["shop-v2"] == 0 {
				t.Fatalf("80/20 split through MeshKit's config: %v", counts)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			if b, err := get(client, c.Web, "/api/items", map[string]string{"x-canary": "true"}); err != nil || b != "shop-v2" {
				t.Fatalf("canary route: backend %q, %v", b, err)
			}

			t.Run("apply changes the split live", func(t *testing.T) {
				c2 := c
				c2.WeightV1, c2.WeightV2 = 0, 100
				resp, err := cfgClient.Apply(ctx, &meshkitv1.ApplyRequest{Filename: "all-v2.yaml", Yaml: c2.YAML()})
				if err != nil {
					t.Fatal(err)
				}
				testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "all traffic on shop-v2", func() (bool, string) {
					counts := spread(t, c.Web, 20)
					return counts["shop-v2"] == 20, fmt.Sprint(counts)
				})
				p := proxyByNode(t, cc, "edge-1")
				if p == nil || len(p.GetAcked()) == 0 {
					t.Fatalf("proxy directory after apply %s: %v", resp.GetVersion(), p)
				}
				if p.GetKind() != "omnirelay" || len(p.GetFilters()) == 0 {
					t.Errorf("proxy capabilities not recorded: kind %q filters %v", p.GetKind(), p.GetFilters())
				}
			})

			t.Run("bad config rejected, nothing stored", func(t *testing.T) {
				before, err := cfgClient.Get(ctx, &meshkitv1.GetConfigRequest{})
				if err != nil {
					t.Fatal(err)
				}
				bad := []byte("listeners:\n  - name: web\n    address: 127.0.0.1:1\n    protocol: http\n    virtual_hosts: [{ name: a, domains: ['*'], routes: [{ match: { path_prefix: / }, cluster: nope }] }]\n")
				_, err = cfgClient.Apply(ctx, &meshkitv1.ApplyRequest{Filename: "bad.yaml", Yaml: bad})
				if status.Code(err) != codes.InvalidArgument || !contains(err.Error(), "bad.yaml:") || !contains(err.Error(), `unknown cluster "nope"`) {
					t.Fatalf("bad apply: %v; want InvalidArgument naming bad.yaml, the position and the missing cluster", err)
				}
				after, err := cfgClient.Get(ctx, &meshkitv1.GetConfigRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if after.GetVersion() != before.GetVersion() {
					t.Fatalf("stored version changed from %s to %s after a rejected apply", before.GetVersion(), after.GetVersion())
				}
				if counts := spread(t, c.Web, 10); counts["shop-v2"] != 10 {
					t.Fatalf("traffic after a rejected apply: %v", counts)
				}
			})

			t.Run("registered endpoint joins EDS and leaves on lease expiry", func(t *testing.T) {
				reg := meshkitv1.NewRegistryClient(cc)
				_, err := reg.Register(ctx, &meshkitv1.RegisterRequest{Endpoint: &meshkitv1.Endpoint{
					Service: "shop-v2", Address: c.V2b, Ttl: durationpb.New(2 * time.Second),
				}})
				if err != nil {
					t.Fatal(err)
				}
				testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "shop-v2-b receives traffic", func() (bool, string) {
					counts := spread(t, c.Web, 20)
					return counts["shop-v2-b"] > 0, fmt.Sprint(counts)
				})
				// No heartbeat: the lease runs out, the leader deletes it,
				// and the endpoint leaves EDS.
				testutil.Eventually(t, 15*time.Second, 25*time.Millisecond, "shop-v2-b gone after its lease", func() (bool, string) {
					counts := spread(t, c.Web, 30)
					return counts["shop-v2-b"] == 0, fmt.Sprint(counts)
				})
			})
		})
	}
}

// TestMeshSignatureRejected: a proxy trusting another key NACKs MeshKit's
// resources, never applies them, and MeshKit shows the NACK.
func TestMeshSignatureRejected(t *testing.T) {
	c := newMeshConfig(t)
	d := startDemo(t, c, nil)
	other := t.TempDir() + "/other.pem"
	if err := writeOtherKey(other); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, d.MeshKit.XDSAddr().String(), "wrong-root", other, t.TempDir(), testutil.Addr(t), false)
	cc := apiConn(t, d.MeshKit.APIAddr().String())
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "MeshKit records the NACK", func() (bool, string) {
		pr := proxyByNode(t, cc, "wrong-root")
		if pr == nil {
			return false, "not connected"
		}
		return pr.GetLastNack() != nil && contains(pr.GetLastNack().GetDetail(), "signing"), fmt.Sprint(pr.GetLastNack())
	})
	if v := p.Runtime.Current(); v != nil {
		t.Fatalf("a proxy with the wrong trust root applied version %s", v.ID)
	}
	resp, err := http.Get("http://" + p.Admin.Addr().String() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready of a proxy with no accepted config: %d %s", resp.StatusCode, body)
	}
}
