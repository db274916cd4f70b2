package wasm_test

import (
	"context"
	"crypto/ed25519"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// terminal answers every request locally, so the benchmark measures the
// chain and the extension, not a network.
type terminal struct{}

func (terminal) Serve(s *filter.Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	s.Resp = r
	return nil
}

// extensionFilter builds the extension filter around a wasm package the way
// the proxy does for an xDS Extension.
func extensionFilter(b *testing.B, pkg, config string) filter.Filter {
	b.Helper()
	rt, err := wasm.New(context.Background(), wasm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close(context.Background()) })
	m, err := extension.NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{
		Trust:    signing.NewVerifier(key().Public().(ed25519.PublicKey)),
		Runtimes: []extension.Runtime{rt},
		Metrics:  m,
	})
	if err != nil {
		b.Fatal(err)
	}
	orx, err := extpkg.Pack(extpkg.Manifest{Name: "add-header", Version: "1", Kind: extpkg.KindWasm, ABI: wasm.ABI021}, wasm.Guest(b, pkg))
	if err != nil {
		b.Fatal(err)
	}
	if orx, err = extpkg.Sign(orx, signing.NewSigner(key())); err != nil {
		b.Fatal(err)
	}
	a, err := anypb.New(&extv1.Extension{Name: "add-header", Package: orx, Config: []byte(config), Deadline: durationpb.New(time.Second)})
	if err != nil {
		b.Fatal(err)
	}
	flt, err := f.Build(a, &filter.Env{Index: 0, Name: "add-header"})
	if err != nil {
		b.Fatal(err)
	}
	return flt
}

// BenchmarkChain is the Wasm overhead figure: a request through a chain
// with no extension, then with the add-header Wasm plugin (request and
// response phase, watchdog included). The difference is the plugin's cost.
// wasm-noop runs a plugin whose stream context does nothing: what the host,
// wazero and the Go guest runtime charge per request before a plugin does
// any work.
func BenchmarkChain(b *testing.B) {
	chains := []struct {
		name    string
		filters func(b *testing.B) []filter.Filter
	}{
		{"no-extension", func(*testing.B) []filter.Filter { return nil }},
		{"wasm-noop", func(b *testing.B) []filter.Filter {
			return []filter.Filter{extensionFilter(b, "internal/dataplane/wasm/testdata/noop", "")}
		}},
		{"wasm-add-header", func(b *testing.B) []filter.Filter {
			return []filter.Filter{extensionFilter(b, wasm.GuestAdd, "x-added: yes")}
		}},
		// Reads a header (present, not denied): a value returned into guest
		// memory through proxy_on_memory_allocate.
		{"wasm-read-header", func(b *testing.B) []filter.Filter {
			return []filter.Filter{extensionFilter(b, wasm.GuestDeny, "user-agent: nope")}
		}},
	}
	for _, c := range chains {
		b.Run(c.name, func(b *testing.B) {
			chain := filter.NewChain(terminal{}, c.filters(b)...)
			var s filter.Stream
			var req message.Request
			b.ReportAllocs()
			start := cpuTime(b)
			n := 0
			for b.Loop() {
				n++
				req.Reset()
				req.SetMethod("GET")
				req.SetPath("/api/items")
				req.SetScheme("http")
				req.SetAuthority("example.com")
				req.Header.Add("user-agent", "bench")
				s.Reset()
				s.Ctx = context.Background()
				s.Req = &req
				chain.Run(&s)
				if s.Resp.Status != 200 {
					b.Fatalf("status %d", s.Resp.Status)
				}
				chain.Complete(&s)
			}
			b.ReportMetric(float64(cpuTime(b)-start)/float64(n), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user+system CPU time: per request, a figure a
// machine shared with other work distorts less than the wall clock.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
