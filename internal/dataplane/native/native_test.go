//go:build native

package native_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/native"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"

	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

func key() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i) + 3
	}
	return ed25519.NewKeyFromSeed(seed)
}

// buildSO compiles a C file of testdata into a shared object with gcc, or
// skips the test when gcc is not installed.
func buildSO(t testing.TB, src string) []byte {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: the native plugin tests compile their example plugin with gcc")
	}
	out := filepath.Join(t.TempDir(), "plugin.so")
	cmd := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", out, filepath.Join("testdata", src))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", src, err, b)
	}
	so, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return so
}

func signedPackage(t testing.TB, so []byte) []byte {
	t.Helper()
	pkg, err := extpkg.Pack(extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindNative, ABI: native.ABI}, so)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err = extpkg.Sign(pkg, signing.NewSigner(key()))
	if err != nil {
		t.Fatal(err)
	}
	return pkg
}

func newFactory(t testing.TB, reg prometheus.Registerer) *extension.Factory {
	t.Helper()
	m, err := extension.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{
		Trust: signing.NewVerifier(key().Public().(ed25519.PublicKey)), Runtimes: []extension.Runtime{native.NewRuntime(nil)}, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func buildFilter(t testing.TB, f *extension.Factory, x *extv1.Extension) (filter.Filter, error) {
	t.Helper()
	if x.Name == "" {
		x.Name = "add-header"
	}
	if x.Deadline == nil {
		x.Deadline = durationpb.New(time.Second)
	}
	a, err := anypb.New(x)
	if err != nil {
		t.Fatal(err)
	}
	return f.Build(a, &filter.Env{Name: "ext"})
}

type terminal struct{}

func (terminal) Serve(s *filter.Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	r.Header.Set("x-seen-added", s.Req.Header.GetString("x-added"))
	s.Resp = r
	return nil
}

func run(c *filter.Chain, hdr ...string) *filter.Stream {
	s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}, Start: time.Now()}
	s.Req.SetMethod("GET")
	s.Req.SetPath("/")
	for i := 0; i+1 < len(hdr); i += 2 {
		s.Req.Header.Set(hdr[i], hdr[i+1])
	}
	c.Run(s)
	c.Complete(s)
	return s
}

func TestNativePlugin(t *testing.T) {
	so := buildSO(t, "add_header.c")
	f := newFactory(t, nil)
	flt, err := buildFilter(t, f, &extv1.Extension{Package: signedPackage(t, so), Config: []byte("x-added=from-c")})
	if err != nil {
		t.Fatal(err)
	}
	c := filter.NewChain(terminal{}, flt)
	s := run(c)
	if got := s.Resp.Header.GetString("x-seen-added"); got != "from-c" {
		t.Fatalf("upstream saw x-added=%q", got)
	}
	if got := s.Resp.Header.GetString("x-native-instance"); got == "" {
		t.Fatal("response header from on_response_headers missing")
	}
	if s := run(c, "x-native-mode", "deny"); s.Resp.Status != 403 {
		t.Fatalf("deny: %d", s.Resp.Status)
	}
	if s := run(c, "x-native-mode", "error"); s.Resp.Status != 503 {
		t.Fatalf("error under fail_closed: %d", s.Resp.Status)
	}
}

