package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// extPackage is a DSL package stamping x-version: v on responses, signed
// with priv.
func extPackage(t *testing.T, v string, priv ed25519.PrivateKey) []byte {
	t.Helper()
	rules := "rules:\n- name: version\n  phase: response\n  actions: [{set_header: {name: x-version, value: \"" + v + "\"}}]\n"
	b, err := extpkg.Pack(extpkg.Manifest{Name: "stamp", Version: v + ".0.0", Kind: extpkg.KindDSL, ABI: dslrules.ABI}, []byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	if b, err = extpkg.Sign(b, signing.NewSigner(priv)); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMeshExtensions: packages pushed to MeshKit and named by version in
// the mesh config reach an OmniRelay over signed xDS and run there; a new
// version replaces the old with no failed request; a package signed by a
// key the proxy does not trust is NACKed (MeshKit shows why) and the
// running version keeps serving.
func TestMeshExtensions(t *testing.T) {
	dir := t.TempDir()
	meshPub, meshPriv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	extPub, extPriv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, strangerPriv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for path, k := range map[string]ed25519.PublicKey{"mesh.pub": meshPub, "ext.pub": extPub} {
		if err := signing.WritePublicKey(filepath.Join(dir, path), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := signing.WritePrivateKey(filepath.Join(dir, "mesh.key"), meshPriv); err != nil {
		t.Fatal(err)
	}
	backendAddr := okBackend(t)
	mk := startSignedMeshKit(t, dir)
	cc := apiConn(t, mk.APIAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	packages := extv1.NewPackagesClient(cc)
	for _, p := range [][]byte{extPackage(t, "1", extPriv), extPackage(t, "2", extPriv), extPackage(t, "3", strangerPriv)} {
		if _, err := packages.Push(ctx, &extv1.PushRequest{Package: p}); err != nil {
			t.Fatal(err)
		}
	}
	edge := testutil.Addr(t)
	apply := func(version string) {
		t.Helper()
		doc := fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    filters: [{ extension: { name: stamp, package: "store:stamp@%s.0.0", policy: fail_closed, deadline: 1s } }]
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters: [{ name: main, endpoints: [%s] }]
`, edge, version, backendAddr)
		if _, err := meshkitv1.NewConfigClient(cc).Apply(ctx, &meshkitv1.ApplyRequest{Filename: "mesh.yaml", Yaml: []byte(doc)}); err != nil {
			t.Fatalf("apply %s: %v", version, err)
		}
	}
	apply("1")

	// xDS is signed by MeshKit's key, packages by the extension key.
	proxytest.StartWith(t, app.Options{
		XDS: &app.XDSOptions{Address: mk.XDSAddr().String(), NodeID: "edge-ext", Cluster: "e2e", TrustRoot: filepath.Join(dir, "mesh.pub"),
			Build: "e2e", Backoff: xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}},
		ExtensionTrustRoot: filepath.Join(dir, "ext.pub"),
		AdminAddress:       testutil.Addr(t), Log: testutil.Logger(t).With("node", "edge-ext"), DrainTimeout: 2 * time.Second,
	})
	client := &http.Client{Timeout: 2 * time.Second}
	version := func() string {
		resp, err := client.Get("http://" + edge + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Sprint(resp.StatusCode)
		}
		return resp.Header.Get("x-version")
	}
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "v1 runs on the proxy", func() (bool, string) {
		v := version()
		return v == "1", v
	})
	apply("2")
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "v2 replaces v1", func() (bool, string) {
		v := version()
		if v != "1" && v != "2" {
			t.Fatalf("request failed during the switch: %s", v)
		}
		return v == "2", v
	})
	apply("3")
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "the untrusted package is NACKed", func() (bool, string) {
		px := proxyByNode(t, cc, "edge-ext")
		d := px.GetLastNack().GetDetail()
		return strings.Contains(d, "untrusted key"), d
	})
	for range 20 {
		if v := version(); v != "2" {
			t.Fatalf("after the NACK: %s, want v2 still serving", v)
		}
	}
}
