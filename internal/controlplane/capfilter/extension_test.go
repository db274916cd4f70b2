package capfilter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// An extension filter is named after its extension, so only its config
// type tells what it is; and a proxy that runs the filter gets the listener
// only if it has the runtime and ABI of the package.
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
	omni := func(runtimes, abis []string) capability.Set {
		return capability.Set{Kind: capability.KindOmniRelay, Build: "test", Runtimes: runtimes, ABIs: abis,
			Filters: []string{"envoy.filters.http.router", "envoy.filters.network.http_connection_manager", "omnirelay.extensions.v1.Extension"}}
	}
	tests := []struct {
		name   string
		caps   capability.Set
		reason string // "" when the listener is kept
	}{
		{name: "omnirelay with the runtime and ABI", caps: omni([]string{"dsl", "wasm"}, []string{"x/1"})},
		{name: "omnirelay without the runtime", caps: omni([]string{"wasm"}, []string{"x/1"}), reason: "needs the dsl runtime, which node build omnirelay test lacks"},
		{name: "omnirelay without the ABI", caps: omni([]string{"dsl"}, []string{"x/2"}), reason: "needs ABI x/1"},
		{name: "envoy", caps: capability.Default(capability.KindEnvoy), reason: "requires filter omnirelay.extension.stamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, withheld := Filter(snap, tt.caps)
			if tt.reason == "" {
				if len(withheld) > 0 || len(out.Listeners) != 1 {
					t.Fatalf("withheld %+v, %d listeners", withheld, len(out.Listeners))
				}
				return
			}
			if len(withheld) == 0 || !strings.Contains(withheld[0].Reason, tt.reason) {
				t.Fatalf("withheld = %+v, want a reason with %q", withheld, tt.reason)
			}
		})
	}
}
