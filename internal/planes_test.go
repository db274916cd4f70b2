// Package internal_test checks the import rules between the layers under
// internal/: the data plane and the control plane never import each other,
// test files included; what both use lives in internal/shared; the test
// harness keeps each plane's starter in its own package. Tests that run
// both planes together belong in internal/e2e, which may import anything.
package internal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/omnirelay/omnirelay/"

const (
	dataplane    = "internal/dataplane"
	controlplane = "internal/controlplane"
)

// rule forbids packages under from (or exactly from, with exact) to depend
// on anything under a forbidden prefix. Tests says whether the packages'
// test files are held to it too.
type rule struct {
	from      string
	exact     bool
	tests     bool
	forbidden []string
	why       string
}

var rules = []rule{
	{from: dataplane, tests: true, forbidden: []string{controlplane},
		why: "the data plane never imports the control plane (move the test to internal/e2e, or the shared code to internal/shared)"},
	{from: controlplane, tests: true, forbidden: []string{dataplane},
		why: "the control plane never imports the data plane (move the test to internal/e2e, or the shared code to internal/shared)"},
	{from: "internal/shared", forbidden: []string{dataplane, controlplane},
		why: "shared code imports neither plane"},
	{from: "internal/testutil", exact: true, forbidden: []string{dataplane, controlplane},
		why: "testutil is the neutral harness; plane starters live in proxytest and meshtest"},
	{from: "internal/testutil/proxytest", forbidden: []string{controlplane},
		why: "proxytest starts the data plane only"},
	{from: "internal/testutil/meshtest", forbidden: []string{dataplane},
		why: "meshtest starts the control plane only"},
}

// pkg is what `go list -deps -test -json` reports of one package variant.
type pkg struct {
	ImportPath string   // "p", "p [p.test]" (with its test files), "p_test [p.test]"
	ForTest    string   // set for the variants built for a test
	Imports    []string // direct imports, as ImportPaths of variants
	Deps       []string // every transitive dependency
}

func TestPlaneImports(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 50 {
		t.Fatalf("go list reported %d packages; the check would prove nothing", len(pkgs))
	}
	var violations []string
	for _, p := range pkgs {
		violations = append(violations, check(p, pkgs)...)
	}
	sort.Strings(violations)
	if len(violations) > 0 {
		t.Fatalf("%d import(s) break the plane rule:\n  %s", len(violations), strings.Join(violations, "\n  "))
	}
}

// TestPlaneImportsCheckSeesViolations feeds check a made-up graph with one
// violation of each kind, so that a check that silently passes everything
// fails here.
func TestPlaneImportsCheckSeesViolations(t *testing.T) {
	m := func(s string) string { return module + s }
	pkgs := map[string]pkg{}
	add := func(p pkg) { pkgs[p.ImportPath] = p }
	add(pkg{ImportPath: m("internal/controlplane/store")})
	add(pkg{ImportPath: m("internal/shared/leaky"), Imports: []string{m("internal/controlplane/store")},
		Deps: []string{m("internal/controlplane/store")}})
	add(pkg{ImportPath: m("internal/dataplane/app") + " [" + m("internal/dataplane/app") + ".test]",
		ForTest: m("internal/dataplane/app"), Imports: []string{m("internal/controlplane/store")},
		Deps: []string{m("internal/controlplane/store")}})
	add(pkg{ImportPath: m("internal/dataplane/router"), Imports: []string{m("internal/shared/leaky")},
		Deps: []string{m("internal/shared/leaky"), m("internal/controlplane/store")}})
	add(pkg{ImportPath: m("internal/e2e_test") + " [" + m("internal/e2e") + ".test]", ForTest: m("internal/e2e"),
		Imports: []string{m("internal/controlplane/store"), m("internal/dataplane/router")},
		Deps:    []string{m("internal/controlplane/store"), m("internal/dataplane/router")}})
	var got []string
	for _, p := range pkgs {
		got = append(got, check(p, pkgs)...)
	}
	sort.Strings(got)
	want := []string{
		"internal/dataplane/app (test files) imports internal/controlplane/store",
		"internal/dataplane/router imports internal/shared/leaky, which depends on internal/controlplane/store",
		"internal/shared/leaky imports internal/controlplane/store",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]+": ") {
			t.Errorf("violation %d: %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

// listPackages runs go list over the whole module, test variants included.
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	root, err := filepath.Abs("..") // this file is in <module>/internal
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-test", "-json=ImportPath,ForTest,Imports,Deps", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", root, err, stderr.Bytes())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// check returns p's violations, each naming p, the direct import that
// breaks the rule and, when that import only leads there, where it leads.
func check(p pkg, pkgs map[string]pkg) []string {
	path, variant, ok := local(p)
	if !ok {
		return nil
	}
	var out []string
	for _, r := range rules {
		if !r.applies(path) || variant != "" && !r.tests {
			continue
		}
		for _, imp := range p.Imports {
			if bad := r.forbiddenIn(imp); bad != "" {
				out = append(out, fmt.Sprintf("%s%s imports %s: %s", path, variant, bad, r.why))
				continue
			}
			for _, d := range pkgs[imp].Deps {
				if bad := r.forbiddenIn(d); bad != "" {
					out = append(out, fmt.Sprintf("%s%s imports %s, which depends on %s: %s", path, variant, trim(imp), bad, r.why))
					break
				}
			}
		}
	}
	return out
}

// local returns p's path inside the module ("internal/dataplane/app") and
// which variant it is: "" for the production package, " (test files)" for
// the package built with its _test.go files or its external test package.
// ok is false for packages outside the module, generated test mains, and
// packages recompiled for another package's test (their own variants are
// checked).
func local(p pkg) (path, variant string, ok bool) {
	path = trim(p.ImportPath)
	if !strings.HasPrefix(p.ImportPath, module) || strings.HasSuffix(path, ".test") {
		return "", "", false
	}
	if p.ForTest != "" {
		path = strings.TrimSuffix(path, "_test")
		if path != trim(p.ForTest) {
			return "", "", false
		}
		variant = " (test files)"
	}
	return path, variant, true
}

// trim drops the module prefix and a variant's " [p.test]" suffix.
func trim(importPath string) string {
	if i := strings.IndexByte(importPath, ' '); i >= 0 {
		importPath = importPath[:i]
	}
	return strings.TrimPrefix(importPath, module)
}

func (r rule) applies(path string) bool {
	if r.exact {
		return path == r.from
	}
	return path == r.from || strings.HasPrefix(path, r.from+"/")
}

// forbiddenIn returns importPath (trimmed) if the rule forbids it, else "".
func (r rule) forbiddenIn(importPath string) string {
	path := trim(importPath)
	for _, f := range r.forbidden {
		if path == f || strings.HasPrefix(path, f+"/") {
			return path
		}
	}
	return ""
}
