package capfilter

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// An extension filter is named after its extension, so only its config
// type tells what it is: a proxy that advertises the type runs it, others
// do not get the listener.
func TestFilterExtensionByConfigType(t *testing.T) {
	dir := t.TempDir()
	pkg, err := extpkg.Pack(extpkg.Manifest{Name: "stamp", Version: "1", Kind: extpkg.KindDSL, ABI: "x/1"}, []byte("rules: []"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stamp.orx"), pkg, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(`
listeners:
  - name: edge
    address: 127.0.0.1:8080
    filters: [{ extension: { name: stamp, package: stamp.orx } }]
    virtual_hosts: [{ name: all, routes: [{ cluster: a }] }]
clusters: [{ name: a, endpoints: [127.0.0.1:9] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := translate.TranslateWith(c, translate.Options{ADS: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		caps     capability.Set
		withheld bool
	}{
		{name: "omnirelay with the extension filter", caps: capability.Set{Kind: capability.KindOmniRelay,
			Filters: []string{"envoy.filters.http.router", "envoy.filters.network.http_connection_manager", "omnirelay.extensions.v1.Extension"}}},
		{name: "envoy", caps: capability.Default(capability.KindEnvoy), withheld: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, withheld := Filter(snap, tt.caps)
			if got := len(withheld) > 0; got != tt.withheld {
				t.Fatalf("withheld = %+v, want withheld %v", withheld, tt.withheld)
			}
			if !tt.withheld && len(out.Listeners) != 1 {
				t.Fatalf("listeners = %d", len(out.Listeners))
			}
		})
	}
}
