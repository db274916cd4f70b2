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
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// goldenGlobs lists the configs whose translation is pinned: each X.yaml has
// its expected config dump in X.golden.json next to it.
var goldenGlobs = []string{"testdata/*.yaml"}

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
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(in)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			snap, err := Translate(c)
			if err != nil {
				t.Fatalf("translate: %v", err)
			}
			got, err := snap.MarshalJSON()
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden.json"
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
		})
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
