package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// exampleRE finds the complete examples of the docs: fenced yaml blocks
// whose first line is "# example: <name>".
var exampleRE = regexp.MustCompile("(?ms)^```yaml\n(# example: ([^\n]*)\n.*?)^```")

// TestDocExamples loads and translates every example in the docs this
// package owns, so that they cannot drift from the code. Certificate files
// in the examples are illustrative paths, hence SkipFileChecks.
func TestDocExamples(t *testing.T) {
	for _, doc := range []string{"config.md", "envoy-support.md", "xds-shapes.md", "telemetry.md"} {
		path := filepath.Join("..", "..", "..", "docs", doc)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		found := exampleRE.FindAllSubmatch(data, -1)
		if len(found) == 0 {
			t.Fatalf("%s has no examples", doc)
		}
		for _, m := range found {
			body, name := m[1], string(m[2])
			t.Run(doc+"/"+name, func(t *testing.T) {
				if config.IsEnvoyFormat(body) {
					if _, _, err := config.LoadEnvoy(doc, body); err != nil {
						t.Fatalf("LoadEnvoy: %v", err)
					}
					return
				}
				c, err := config.Parse(doc, body, config.SkipFileChecks())
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if _, err := translate.Translate(c); err != nil {
					t.Fatalf("Translate: %v", err)
				}
				// MeshKit's shapes must accept every documented config too.
				if _, err := translate.TranslateWith(c, translate.Options{ADS: true}); err != nil {
					t.Fatalf("TranslateWith(ADS): %v", err)
				}
				if _, err := translate.ForGRPC(c, translate.Options{}); err != nil {
					t.Fatalf("ForGRPC: %v", err)
				}
			})
		}
	}
}
