package dsl_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func key() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(7 * i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// signedPackage packs rules as a signed dsl package, as omnictl ext pack and
// ext sign do.
func signedPackage(t testing.TB, rules string) []byte {
	t.Helper()
	b, err := extpkg.Pack(extpkg.Manifest{Name: "rules", Version: "1.0.0", Kind: extpkg.KindDSL, ABI: dslrules.ABI}, []byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	if b, err = extpkg.Sign(b, signing.NewSigner(key())); err != nil {
		t.Fatal(err)
	}
	return b
}

// buildFilter builds the extension filter with the dsl runtime, the way the
// proxy does for an xDS Extension.
func buildFilter(t testing.TB, reg *prometheus.Registry, x *extv1.Extension, o dsl.Options) filter.Filter {
	t.Helper()
	var r prometheus.Registerer // a nil *Registry would be a non-nil Registerer
	if reg != nil {
		r = reg
	}
	m, err := extension.NewMetrics(r)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{
		Trust:    signing.NewVerifier(key().Public().(ed25519.PublicKey)),
		Runtimes: []extension.Runtime{dsl.NewRuntime(o)},
		Metrics:  m,
	})
	if err != nil {
		t.Fatal(err)
	}
	if x.Name == "" {
		x.Name = "rules"
	}
	if x.Deadline == nil {
		x.Deadline = durationpb.New(50 * time.Millisecond)
	}
	a, err := anypb.New(x)
	if err != nil {
		t.Fatal(err)
	}
	flt, err := f.Build(a, &filter.Env{Index: 0, Name: "rules"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return flt
}

// echo answers 200 and reports the request it saw in response headers.
type echo struct{}

func (echo) Serve(s *filter.Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	r.Header.Set("x-seen-path", string(s.Req.Path))
	if v, ok := s.Req.Header.Get("x-added"); ok {
		r.Header.Set("x-seen-added", string(v))
	}
	r.Header.Set("server", "echo")
	s.Resp = r
	return nil
}

func run(c *filter.Chain, path string, hdr ...string) *filter.Stream {
	s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}, Start: time.Now()}
	s.Req.SetMethod("GET")
	s.Req.SetPath(path)
	s.Req.SetAuthority("example.com")
	for i := 0; i+1 < len(hdr); i += 2 {
		s.Req.Header.Add(hdr[i], hdr[i+1])
	}
	c.Run(s)
	c.Complete(s)
	return s
}

const chainRules = `rules:
- name: block-admin
  when: request.path.startsWith("/admin")
  actions: [{deny: {status: 403, body: "no admin"}}]
- name: tag
  when: request.headers.get("x-tenant") == "acme"
  actions:
  - set_header: {name: x-added, value: "acme"}
  - set_metadata: {key: tenant, value: acme}
- name: v1-to-v2
  when: request.path.startsWith("/v1/")
  actions: [{rewrite_path: '"/v2/" + request.path.substring(4)'}]
- name: response-tag
  phase: response
  when: metadata.get("tenant") == "acme"
  actions:
  - set_header: {name: x-tenant-seen, expr: 'metadata["tenant"] + "/" + string(response.status)'}
  - remove_header: server
`

func TestThroughExtensionFilter(t *testing.T) {
	flt := buildFilter(t, nil, &extv1.Extension{Package: signedPackage(t, chainRules)}, dsl.Options{})
	c := filter.NewChain(echo{}, flt)
	tests := []struct {
		name    string
		path    string
		hdr     []string
		status  int
		body    string
		headers map[string]string // response headers; "" = absent
	}{
		{name: "deny", path: "/admin/x", status: 403, body: "no admin"},
		{name: "untouched", path: "/web", status: 200, headers: map[string]string{
			"x-seen-added": "", "x-tenant-seen": "", "server": "echo", "x-seen-path": "/web"}},
		{name: "tag and response phase with metadata", path: "/web", hdr: []string{"x-tenant", "acme"}, status: 200,
			headers: map[string]string{"x-seen-added": "acme", "x-tenant-seen": "acme/200", "server": ""}},
		{name: "rewrite", path: "/v1/items?id=1", status: 200, headers: map[string]string{"x-seen-path": "/v2/items?id=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(c, tt.path, tt.hdr...)
			if s.Resp.Status != tt.status {
				t.Fatalf("status = %d, want %d", s.Resp.Status, tt.status)
			}
			if tt.body != "" {
				b, _ := io.ReadAll(s.Resp.Body)
				if string(b) != tt.body {
					t.Errorf("body = %q, want %q", b, tt.body)
				}
			}
			for k, want := range tt.headers {
				got, ok := s.Resp.Header.Get(k)
				if want == "" && ok {
					t.Errorf("%s = %q, want absent", k, got)
				} else if want != "" && string(got) != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// A rule over its cost limit is an error for the watchdog: the extension's
// policy decides (fail_closed answers fail_status) and the outcome is
// counted.
func TestCostLimitUnderWatchdog(t *testing.T) {
	rules := `rules:
- name: heavy
  when: request.headers.exists(k, k.startsWith("x-")) && request.path.matches("^/(a|b)+c$")
  actions: [{set_header: {name: x-added, value: "1"}}]`
	reg := prometheus.NewRegistry()
	flt := buildFilter(t, reg, &extv1.Extension{
		Package: signedPackage(t, rules), Policy: extv1.Policy_FAIL_CLOSED, FailStatus: 500,
	}, dsl.Options{CostLimit: 5})
	c := filter.NewChain(echo{}, flt)
	s := run(c, "/ababababc", "x-a", "1")
	if s.Resp.Status != 500 {
		t.Fatalf("status = %d, want the fail status 500", s.Resp.Status)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_extension_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["extension"] == "rules" && labels["kind"] == "dsl" && labels["outcome"] == "error" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no omnirelay_extension_calls_total{extension=rules,kind=dsl,outcome=error} = 1")
	}
}

func TestLoadRefusesBadRules(t *testing.T) {
	m, err := extension.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{
		Trust:    signing.NewVerifier(key().Public().(ed25519.PublicKey)),
		Runtimes: []extension.Runtime{dsl.NewRuntime(dsl.Options{})},
		Metrics:  m,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(&extv1.Extension{Name: "rules", Deadline: durationpb.New(time.Millisecond),
		Package: signedPackage(t, "rules:\n- {name: typo, when: 'request.pth == \"/\"', actions: [{remove_header: x}]}")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Build(a, &filter.Env{Name: "rules"})
	if err == nil {
		t.Fatal("Build accepted a rule set that does not type-check")
	}
	for _, want := range []string{`"rules"`, `"typo"`, "request.pth"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// BenchmarkChain compares a chain with no extension to one running the
// add-header rule in the extension filter (watchdog included).
func BenchmarkChain(b *testing.B) {
	rules := `rules:
- name: add-header
  when: request.path.startsWith("/api") && request.headers.get("x-tenant") == "acme"
  actions: [{set_header: {name: x-added, value: "1"}}]`
	chains := []struct {
		name string
		c    *filter.Chain
	}{
		{"no-extension", filter.NewChain(echo{})},
		{"dsl-add-header", filter.NewChain(echo{}, buildFilter(b, nil, &extv1.Extension{Package: signedPackage(b, rules)}, dsl.Options{}))},
	}
	for _, ch := range chains {
		b.Run(ch.name, func(b *testing.B) {
			var s filter.Stream
			var req message.Request
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				req.Reset()
				req.SetMethod("GET")
				req.SetPath("/api/items")
				req.SetAuthority("example.com")
				req.Header.Add("x-tenant", "acme")
				s.Reset()
				s.Ctx, s.Req = ctx, &req
				ch.c.Run(&s)
				ch.c.Complete(&s)
			}
		})
	}
}
