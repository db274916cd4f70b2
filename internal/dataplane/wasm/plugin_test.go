package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func newStream(path string, headers ...string) *filter.Stream {
	r := &message.Request{ContentLength: -1}
	r.SetMethod("GET")
	r.SetScheme("http")
	r.SetAuthority("example.com")
	r.SetPath(path)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return &filter.Stream{
		Ctx: context.Background(),
		Req: r,
		Downstream: filter.Downstream{
			Listener:   "l1",
			RemoteAddr: netip.MustParseAddrPort("127.0.0.1:4242"),
		},
		Start: time.Now(),
	}
}

func withDeadline(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func idle(p *Plugin) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func TestAddHeader(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestAdd, "x-added: yes\nX-Second: 2")
	if p.ABI() != ABI021 {
		t.Errorf("ABI = %q", p.ABI())
	}
	for i := 0; i < 3; i++ {
		s := newStream("/")
		act, err := p.OnRequest(withDeadline(t, time.Second), s)
		if err != nil || act != Continue {
			t.Fatalf("OnRequest = %v, %v", act, err)
		}
		if got := s.Req.Header.GetString("x-added"); got != "yes" {
			t.Errorf("x-added = %q", got)
		}
		if got := s.Req.Header.GetString("x-second"); got != "2" {
			t.Errorf("x-second = %q", got)
		}
		p.OnComplete(s)
	}
	// Instances are reused: one, plus the spare started when the last idle
	// one was taken.
	if n := idle(p); n < 1 || n > 2 {
		t.Errorf("idle instances = %d, want 1 or 2", n)
	}
	if got := metricValue(t, r, "omnirelay_wasm_counter", "add-header", "add_header_requests"); got != 3 {
		t.Errorf("add_header_requests = %v, want 3", got)
	}
}

func TestDenyByHeader(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestDeny, "x-block: yes")
	tests := []struct {
		name    string
		headers []string
		want    extension.Action
	}{
		{name: "absent", want: Continue},
		{name: "other value", headers: []string{"x-block", "no"}, want: Continue},
		{name: "matching", headers: []string{"x-block", "yes"}, want: Stop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream("/", tt.headers...)
			act, err := p.OnRequest(withDeadline(t, time.Second), s)
			defer p.OnComplete(s)
			if err != nil || act != tt.want {
				t.Fatalf("OnRequest = %v, %v; want %v", act, err, tt.want)
			}
			if tt.want != Stop {
				return
			}
			if s.Resp == nil || s.Resp.Status != 403 {
				t.Fatalf("response = %+v, want 403", s.Resp)
			}
			if got := s.Resp.Header.GetString("x-denied-by"); got != "deny-by-header" {
				t.Errorf("x-denied-by = %q", got)
			}
			body, _ := io.ReadAll(s.Resp.Body)
			if string(body) != "denied by deny-by-header\n" {
				t.Errorf("body = %q", body)
			}
		})
	}
}

