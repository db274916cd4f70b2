package wasm_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// sdkDir is the vendored upstream Proxy-Wasm Go SDK (test input only: its
// examples are the plugins users bring from Envoy).
const sdkDir = "testdata/proxy-wasm-go-sdk"

// sdkBuild builds every example of the vendored SDK once per test binary,
// two at a time, and keeps the modules under os.UserCacheDir keyed by a
// hash of the SDK tree and the Go toolchain, so that a rerun on an
// unchanged tree reads 17 files instead of running 17 builds (~10 s of CPU
// each on a cold build cache).
var sdkBuild struct {
	once    sync.Once
	modules map[string][]byte
	err     error
}

// sdkExamples lists the SDK's examples, and returns the packages to build:
// each example directory with a main.go, or its subdirectories with one
// (shared_queue has a sender and a receiver), as "example[/sub]".
func sdkExamples(t testing.TB) (examples, pkgs []string) {
	t.Helper()
	root := filepath.Join(sdkDir, "examples")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, e.Name(), "main.go")); err == nil {
			examples, pkgs = append(examples, e.Name()), append(pkgs, e.Name())
			continue
		}
		subs, _ := os.ReadDir(filepath.Join(root, e.Name()))
		found := false
		for _, s := range subs {
			if _, err := os.Stat(filepath.Join(root, e.Name(), s.Name(), "main.go")); s.IsDir() && err == nil {
				pkgs, found = append(pkgs, e.Name()+"/"+s.Name()), true
			}
		}
		if found {
			examples = append(examples, e.Name())
		}
	}
	sort.Strings(examples)
	sort.Strings(pkgs)
	return examples, pkgs
}

// sdkModule returns the module built from the SDK example name.
func sdkModule(t testing.TB, name string) []byte {
	t.Helper()
	sdkBuild.once.Do(func() {
		_, pkgs := sdkExamples(t)
		sdkBuild.modules, sdkBuild.err = buildSDKExamples(pkgs)
	})
	if sdkBuild.err != nil {
		t.Fatalf("build the SDK's examples: %v", sdkBuild.err)
	}
	b, ok := sdkBuild.modules[name]
	if !ok {
		t.Fatalf("no SDK example %q", name)
	}
	return b
}

func buildSDKExamples(names []string) (map[string][]byte, error) {
	sum, err := treeHash(sdkDir)
	if err != nil {
		return nil, err
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	cache := filepath.Join(base, "omnirelay", "proxy-wasm-go-sdk", sum)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	var missing []string
	for _, n := range names {
		if b, err := os.ReadFile(filepath.Join(cache, cacheName(n))); err == nil {
			out[n] = b
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	// The examples' go.mod files point at the SDK with replace => ../..: a
	// copy of the whole tree builds them with the standard toolchain (their
	// other dependencies come from the module proxy), leaving the
	// repository untouched.
	work, err := os.MkdirTemp("", "proxy-wasm-go-sdk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.CopyFS(work, os.DirFS(sdkDir)); err != nil {
		return nil, fmt.Errorf("copy the SDK: %w", err)
	}
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
		sem  = make(chan struct{}, max(1, min(2, runtime.NumCPU())))
	)
	for _, n := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			dst := filepath.Join(cache, cacheName(n))
			tmp := dst + ".tmp" + fmt.Sprint(os.Getpid())
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", tmp, ".")
			cmd.Dir = filepath.Join(work, "examples", filepath.FromSlash(n))
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOWORK=off")
			b, err := cmd.CombinedOutput()
			if err == nil {
				err = os.Rename(tmp, dst)
			}
			var mod []byte
			if err == nil {
				mod, err = os.ReadFile(dst)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v\n%s", n, err, b))
				return
			}
			out[n] = mod
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return out, nil
}

func cacheName(pkg string) string { return strings.ReplaceAll(pkg, "/", "-") + ".wasm" }

// treeHash hashes the paths and contents of every file under dir and the
// Go version that builds them.
func treeHash(dir string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version())
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(h, "%s\x00", filepath.ToSlash(rel))
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
