package meshkit

import (
	"reflect"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// FuzzRewriteExtension: for any document that validates and names
// extension stamp, rewriting its entries gives a document that validates,
// whose stamp entries carry the new package and are otherwise unchanged,
// and whose every other part is unchanged. Seeds: testdata/fuzz.
func FuzzRewriteExtension(f *testing.F) {
	f.Add([]byte(rolloutDoc))
	f.Fuzz(func(t *testing.T, doc []byte) {
		before, err := config.Parse("mesh.yaml", doc, config.ServedByMeshKit())
		if err != nil {
			return
		}
		const pkg = "store:stamp@9.9.9"
		// A canary whose previous config is the entry's config: every
		// string the entry holds goes through the flow-mapping printer.
		out, paths, err := rewriteExtension("mesh.yaml", doc, "stamp", "canary", func(x *config.Extension) error {
			x.Canary = &config.ExtensionCanary{Percent: 7, By: config.CanaryByProxies, PreviousPackage: x.Package, PreviousConfig: x.Config + "#: {x}"}
			x.Package = pkg
			return nil
		})
		if err != nil {
			return // no stamp entry
		}
		after, err := config.Parse("mesh.yaml", out, config.ServedByMeshKit())
		if err != nil {
			t.Fatalf("rewritten document does not validate: %v\nbefore:\n%s\nafter:\n%s", err, doc, out)
		}
		n := 0
		for i := range after.Listeners {
			if len(after.Listeners[i].Filters) != len(before.Listeners[i].Filters) {
				t.Fatalf("listener %d: filters changed\n%s", i, out)
			}
			for j, fl := range after.Listeners[i].Filters {
				if x := fl.Extension; x != nil && x.Name == "stamp" {
					old := before.Listeners[i].Filters[j].Extension
					want := config.ExtensionCanary{Percent: 7, By: config.CanaryByProxies, PreviousPackage: old.Package, PreviousConfig: old.Config + "#: {x}"}
					if x.Package != pkg || x.Canary == nil || *x.Canary != want {
						t.Fatalf("listeners[%d].filters[%d]: package %q canary %+v\n%s", i, j, x.Package, x.Canary, out)
					}
					x.Package, x.Canary = old.Package, old.Canary
					n++
				}
			}
		}
		if n != len(paths) {
			t.Fatalf("%d entries rewritten, %d paths reported", n, len(paths))
		}
		if !reflect.DeepEqual(after.Listeners, before.Listeners) || !reflect.DeepEqual(after.Clusters, before.Clusters) || after.Admin != before.Admin {
			t.Fatalf("the rewrite changed more than the packages\nbefore:\n%s\nafter:\n%s", doc, out)
		}
	})
}