func TestFeatures(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "features")

	t.Run("request and response", func(t *testing.T) {
		s := newStream("/a", "x-remove-me", "1", "x-keep", "2")
		s.Req.Body = strings.NewReader("hello")
		s.Req.ContentLength = 5
		act, err := p.OnRequest(withDeadline(t, time.Second), s)
		if err != nil || act != Continue {
			t.Fatalf("OnRequest = %v, %v", act, err)
		}
		h := &s.Req.Header
		// 4 pseudo-headers + x-remove-me + x-keep.
		for name, want := range map[string]string{"x-count": "6", "x-eos": "false", "x-source": "127.0.0.1:4242", "x-plugin": "guest"} {
			if got := h.GetString(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
		if h.Has("x-remove-me") || !h.Has("x-keep") {
			t.Errorf("headers after remove: %v %v", h.Has("x-remove-me"), h.Has("x-keep"))
		}
		body, _ := io.ReadAll(s.Req.Body)
		if string(body) != "HELLO" || s.Req.ContentLength != 5 {
			t.Errorf("request body = %q (%d)", body, s.Req.ContentLength)
		}
		s.Resp = &message.Response{Status: 201, Body: strings.NewReader("resp"), ContentLength: 4}
		if err := p.OnResponse(withDeadline(t, time.Second), s); err != nil {
			t.Fatal(err)
		}
		if got := s.Resp.Header.GetString("x-upstream-status"); got != "201" {
			t.Errorf("x-upstream-status = %q", got)
		}
		if got := s.Resp.Header.GetString("x-prop"); got != "kept" {
			t.Errorf("x-prop = %q", got)
		}
		body, _ = io.ReadAll(s.Resp.Body)
		if string(body) != "resp+wasm" || s.Resp.ContentLength != 9 {
			t.Errorf("response body = %q (%d)", body, s.Resp.ContentLength)
		}
		p.OnComplete(s)
	})
	t.Run("local response", func(t *testing.T) {
		s := newStream("/deny")
		act, err := p.OnRequest(withDeadline(t, time.Second), s)
		defer p.OnComplete(s)
		if err != nil || act != Stop {
			t.Fatalf("OnRequest = %v, %v", act, err)
		}
		if s.Resp.Status != 418 || s.Resp.Header.GetString("x-why") != "teapot" {
			t.Errorf("response = %d %q", s.Resp.Status, s.Resp.Header.GetString("x-why"))
		}
	})
	t.Run("local response to a gRPC request", func(t *testing.T) {
		s := newStream("/deny", "content-type", "application/grpc")
		act, err := p.OnRequest(withDeadline(t, time.Second), s)
		defer p.OnComplete(s)
		if err != nil || act != Stop {
			t.Fatalf("OnRequest = %v, %v", act, err)
		}
		// A trailers-only gRPC error, so that gRPC clients see a status.
		if s.Resp.Status != 200 || !s.Resp.Header.Has("grpc-status") {
			t.Errorf("response = %d, grpc-status present: %v", s.Resp.Status, s.Resp.Header.Has("grpc-status"))
		}
	})
	t.Run("rewrite path", func(t *testing.T) {
		s := newStream("/rewrite")
		if _, err := p.OnRequest(withDeadline(t, time.Second), s); err != nil {
			t.Fatal(err)
		}
		p.OnComplete(s)
		if string(s.Req.Path) != "/rewritten" {
			t.Errorf("path = %q", s.Req.Path)
		}
	})
	t.Run("shared data", func(t *testing.T) {
		p.shared.mu.Lock()
		v := string(p.shared.data["hits"].value)
		p.shared.mu.Unlock()
		if v != "2" { // "/a" and "/rewrite" reached the shared-data step
			t.Errorf("hits = %q, want 2", v)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		for _, m := range []struct {
			family, name string
			want         float64
		}{
			{"omnirelay_wasm_counter", "requests", 4}, // the four requests above
			{"omnirelay_wasm_gauge", "last_path_len", 8},
			{"omnirelay_wasm_histogram", "header_count", 4}, // sample count
		} {
			if got := metricValue(t, r, m.family, "guest", m.name); got != m.want {
				t.Errorf("%s{name=%q} = %v, want %v", m.family, m.name, got, m.want)
			}
		}
	})
}

// metricValue gathers the runtime's collector and returns one series'
// value (a histogram's sample count); -1 when absent.
func metricValue(t *testing.T, r *Runtime, family, plugin, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["plugin"] != plugin || labels["name"] != name {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

// waitShared polls the plugin's shared data until ok(value of key).
func waitShared(t *testing.T, p *Plugin, key, want string, ok func(v string) bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, fmt.Sprintf("shared %q = %q", key, want), func() (bool, string) {
		p.shared.mu.Lock()
		v := string(p.shared.data[key].value)
		p.shared.mu.Unlock()
		return ok(v), fmt.Sprintf("shared %q = %q", key, v)
	})
}

func TestTick(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "tick")
	waitShared(t, p, "ticks", ">= 3", func(v string) bool { n, _ := strconv.Atoi(v); return n >= 3 })
}

func TestRootHTTPCall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			io.WriteString(w, "t0k3n")
		}
	}))
	defer srv.Close()
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "tickcall "+srv.Listener.Addr().String())
	waitShared(t, p, "token", "200 t0k3n", func(v string) bool { return v == "200 t0k3n" })
}

