package extension_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/native"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// BenchmarkAddHeader is the side-by-side extension overhead figure of
// docs/benchmarks.md: one request through the same chain and terminal with
// no extension, then with an add-header plugin in each runtime (the DSL
// rule, the Proxy-Wasm example plugin, the native example plugin), each
// behind the extension filter and its watchdog, as the proxy runs them. The
// native case needs `-tags native` (and gcc) and is skipped without.
//
// Besides ns/op (wall clock) it reports cpu-ns/op, the process's CPU time
// (user+system, every thread: GC and timers included) per request, which a
// machine shared with other work distorts less.
//
//	go test -run '^$' -bench BenchmarkAddHeader -count 6 -tags native ./internal/dataplane/extension/
func BenchmarkAddHeader(b *testing.B) {
	ctx := context.Background()
	wrt, err := wasm.New(ctx, wasm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { wrt.Close(ctx) })
	rts := []extension.Runtime{wrt, dsl.NewRuntime(dsl.Options{})}
	nrt := native.NewRuntime(nil) // nil without -tags native
	if nrt != nil {
		rts = append(rts, nrt)
	}
	f := newFactory(b, rts...)

	cases := []struct {
		name   string
		filter func(b *testing.B) filter.Filter
	}{
		{"no-extension", nil},
		{"dsl", func(b *testing.B) filter.Filter {
			rules := `rules: [{name: add-header, actions: [{set_header: {name: x-added, value: "yes"}}]}]`
			m := extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindDSL, ABI: dslrules.ABI}
			return build(b, f, &extv1.Extension{Name: "dsl", Package: pkg(b, 1, m, rules)})
		}},
		{"wasm", func(b *testing.B) filter.Filter {
			m := extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindWasm, ABI: wasm.ABI021}
			mod := goWasm(b, "examples/extensions/wasm/add-header")
			return build(b, f, &extv1.Extension{Name: "wasm", Package: pkg(b, 1, m, string(mod)), Config: []byte("x-added: yes")})
		}},
		{"native", func(b *testing.B) filter.Filter {
			if nrt == nil {
				b.Skip("native runtime not built: run with -tags native")
			}
			m := extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindNative, ABI: native.ABI}
			so := gccShared(b, "../native/testdata/add_header.c")
			return build(b, f, &extv1.Extension{Name: "native", Package: pkg(b, 1, m, string(so)), Config: []byte("x-added=yes")})
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var filters []filter.Filter
			if c.filter != nil {
				filters = append(filters, c.filter(b))
			}
			chain := filter.NewChain(&terminal{}, filters...)
			var s filter.Stream
			var req message.Request
			request := func() {
				req.Reset()
				req.SetMethod("GET")
				req.SetPath("/api/items")
				req.SetScheme("http")
				req.SetAuthority("example.com")
				req.Header.Add("user-agent", "bench")
				s.Reset()
				s.Ctx = ctx
				s.Req = &req
				chain.Run(&s)
				if s.Resp.Status != 200 {
					b.Fatalf("status %d", s.Resp.Status)
				}
				if c.filter != nil && s.Resp.Header.GetString("x-seen-added") != "yes" {
					b.Fatalf("x-added not added: %q", s.Resp.Header.GetString("x-seen-added"))
				}
				chain.Complete(&s)
			}
			request() // the first request of a pool may start a spare instance
			b.ReportAllocs()
			start := cpuTime(b)
			n := 0
			for b.Loop() {
				request()
				n++
			}
			b.ReportMetric(float64(cpuTime(b)-start)/float64(n), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// goWasm builds a Go Proxy-Wasm plugin (a directory relative to the
// module root) with the standard toolchain.
func goWasm(b *testing.B, dir string) []byte {
	b.Helper()
	out := filepath.Join(b.TempDir(), "plugin.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./"+dir)
	cmd.Dir = "../../.."
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", dir, err, msg)
	}
	mod, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	return mod
}

// gccShared compiles a C plugin into a shared object, or skips.
func gccShared(b *testing.B, src string) []byte {
	b.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		b.Skip("gcc not found: the native example plugin is compiled by the benchmark")
	}
	out := filepath.Join(b.TempDir(), "plugin.so")
	if msg, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", out, src).CombinedOutput(); err != nil {
		b.Fatalf("gcc %s: %v\n%s", src, err, msg)
	}
	so, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	return so
}
