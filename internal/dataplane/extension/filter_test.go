package extension_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func build(t testing.TB, f *extension.Factory, x *extv1.Extension) filter.Filter {
	t.Helper()
	flt, err := f.Build(extAny(t, x), &filter.Env{Index: 0, Name: "ext"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return flt
}

func TestBuildRefuses(t *testing.T) {
	manifest := func(mut func(*extpkg.Manifest)) extpkg.Manifest {
		m := extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindNative, ABI: "go-test/1"}
		mut(&m)
		return m
	}
	unsigned, err := extpkg.Pack(manifest(func(*extpkg.Manifest) {}), []byte("x-added"))
	if err != nil {
		t.Fatal(err)
	}
	good := pkg(t, 1, extpkg.Manifest{}, "x-added")
	tampered := []byte(strings.Replace(string(good), "x-added", "x-evil!", 1))
	tests := []struct {
		name string
		x    *extv1.Extension
		want string
	}{
		{name: "unsigned", x: &extv1.Extension{Package: unsigned}, want: "not signed"},
		{name: "untrusted key", x: &extv1.Extension{Package: pkg(t, 7, extpkg.Manifest{}, "x-added")}, want: "untrusted"},
		{name: "payload tampered", x: &extv1.Extension{Package: tampered}, want: "does not match the manifest's sha256"},
		{name: "not a package", x: &extv1.Extension{Package: []byte("garbage")}, want: "malformed extension package"},
		{name: "wrong abi", x: &extv1.Extension{Package: pkg(t, 1, manifest(func(m *extpkg.Manifest) { m.ABI = "go-test/9" }), "x-added")},
			want: `needs ABI "go-test/9"`},
		{name: "no runtime for kind", x: &extv1.Extension{Package: pkg(t, 1, manifest(func(m *extpkg.Manifest) { m.Kind = extpkg.KindWasm }), "x-added")},
			want: `no wasm runtime`},
		{name: "missing capability", x: &extv1.Extension{Package: pkg(t, 1, manifest(func(m *extpkg.Manifest) {
			m.Capabilities = []string{"envoy.filters.http.router", "omnirelay.shared_queues"}
		}), "x-added")}, want: "[omnirelay.shared_queues]"},
		{name: "config refused by the runtime", x: &extv1.Extension{Package: good, Config: []byte("a b")}, want: "value must not contain spaces"},
		{name: "zero deadline", x: &extv1.Extension{Package: good, Deadline: durationpb.New(0)}, want: "deadline"},
		{name: "reload falls back to reload", x: &extv1.Extension{Package: good, Policy: extv1.Policy_RELOAD, Fallback: extv1.Policy_RELOAD}, want: "fallback"},
		{name: "fail status out of range", x: &extv1.Extension{Package: good, FailStatus: 99}, want: "fail_status 99"},
		{name: "canary over 100", x: &extv1.Extension{Package: good, Canary: &extv1.Canary{Percent: 101, PreviousPackage: good}}, want: "canary.percent"},
		{name: "canary previous unsigned", x: &extv1.Extension{Package: good, Canary: &extv1.Canary{Percent: 10, PreviousPackage: unsigned}}, want: "canary.previous_package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFactory(t, newGoRuntime())
			_, err := f.Build(extAny(t, tt.x), &filter.Env{Name: "ext"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if tt.name != "zero deadline" && !strings.Contains(err.Error(), `"add-header"`) {
				t.Fatalf("err = %v does not name the extension", err)
			}
		})
	}
}

func TestDuplicateRuntime(t *testing.T) {
	m, _ := extension.NewMetrics(nil)
	_, err := extension.NewFactory(extension.Options{Metrics: m, Runtimes: []extension.Runtime{newGoRuntime(), newGoRuntime()}})
	if err == nil || !strings.Contains(err.Error(), `two runtimes of kind "native"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestRunsAndCaches(t *testing.T) {
	rt := newGoRuntime()
	f := newFactory(t, rt)
	p := pkg(t, 1, extpkg.Manifest{}, "x-added")
	c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: p, Config: []byte("yes")}))
	if status, added, gen := run(c, ""); status != 200 || added != "yes" || gen != "1" {
		t.Fatalf("got %d added=%q gen=%q", status, added, gen)
	}
	if status, _, _ := run(c, "deny"); status != 403 {
		t.Fatalf("deny: status %d", status)
	}
	// A new config version with the same package and config reuses the
	// plugin; another config loads anew.
	build(t, f, &extv1.Extension{Package: p, Config: []byte("yes")})
	runtime.KeepAlive(c) // a version is reachable while the next one builds
	if n := rt.loads.Load(); n != 1 {
		t.Fatalf("loads = %d after an unchanged rebuild, want 1", n)
	}
	c2 := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: p, Config: []byte("other")}))
	if _, added, _ := run(c2, ""); added != "other" || rt.loads.Load() != 2 {
		t.Fatalf("added=%q loads=%d", added, rt.loads.Load())
	}
	if rt.open.Load() != 0 {
		t.Fatalf("%d streams never completed in the plugin", rt.open.Load())
	}
	if s := (&filter.Stream{}); extension.StreamState(s) != nil {
		t.Fatal("StreamState outside a call is not nil")
	}
}

// load sends n requests with mode from workers goroutines and counts
// responses by "status added".
func load(c *filter.Chain, workers, n int, mode string) map[string]int {
	var mu sync.Mutex
	out := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range n {
				status, added, _ := run(c, mode)
				mu.Lock()
				out[fmt.Sprintf("%d %s", status, added)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

func TestPoliciesUnderLoad(t *testing.T) {
	const workers, n = 8, 40
	total := workers * n
	tests := []struct {
		name    string
		policy  extv1.Policy
		mode    string
		outcome string
		want    string // every response
		keeps   bool   // the plugin keeps its deadline itself (Capabilities.KeepsDeadline): the watchdog does not time its calls
	}{
		{name: "ok", policy: extv1.Policy_FAIL_CLOSED, mode: "", outcome: "ok", want: "200 yes"},
		{name: "fail_open error", policy: extv1.Policy_FAIL_OPEN, mode: "error", outcome: "error", want: "200 "},
		{name: "fail_open panic", policy: extv1.Policy_FAIL_OPEN, mode: "panic", outcome: "panic", want: "200 "},
		{name: "fail_open spin past deadline", policy: extv1.Policy_FAIL_OPEN, mode: "spin", outcome: "timeout", want: "200 "},
		// An uninterruptible call that comes back late is a timeout, but
		// what it did to the request before returning stays (documented).
		{name: "fail_open stuck (uninterruptible)", policy: extv1.Policy_FAIL_OPEN, mode: "stuck", outcome: "timeout", want: "200 yes"},
		{name: "fail_closed error", policy: extv1.Policy_FAIL_CLOSED, mode: "error", outcome: "error", want: "599 "},
		{name: "fail_closed panic", policy: extv1.Policy_FAIL_CLOSED, mode: "panic", outcome: "panic", want: "599 "},
		{name: "fail_closed spin", policy: extv1.Policy_FAIL_CLOSED, mode: "spin", outcome: "timeout", want: "599 "},
		{name: "fail_closed stuck", policy: extv1.Policy_FAIL_CLOSED, mode: "stuck", outcome: "timeout", want: "599 "},
		{name: "fail_closed response error", policy: extv1.Policy_FAIL_CLOSED, mode: "error-response", outcome: "error", want: "599 "},
		{name: "fail_open response error", policy: extv1.Policy_FAIL_OPEN, mode: "error-response", outcome: "error", want: "200 yes"},
		// A late call of a plugin that keeps its deadline reaches the policy through its own
		// error (context.DeadlineExceeded), as Wasm and native calls do.
		{name: "fail_closed stuck, plugin keeps the deadline", policy: extv1.Policy_FAIL_CLOSED, mode: "stuck", outcome: "timeout", want: "599 ", keeps: true},
		{name: "fail_open spin, plugin keeps the deadline", policy: extv1.Policy_FAIL_OPEN, mode: "spin", outcome: "timeout", want: "200 ", keeps: true},
		{name: "ok, plugin keeps the deadline", policy: extv1.Policy_FAIL_CLOSED, mode: "", outcome: "ok", want: "200 yes", keeps: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newGoRuntime()
			rt.keeps = tt.keeps
			reg := prometheus.NewRegistry()
			f := newFactoryWith(t, reg, rt)
			term := &terminal{}
			// Short for the cases that time out, so the test stays quick;
			// generous for the others, which a loaded machine must not
			// push past their deadline.
			deadline := time.Second
			if tt.outcome == "timeout" {
				deadline = 5 * time.Millisecond
			}
			c := filter.NewChain(term, build(t, f, &extv1.Extension{
				Package: pkg(t, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes"),
				Policy: tt.policy, FailStatus: 599, Deadline: durationpb.New(deadline),
			}))
			got := load(c, workers, n, tt.mode)
			if got[tt.want] != total {
				t.Fatalf("responses %v, want %d × %q", got, total, tt.want)
			}
			calls := counter(t, reg, "omnirelay_extension_calls_total", "outcome", tt.outcome)
			if calls < float64(total) {
				t.Fatalf("%s calls counted %v, want >= %d", tt.outcome, calls, total)
			}
			if rt.open.Load() != 0 {
				t.Fatalf("%d streams never completed", rt.open.Load())
			}
		})
	}
}

func newFactoryWith(t testing.TB, reg *prometheus.Registry, rts ...extension.Runtime) *extension.Factory {
	t.Helper()
	pub, _ := testKey(1)
	m, err := extension.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{Trust: verifier(pub), Runtimes: rts, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// counter sums the samples of metric whose label equals value.
func counter(t testing.TB, reg *prometheus.Registry, metric, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func TestReloadUnderLoad(t *testing.T) {
	for _, fb := range []struct {
		name   string
		policy extv1.Policy
		during string // what requests get until the reload lands
	}{
		{name: "fallback fail_closed", policy: extv1.Policy_FAIL_CLOSED, during: "503 "},
		{name: "fallback fail_open", policy: extv1.Policy_FAIL_OPEN, during: "200 "},
	} {
		t.Run(fb.name, func(t *testing.T) {
			rt := newGoRuntime()
			reg := prometheus.NewRegistry()
			f := newFactoryWith(t, reg, rt)
			c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{
				Package: pkg(t, 1, extpkg.Manifest{}, "broken:x-added"), Config: []byte("yes"),
				Policy: extv1.Policy_RELOAD, Fallback: fb.policy,
			}))
			got := load(c, 8, 20, "")
			for k := range got {
				if k != fb.during && k != "200 yes" {
					t.Fatalf("responses %v: %q is neither the fallback nor a success", got, k)
				}
			}
			// The reload lands: every request then succeeds on generation 2.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if status, added, gen := run(c, ""); status == 200 && added == "yes" && gen == "2" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no reloaded instance within 5s")
				}
				time.Sleep(time.Millisecond)
			}
			if got := load(c, 8, 20, ""); got["200 yes"] != 160 {
				t.Fatalf("after reload: %v", got)
			}
			if rt.closes.Load() != 1 {
				t.Fatalf("closes = %d, want the broken instance closed once", rt.closes.Load())
			}
			if n := counter(t, reg, "omnirelay_extension_reloads_total", "result", "ok"); n != 1 {
				t.Fatalf("reloads ok = %v, want 1", n)
			}
			if rt.open.Load() != 0 {
				t.Fatalf("%d streams never completed", rt.open.Load())
			}
		})
	}
}

func TestCanarySplit(t *testing.T) {
	rt := newGoRuntime()
	f := newFactory(t, rt)
	newPkg := pkg(t, 1, extpkg.Manifest{Name: "add-header", Version: "2.0.0", Kind: extpkg.KindNative, ABI: "go-test/1"}, "x-added")
	oldPkg := pkg(t, 1, extpkg.Manifest{}, "x-old")
	c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{
		Package: newPkg, Config: []byte("v2"),
		Canary: &extv1.Canary{Percent: 30, PreviousPackage: oldPkg},
	}))
	got := load(c, 4, 50, "")
	// The split is by a request counter: exactly 30 of every 100.
	if got["200 v2"] != 60 || got["200 "] != 140 {
		t.Fatalf("responses %v, want 60 on the new version and 140 on the old", got)
	}
	// Promotion is a config without canary: the new version's plugin is
	// reused, not reloaded.
	before := rt.loads.Load()
	old := c
	c = filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: newPkg, Config: []byte("v2")}))
	runtime.KeepAlive(old) // a version is reachable while the next one builds
	if got := load(c, 4, 25, ""); got["200 v2"] != 100 || rt.loads.Load() != before {
		t.Fatalf("promoted: %v, loads %d -> %d", got, before, rt.loads.Load())
	}
}

// TestResponseSkipped: a stream whose plugin says it needs no response
// phase (Capabilities.SkipsResponse) gets no OnResponse call, and none is counted;
// other streams of the same plugin do.
func TestResponseSkipped(t *testing.T) {
	rt := newGoRuntime()
	rt.skipResp = true
	reg := prometheus.NewRegistry()
	f := newFactoryWith(t, reg, rt)
	c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes")}))
	tests := []struct {
		name    string
		mode    string
		wantGen string // x-ext-gen, set by OnResponse
		calls   float64
	}{
		{name: "skipped", mode: "no-response", wantGen: "", calls: 1},
		{name: "called", mode: "", wantGen: "1", calls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, reg, "omnirelay_extension_calls_total", "outcome", "ok")
			status, added, gen := run(c, tt.mode)
			if status != 200 || added != "yes" || gen != tt.wantGen {
				t.Fatalf("got %d added %q gen %q, want 200 yes %q", status, added, gen, tt.wantGen)
			}
			if got := counter(t, reg, "omnirelay_extension_calls_total", "outcome", "ok") - before; got != tt.calls {
				t.Fatalf("%v calls counted, want %v", got, tt.calls)
			}
			if n := rt.open.Load(); n != 0 {
				t.Fatalf("%d streams not completed", n)
			}
		})
	}
}

func TestDeadlineContext(t *testing.T) {
	rt := newGoRuntime()
	f := newFactory(t, rt)
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	flt := build(t, f, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes"),
		Policy: extv1.Policy_FAIL_CLOSED, Deadline: durationpb.New(time.Hour)})
	c := filter.NewChain(&terminal{}, flt)
	// A client that goes away ends a spinning call through the parent ctx.
	s := newStream(parent, "spin")
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(s)
		c.Complete(s)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled stream did not end the plugin call")
	}
	if s.Resp.Status != 503 {
		t.Fatalf("status %d", s.Resp.Status)
	}
}

func BenchmarkChain(b *testing.B) {
	f := newFactory(b, newGoRuntime())
	for _, bc := range []struct {
		name    string
		filters []filter.Filter
	}{
		{name: "no extension"},
		{name: "go add-header", filters: []filter.Filter{build(b, f, &extv1.Extension{Package: pkg(b, 1, extpkg.Manifest{}, "x-added"), Config: []byte("yes")})}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := filter.NewChain(&terminal{}, bc.filters...)
			s := newStream(context.Background(), "")
			b.ReportAllocs()
			for b.Loop() {
				s.Resp = nil
				c.Run(s)
				c.Complete(s)
			}
		})
	}
}

// noopRuntime's plugin does nothing: what is left is the filter and the
// watchdog, whose cost every extension pays.
type noopRuntime struct{}

func (noopRuntime) Kind() string   { return extpkg.KindDSL }
func (noopRuntime) ABIs() []string { return []string{"go-test/1"} }
func (noopRuntime) Load(context.Context, extpkg.Manifest, []byte, []byte) (extension.Plugin, error) {
	return noopPlugin{}, nil
}

type noopPlugin struct{}

func (noopPlugin) OnRequest(context.Context, *filter.Stream) (extension.Action, error) {
	return extension.Continue, nil
}
func (noopPlugin) OnResponse(context.Context, *filter.Stream) error { return nil }
func (noopPlugin) OnComplete(*filter.Stream)                        {}
func (noopPlugin) Close() error                                     { return nil }

// NewConnection makes noopPlugin a network plugin too, whose connections
// pass bytes unchanged.
func (noopPlugin) NewConnection(context.Context, filter.Downstream) (extension.Conn, extension.Action, error) {
	return noopConn{}, extension.Continue, nil
}

type noopConn struct{}

func (noopConn) Data(_ context.Context, b []byte, _, _ bool) ([]byte, extension.Action, error) {
	return b, extension.Continue, nil
}
func (noopConn) Close() {}

// BenchmarkNetworkWatchdogOverhead is the network filter's share of a TCP
// read: one Data call into a plugin that does nothing.
func BenchmarkNetworkWatchdogOverhead(b *testing.B) {
	f := newFactory(b, noopRuntime{})
	m := extpkg.Manifest{Name: "noop", Version: "1", Kind: extpkg.KindDSL, ABI: "go-test/1"}
	n, err := f.BuildNetwork(extAny(b, &extv1.Extension{Name: "noop", Package: pkg(b, 1, m, "noop")}), "tcp")
	if err != nil {
		b.Fatal(err)
	}
	c, err := n.NewConn(context.Background(), filter.Downstream{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Data(chunk, true, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWatchdogOverhead(b *testing.B) {
	f := newFactory(b, noopRuntime{})
	m := extpkg.Manifest{Name: "noop", Version: "1", Kind: extpkg.KindDSL, ABI: "go-test/1"}
	flt := build(b, f, &extv1.Extension{Name: "noop", Package: pkg(b, 1, m, "noop")})
	c := filter.NewChain(&terminal{}, flt)
	s := newStream(context.Background(), "")
	b.ReportAllocs()
	for b.Loop() {
		s.Resp = nil
		c.Run(s)
		c.Complete(s)
	}
}