func TestQueue(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "queue")
	s := newStream("/queued")
	if _, err := p.OnRequest(withDeadline(t, time.Second), s); err != nil {
		t.Fatal(err)
	}
	p.OnComplete(s)
	waitShared(t, p, "dequeued", "/queued", func(v string) bool { return v == "/queued" })
}

func TestWatchdog(t *testing.T) {
	r := newRuntime(t, Options{MemoryLimitPages: 256})
	tests := []struct {
		name     string
		mode     string
		deadline time.Duration
		timeout  bool
	}{
		{name: "infinite loop is interrupted at its deadline", mode: "loop", deadline: 50 * time.Millisecond, timeout: true},
		{name: "memory blow-up stays in its instance", mode: "oom", deadline: 5 * time.Second},
		{name: "panic", mode: "panic", deadline: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, r, guestTest, tt.mode)
			for i := 0; i < 2; i++ { // the second request gets a fresh instance
				// Wait for it: on a loaded machine (-race) a new instance
				// can take longer than the deadline, which is for the guest.
				for wait := time.Now().Add(10 * time.Second); idle(p) == 0; time.Sleep(time.Millisecond) {
					if time.Now().After(wait) {
						t.Fatal("no idle instance after 10s")
					}
				}
				s := newStream("/")
				start := time.Now()
				_, err := p.OnRequest(withDeadline(t, tt.deadline), s)
				took := time.Since(start)
				failed := p.state(s).in
				p.OnComplete(s)
				if err == nil {
					t.Fatal("OnRequest succeeded")
				}
				if got := errors.Is(err, context.DeadlineExceeded); got != tt.timeout {
					t.Errorf("errors.Is(%v, DeadlineExceeded) = %v", err, got)
				}
				if tt.timeout && took > tt.deadline+500*time.Millisecond {
					t.Errorf("interrupted after %v, deadline %v", took, tt.deadline)
				}
				p.mu.Lock()
				for _, in := range p.idle {
					if in == failed || in.broken != nil {
						t.Error("a failed instance went back to the pool")
					}
				}
				p.mu.Unlock()
			}
		})
	}
}

func TestHTTPCallout(t *testing.T) {
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/check" || r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-User", "alice")
	}))
	defer auth.Close()
	r := newRuntime(t, Options{})
	p := load(t, r, guestCallout, "upstream: "+auth.Listener.Addr().String()+"\npath: /check")
	tests := []struct {
		name   string
		auth   string
		want   extension.Action
		status int
	}{
		{name: "allowed", auth: "Bearer good", want: Continue},
		{name: "denied", auth: "Bearer bad", want: Stop, status: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream("/", "authorization", tt.auth)
			act, err := p.OnRequest(withDeadline(t, 2*time.Second), s)
			defer p.OnComplete(s)
			if err != nil || act != tt.want {
				t.Fatalf("OnRequest = %v, %v; want %v", act, err, tt.want)
			}
			if tt.want == Stop {
				if s.Resp.Status != tt.status {
					t.Errorf("status = %d", s.Resp.Status)
				}
				return
			}
			if got := s.Req.Header.GetString("x-auth-user"); got != "alice" {
				t.Errorf("x-auth-user = %q", got)
			}
		})
	}
}

