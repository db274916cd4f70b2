package translate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// goldenGlobs lists the configs whose translation is pinned: each X.yaml has
// the expected config dump of each shape next to it (X.golden.json for
// Translate, X.ads.golden.json, X.grpc.golden.json).
var goldenGlobs = []string{"testdata/*.yaml"}

// goldenShapes are the translations pinned for every golden input.
var goldenShapes = []struct {
	suffix    string
	translate func(*config.Config) (*resources.Snapshot, error)
}{
	{".golden.json", Translate},
	{".ads.golden.json", func(c *config.Config) (*resources.Snapshot, error) {
		return TranslateWith(c, Options{ADS: true, ServiceEndpoints: testRegistry})
	}},
	{".grpc.golden.json", func(c *config.Config) (*resources.Snapshot, error) {
		return ForGRPC(c, Options{ServiceEndpoints: testRegistry})
	}},
}

// testRegistry stands in for MeshKit's registry in golden tests.
func testRegistry(service string) []config.Endpoint {
	switch service {
	case "checkout":
		return []config.Endpoint{
			{Address: "10.0.1.1:8080", Weight: 3, Locality: &config.Locality{Region: "eu", Zone: "eu-1a"}, Health: config.HealthHealthy},
			{Address: "10.0.1.2:8080", Locality: &config.Locality{Region: "eu", Zone: "eu-1b"}, Health: config.HealthDraining},
			{Address: "10.0.2.1:8080", Locality: &config.Locality{Region: "us", Zone: "us-1a"}, Priority: 2, Health: config.HealthUnhealthy},
		}
	}
	return nil
}

func TestGolden(t *testing.T) {
	var files []string
	for _, g := range goldenGlobs {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no golden inputs found")
	}
	for _, in := range files {
		for _, shape := range goldenShapes {
			golden := strings.TrimSuffix(in, ".yaml") + shape.suffix
			t.Run(filepath.Base(golden), func(t *testing.T) {
				checkGolden(t, in, golden, shape.translate)
			})
		}
	}
}

func checkGolden(t *testing.T, in, golden string, translate func(*config.Config) (*resources.Snapshot, error)) {
	t.Helper()
	c, err := config.Load(in)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	snap, err := translate(c)
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	got, err := snap.MarshalJSON()
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the translation; run go test ./internal/shared/translate -update and review the diff\n%s",
			golden, firstDiff(string(want), string(got)))
	}
}

// firstDiff shows the first differing line with a little context.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + w + "\n  got:  " + g
		}
	}
	return "(no line differs)"
}
