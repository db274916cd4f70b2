package dsl_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
)

// Every rule set in docs/dsl.md (```yaml blocks starting "# rules:") and the
// example under examples/extensions/dsl type-checks, and the example proxy
// config validates with the example packed beside it.
func TestDocsAndExamples(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/dsl.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(# rules: [^\n]*)\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) == 0 {
		t.Fatal("no rule examples found in docs/dsl.md")
	}
	for _, b := range blocks {
		t.Run(string(b[1]), func(t *testing.T) {
			if _, err := dslrules.Compile(b[2]); err != nil {
				t.Errorf("%v", err)
			}
		})
	}

	dir := "../../../examples/extensions/dsl"
	rules, err := os.ReadFile(filepath.Join(dir, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("examples/extensions/dsl/rules.yaml", func(t *testing.T) {
		if _, err := dslrules.Compile(rules); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("examples/extensions/dsl/config.yaml", func(t *testing.T) {
		cfg, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		tmp := t.TempDir()
		if err := os.WriteFile(filepath.Join(tmp, "edge-rules.orx"), signedPackage(t, string(rules)), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(tmp, "config.yaml")
		if err := os.WriteFile(path, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(path); err != nil {
			t.Fatal(err)
		}
	})
}

// The type error shown in docs/dsl.md is what the checker says.
func TestDocumentedTypeError(t *testing.T) {
	_, err := dslrules.Compile([]byte("rules:\n- {name: typo, when: 'request.pth == \"/\"', actions: [{remove_header: x}]}"))
	if err == nil {
		t.Fatal("no error")
	}
	doc, rerr := os.ReadFile("../../../docs/dsl.md")
	if rerr != nil {
		t.Fatal(rerr)
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	if !strings.Contains(string(doc), first) {
		t.Errorf("docs/dsl.md does not show the checker's message %q", first)
	}
}