// uleb appends n as unsigned LEB128.
func uleb(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func name(b []byte, s string) []byte { return append(uleb(b, len(s)), s...) }

func section(b []byte, id byte, body []byte) []byte {
	return append(uleb(append(b, id), len(body)), body...)
}

// tinyModule hand-assembles a module importing the given env functions and
// exporting empty functions under the given names, plus a memory.
func tinyModule(imports, exports []string) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = section(b, 1, []byte{1, 0x60, 0, 0})
	var imp []byte
	imp = uleb(imp, len(imports))
	for _, n := range imports {
		imp = name(name(imp, "env"), n)
		imp = append(imp, 0, 0)
	}
	b = section(b, 2, imp)
	fn := uleb(nil, len(exports))
	for range exports {
		fn = append(fn, 0)
	}
	b = section(b, 3, fn)
	b = section(b, 5, []byte{1, 0, 1})
	exp := uleb(nil, len(exports)+1)
	for i, n := range exports {
		exp = uleb(append(name(exp, n), 0), len(imports)+i)
	}
	exp = append(name(exp, "memory"), 2, 0)
	b = section(b, 7, exp)
	code := uleb(nil, len(exports))
	for range exports {
		code = append(code, 2, 0, 0x0b)
	}
	return section(b, 10, code)
}

func TestLoadErrors(t *testing.T) {
	r := newRuntime(t, Options{})
	good := guest(t, guestAdd)
	tests := []struct {
		name   string
		module []byte
		config string
		want   string
	}{
		{name: "corrupt", module: []byte("not wasm at all"), want: "compile"},
		{name: "truncated", module: good[:len(good)/2], want: "compile"},
		{name: "unknown host function", module: tinyModule([]string{"proxy_log", "proxy_nope"}, []string{exportABI021, "proxy_on_memory_allocate"}), want: "env.proxy_nope"},
		{name: "wrong ABI", module: tinyModule(nil, []string{"proxy_abi_version_0_1_0", "malloc"}), want: "unsupported Proxy-Wasm ABI proxy_abi_version_0_1_0"},
		{name: "not proxy-wasm", module: tinyModule(nil, []string{"malloc"}), want: "not a Proxy-Wasm module"},
		{name: "no allocator", module: tinyModule(nil, []string{exportABI020}), want: "no allocator"},
		{name: "callback with another signature", module: tinyModule(nil, []string{exportABI021, "malloc"}), want: "export malloc has signature () -> (), want (i32) -> (i32)"},
		{name: "configuration rejected", module: guest(t, guestTest), config: "reject", want: "proxy_on_configure returned false"},
		{name: "add-header without config", module: good, want: "proxy_on_configure returned false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := r.LoadModule(context.Background(), "bad", tt.module, []byte(tt.config))
			if err == nil {
				p.Close()
				t.Fatal("load succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func BenchmarkAddHeader(b *testing.B) {
	r := newRuntime(b, Options{})
	p := load(b, r, guestAdd, "x-added: yes")
	s := newStream("/bench", "user-agent", "bench")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Req.Header.Del("x-added")
		if _, err := p.OnRequest(ctx, s); err != nil {
			b.Fatal(err)
		}
		p.OnComplete(s)
	}
}

// Close stops what a plugin runs in the background: the tick loop and any
// spare instantiation.
func TestCloseStopsGoroutines(t *testing.T) {
	r := newRuntime(t, Options{})
	base := goleak.IgnoreCurrent()
	p, err := r.LoadModule(context.Background(), "guest", guest(t, guestTest), []byte("tick"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		s := newStream("/")
		if _, err := p.OnRequest(withDeadline(t, 5*time.Second), s); err != nil {
			t.Fatal(err)
		}
		p.OnComplete(s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, base)
}

func TestLoadManifestABI(t *testing.T) {
	r := newRuntime(t, Options{})
	mod := guest(t, guestAdd)
	tests := []struct {
		name, abi, want string
	}{
		{name: "matches", abi: ABI021},
		{name: "module built for another ABI", abi: ABI020, want: "manifest declares ABI proxy-wasm/0.2.0 but the module is built for proxy-wasm/0.2.1"},
		{name: "unknown ABI", abi: "proxy-wasm/0.1.0", want: `manifest ABI "proxy-wasm/0.1.0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := r.Load(context.Background(), extpkg.Manifest{Name: "add-header", Kind: extpkg.KindWasm, ABI: tt.abi}, mod, []byte("x-a: 1"))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
