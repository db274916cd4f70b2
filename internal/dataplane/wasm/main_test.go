package wasm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// guests builds the test and example plugins once per test binary: a Go
// build of a Wasm module takes seconds, wazero's compile of it more, so
// both are shared (the compilation cache directory too).
type guests struct {
	dir      string
	cacheDir string
	mu       sync.Mutex
	built    map[string][]byte
}

var testGuests *guests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasm-guests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testGuests = &guests{dir: dir, cacheDir: filepath.Join(dir, "cache"), built: map[string][]byte{}}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guest returns the module built from pkg (a path relative to the module
// root).
func guest(t testing.TB, pkg string) []byte {
	t.Helper()
	g := testGuests
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.built[pkg]; ok {
		return b
	}
	out := filepath.Join(g.dir, filepath.Base(pkg)+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./"+pkg)
	cmd.Dir = "../../.."
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	g.built[pkg] = b
	return b
}

const (
	guestTest    = "internal/dataplane/wasm/testdata/guest"
	guestAdd     = "examples/extensions/wasm/add-header"
	guestDeny    = "examples/extensions/wasm/deny-by-header"
	guestCallout = "examples/extensions/wasm/http-callout"
)

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = testGuests.cacheDir
	}
	r, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func load(t testing.TB, r *Runtime, pkg, config string) *Plugin {
	t.Helper()
	p, err := r.LoadModule(context.Background(), filepath.Base(pkg), guest(t, pkg), []byte(config))
	if err != nil {
		t.Fatalf("load %s: %v", pkg, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