func TestNativeLoadRefuses(t *testing.T) {
	so := buildSO(t, "add_header.c")
	noExports := buildSO(t, "no_exports.c")
	tests := []struct {
		name    string
		payload []byte
		config  string
		want    string
	}{
		{name: "config refused by init", payload: so, config: "no-equals-sign", want: "omnirelay_init refused the config"},
		{name: "not a shared object", payload: []byte("\x7fELF garbage"), config: "a=b", want: "dlopen"},
		{name: "missing exports", payload: noExports, config: "a=b", want: "does not export omnirelay_native_abi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildFilter(t, newFactory(t, nil), &extv1.Extension{Package: signedPackage(t, tt.payload), Config: []byte(tt.config)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestSlowNativeCall: a native call that overruns its deadline cannot be
// interrupted; it is a timeout once it returns, the policy decides the
// request, and its instance is quarantined (the next stream gets a fresh
// one). Under concurrent load no request ends any other way.
func TestSlowNativeCall(t *testing.T) {
	so := buildSO(t, "add_header.c")
	for _, tt := range []struct {
		name   string
		policy extv1.Policy
		want   int
	}{
		{name: "fail_closed", policy: extv1.Policy_FAIL_CLOSED, want: 503},
		{name: "fail_open", policy: extv1.Policy_FAIL_OPEN, want: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			flt, err := buildFilter(t, newFactory(t, reg), &extv1.Extension{Package: signedPackage(t, so), Config: []byte("x-added=yes"),
				Policy: tt.policy, Deadline: durationpb.New(5 * time.Millisecond)})
			if err != nil {
				t.Fatal(err)
			}
			c := filter.NewChain(terminal{}, flt)
			var mu sync.Mutex
			statuses := map[int]int{}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 5 {
						s := run(c, "x-native-mode", "slow", "x-native-sleep-ms", "20")
						mu.Lock()
						statuses[s.Resp.Status]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if statuses[tt.want] != 40 {
				t.Fatalf("statuses %v, want 40 × %d", statuses, tt.want)
			}
			// Every instance that ran a slow call was destroyed, none went
			// back to the pool: the next stream gets a new instance, the
			// 41st at least (the library counts the instances it made).
			after, err := strconv.Atoi(run(c).Resp.Header.GetString("x-native-instance"))
			if err != nil || after <= 40 {
				t.Fatalf("instance after the slow calls = %d (%v), want a fresh one (> 40)", after, err)
			}
			mfs, _ := reg.Gather()
			var timeouts float64
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "outcome" && l.GetValue() == "timeout" {
							timeouts += m.GetCounter().GetValue()
						}
					}
				}
			}
			if timeouts != 40 {
				t.Fatalf("timeouts counted %v, want 40", timeouts)
			}
		})
	}
}

const proxyConfig = `
admin: { address: {{admin}} }
listeners:
  - name: edge
    address: {{edge}}
    filters:
      - extension:
          name: add-header
          package: add-header.orx
          config: "x-added=through-proxy"
          policy: fail_closed
          fail_status: 502
          deadline: 100ms
    virtual_hosts:
      - { name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }
clusters:
  - { name: main, endpoints: [{{main}}] }
`

// TestThroughProxy runs the example plugin in a real OmniRelay: config
// file, signed package, trust root, listener, router, upstream on loopback.
func TestThroughProxy(t *testing.T) {
	so := buildSO(t, "add_header.c")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "add-header.orx"), signedPackage(t, so), 0o644); err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, key().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "x-added=%s", r.Header.Get("x-added"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	edge := testutil.Addr(t)
	cfg := strings.NewReplacer("{{admin}}", testutil.Addr(t), "{{edge}}", edge, "{{main}}", ln.Addr().String()).Replace(proxyConfig)
	proxytest.StartIn(t, dir, cfg, func(o *app.Options) {
		o.ExtensionTrustRoot, o.DrainTimeout, o.PollInterval = trust, time.Second, time.Hour
	})
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tt := range []struct {
		name   string
		mode   string
		status int
		body   string
	}{
		{name: "adds header", status: 200, body: "x-added=through-proxy"},
		{name: "deny", mode: "deny", status: 403, body: "denied by native plugin"},
		{name: "slow call fails closed", mode: "slow", status: 502, body: "extension add-header failed"},
		{name: "error fails closed", mode: "error", status: 502, body: "extension add-header failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+edge+"/", nil)
			if tt.mode != "" {
				req.Header.Set("x-native-mode", tt.mode)
				req.Header.Set("x-native-sleep-ms", "300") // past the 100ms deadline
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || strings.TrimSpace(string(b)) != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, tt.status, tt.body)
			}
		})
	}
}

func BenchmarkNativeAddHeader(b *testing.B) {
	so := buildSO(b, "add_header.c")
	flt, err := buildFilter(b, newFactory(b, nil), &extv1.Extension{Package: signedPackage(b, so), Config: []byte("x-added=yes")})
	if err != nil {
		b.Fatal(err)
	}
	c := filter.NewChain(terminal{}, flt)
	s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}}
	b.ReportAllocs()
	for b.Loop() {
		s.Resp = nil
		c.Run(s)
		c.Complete(s)
	}
}
