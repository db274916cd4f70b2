package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// A canary by proxies is not translatable as is; resolved for a proxy, it
// is a plain extension of the version that proxy runs.
func TestExtensionCanaryByProxies(t *testing.T) {
	doc := "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ extension: { name: x, package: \"store:x@2\", config: new, " +
		"canary: { percent: 50, by: proxies, previous_package: \"store:x@1\" } } }], virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n" + backends
	c, err := config.Parse("mesh.yaml", []byte(doc), config.ServedByMeshKit())
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Packages: func(name, version string) ([]byte, error) { return []byte(name + "@" + version), nil }}
	if _, err := TranslateWith(c, opts); err == nil || !strings.Contains(err.Error(), "canary by proxies is resolved by MeshKit") {
		t.Fatalf("unresolved canary by proxies: error %v", err)
	}
	tests := []struct {
		name   string
		bucket uint32
		want   string
	}{
		{name: "in", bucket: 10, want: "x@2"},
		{name: "out", bucket: 90, want: "x@1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := c.ResolveProxyCanaries(tc.bucket)
			snap, err := TranslateWith(r, opts)
			if err != nil {
				t.Fatal(err)
			}
			var got *extv1.Extension
			for _, l := range snap.Listeners {
				for _, f := range hcmOf(t, l, 0).GetHttpFilters() {
					if f.GetName() == NameExtensionPrefix+"x" {
						got = &extv1.Extension{}
						if err := f.GetTypedConfig().UnmarshalTo(got); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			if got == nil || string(got.GetPackage()) != tc.want || got.GetCanary() != nil {
				t.Fatalf("extension %v, want package %s and no canary", got, tc.want)
			}
		})
	}
}

// TestDocProxyCanaryExample loads the canary-by-proxies example of
// docs/extensions.md as MeshKit does, and checks that a proxy's own config
// loader refuses it.
func TestDocProxyCanaryExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "extensions.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "### Canary by proxies")
	if !ok {
		t.Fatal("no Canary by proxies section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml example")
	}
	if _, err := config.Parse("mesh.yaml", []byte(body)); err == nil || !strings.Contains(err.Error(), "by proxies needs MeshKit") {
		t.Fatalf("static parse: error %v", err)
	}
	c, err := config.Parse("mesh.yaml", []byte(body), config.ServedByMeshKit())
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Packages: func(name, version string) ([]byte, error) { return []byte(name + "@" + version), nil }}
	for _, bucket := range c.ProxyCanarySides() {
		side, _ := c.ResolveProxyCanaries(bucket)
		if _, err := TranslateWith(side, opts); err != nil {
			t.Fatalf("side of bucket %d: %v", bucket, err)
		}
	}
}
