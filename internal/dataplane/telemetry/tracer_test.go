package telemetry

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

func newTestPipeline(t testing.TB, tc TenantsConfig) (*Pipeline, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	p, err := NewPipeline(PipelineConfig{Spans: exp, Tenants: NewTenants(tc), FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p, exp
}

func newReq(hdrs ...string) *message.Request {
	r := &message.Request{Method: []byte("GET"), Path: []byte("/a/b?x=1"), Authority: []byte("svc.local:8080"), ProtoMajor: 1, ProtoMinor: 1, Scheme: []byte("http")}
	for i := 0; i+1 < len(hdrs); i += 2 {
		r.Header.Add(hdrs[i], hdrs[i+1])
	}
	return r
}

// waitSpans polls the exporter until n spans arrived.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := exp.GetSpans(); len(s) >= n {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("got %d spans, want %d", len(exp.GetSpans()), n)
	return nil
}

func attr(s tracetest.SpanStub, k string) attribute.Value {
	for _, a := range s.Attributes {
		if string(a.Key) == k {
			return a.Value
		}
	}
	return attribute.Value{}
}

func sampler(t testing.TB, k SamplerKind, r float64) Sampler {
	s, err := NewSampler(k, r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const callerTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestContinueTraceWithRetries(t *testing.T) {
	p, exp := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Listener: "l1", Spans: true, Sampler: sampler(t, ParentBased, 1)})
	req := newReq("traceparent", callerTP, "tracestate", "rojo=1")
	s := tr.Start(req, "r1", "", time.Now())
	a1 := s.StartAttempt(req, "c1", "10.0.0.1:80")
	first, _ := req.Header.Get("traceparent")
	firstTP := string(first)
	a1.EndAttempt(0, nil, upstream.ErrConnect)
	a2 := s.StartAttempt(req, "c1", "10.0.0.2:80")
	second, _ := req.Header.Get("traceparent")
	var resp message.Response
	resp.Status = 200
	a2.EndAttempt(200, &resp, nil)
	s.End(req, Outcome{Status: 200, Attempts: 2, UpstreamCluster: "c1"})

	spans := waitSpans(t, exp, 3)
	srv, c1, c2 := spans[0], spans[1], spans[2]
	if srv.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || srv.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("server span did not continue the caller's trace: %v parent %v", srv.SpanContext.TraceID(), srv.Parent.SpanID())
	}
	if srv.SpanContext.TraceState().String() != "rojo=1" {
		t.Fatalf("tracestate %q", srv.SpanContext.TraceState().String())
	}
	if c1.Parent.SpanID() != srv.SpanContext.SpanID() || c2.Parent.SpanID() != srv.SpanContext.SpanID() {
		t.Fatal("attempts are not children of the server span")
	}
	if !strings.Contains(firstTP, c1.SpanContext.SpanID().String()) || !strings.Contains(string(second), c2.SpanContext.SpanID().String()) {
		t.Fatalf("upstream traceparent %q / %q does not name the attempt spans", firstTP, second)
	}
	if got := attr(c1, "error.type").AsString(); got != "connect_failure" {
		t.Fatalf("attempt 1 error.type %q", got)
	}
	if got := attr(c2, "http.request.resend_count").AsInt64(); got != 1 {
		t.Fatalf("resend_count %d", got)
	}
	for k, want := range map[string]string{"http.request.method": "GET", "url.path": "/a/b", "server.address": "svc.local", "network.protocol.version": "1.1", "omnirelay.route": "r1", "omnirelay.cluster": "c1", "omnirelay.listener": "l1"} {
		if got := attr(srv, k).Emit(); got != want {
			t.Errorf("server %s = %q, want %q", k, got, want)
		}
	}
	if attr(srv, "http.response.status_code").AsInt64() != 200 || attr(srv, "server.port").AsInt64() != 8080 {
		t.Errorf("status/port: %v", srv.Attributes)
	}
	if srv.Name != "GET r1" || srv.SpanKind.String() != "server" || c1.SpanKind.String() != "client" {
		t.Errorf("names/kinds: %q %v %v", srv.Name, srv.SpanKind, c1.SpanKind)
	}
}

func TestMalformedTraceparentNotForwarded(t *testing.T) {
	p, exp := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, AlwaysOff, 0)})
	bad := "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
	req := newReq("traceparent", bad, "tracestate", "rojo=1")
	s := tr.Start(req, "", "", time.Now())
	s.StartAttempt(req, "c", "h:1").EndAttempt(200, nil, nil)
	s.End(req, Outcome{Status: 200})
	got, ok := req.Header.Get("traceparent")
	if !ok || string(got) == bad || req.Header.Count("traceparent") != 1 {
		t.Fatalf("traceparent forwarded as %q", got)
	}
	if _, ok := ParseTraceparent(got); !ok {
		t.Fatalf("forwarded invalid traceparent %q", got)
	}
	if req.Header.Has("tracestate") {
		t.Fatal("tracestate of a malformed traceparent forwarded")
	}
	if strings.HasSuffix(string(got), "-01") {
		t.Fatal("never sampler forwarded sampled flag")
	}
	time.Sleep(30 * time.Millisecond)
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("unsampled request exported %d spans", n)
	}
}

func TestUnsampledForwardsCallerUnchanged(t *testing.T) {
	p, _ := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, ParentBased, 1)})
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	req := newReq("traceparent", tp, "tracestate", "Bad=1")
	s := tr.Start(req, "", "", time.Now())
	if s.Recording() {
		t.Fatal("parent said not sampled")
	}
	if a := s.StartAttempt(req, "c", "h:1"); a != nil {
		t.Fatal("attempt recorded for an unsampled request")
	}
	if got, _ := req.Header.Get("traceparent"); string(got) != tp {
		t.Fatalf("traceparent changed to %q", got)
	}
	if req.Header.Has("tracestate") {
		t.Fatal("invalid tracestate forwarded")
	}
	s.End(req, Outcome{Status: 200})
}

func TestRouteSamplerOverride(t *testing.T) {
	p, _ := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, Ratio, 0), RouteSamplers: map[string]Sampler{"hot": sampler(t, Ratio, 1)}})
	for _, tt := range []struct {
		route string
		want  bool
	}{{"hot", true}, {"cold", false}} {
		req := newReq()
		s := tr.Start(req, tt.route, "", time.Now())
		if s.Recording() != tt.want {
			t.Errorf("route %q recording %v", tt.route, s.Recording())
		}
		s.End(req, Outcome{Status: 200})
	}
}

func TestRatioIsConsistentPerTrace(t *testing.T) {
	s := sampler(t, Ratio, 0.5)
	n := 0
	for i := 0; i < 2000; i++ {
		id := randTraceID()
		a := s.decide(id, false, false)
		if a != s.decide(id, false, false) {
			t.Fatal("ratio not deterministic")
		}
		if a {
			n++
		}
	}
	if n < 850 || n > 1150 {
		t.Fatalf("ratio 0.5 sampled %d of 2000", n)
	}
	if _, err := NewSampler(Ratio, 1.5); err == nil {
		t.Fatal("ratio 1.5 accepted")
	}
}

func TestB3InAndOut(t *testing.T) {
	p, _ := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, ParentBased, 1), Propagation: W3C | B3 | B3Multi})
	req := newReq("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	s := tr.Start(req, "", "", time.Now())
	a := s.StartAttempt(req, "c", "h:1")
	tp, _ := req.Header.Get("traceparent")
	if !strings.HasPrefix(string(tp), "00-80f198ee56343ba864fe8b2a57d3eff7-") {
		t.Fatalf("traceparent from b3: %q", tp)
	}
	b3, _ := req.Header.Get("b3")
	if !strings.HasPrefix(string(b3), "80f198ee56343ba864fe8b2a57d3eff7-"+a.sc.SpanID.String()) {
		t.Fatalf("b3 out %q", b3)
	}
	if v, _ := req.Header.Get("x-b3-spanid"); string(v) != a.sc.SpanID.String() {
		t.Fatalf("x-b3-spanid %q", v)
	}
	a.EndAttempt(200, nil, nil)
	s.End(req, Outcome{Status: 200})

	// Without B3 configured, a b3 header is not read.
	tr2 := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, ParentBased, 0)})
	req = newReq("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	s = tr2.Start(req, "", "", time.Now())
	if s.TraceID().String() == "80f198ee56343ba864fe8b2a57d3eff7" {
		t.Fatal("b3 read while not configured")
	}
	s.End(req, Outcome{Status: 200})
}

func TestTenantSpanBudget(t *testing.T) {
	p, exp := newTestPipeline(t, TenantsConfig{
		Default: Budget{SpansPerSecond: 1000},
		Budgets: map[string]Budget{"noisy": {SpansPerSecond: 1, SpanBurst: 2}},
	})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, AlwaysOn, 1), Tenant: TenantSource{Kind: TenantHeader, Header: "x-tenant"}})
	for i := 0; i < 10; i++ {
		for _, ten := range []string{"noisy", "quiet"} {
			req := newReq("x-tenant", ten)
			s := tr.Start(req, "", "", time.Now())
			s.End(req, Outcome{Status: 200})
		}
	}
	waitSpans(t, exp, 12)
	time.Sleep(30 * time.Millisecond)
	byTenant := map[string]int{}
	for _, s := range exp.GetSpans() {
		byTenant[attr(s, "omnirelay.tenant").AsString()]++
	}
	if byTenant["noisy"] != 2 || byTenant["quiet"] != 10 {
		t.Fatalf("exported per tenant: %v", byTenant)
	}
	if d := p.Tenants().Dropped("noisy", "spans", ReasonRateLimited); d != 8 {
		t.Fatalf("noisy drops %d, want 8", d)
	}
	if d := p.Tenants().Dropped("quiet", "spans", ReasonRateLimited); d != 0 {
		t.Fatalf("quiet drops %d", d)
	}
}

func TestTenantSources(t *testing.T) {
	ts := NewTenants(TenantsConfig{})
	p := &Pipeline{tenants: ts}
	expr, err := CompileTenantExpr(`request.headers["x-org"] + "-" + route.name`)
	if err != nil {
		t.Fatal(err)
	}
	req := newReq("x-org", "acme")
	for _, tt := range []struct {
		name string
		src  TenantSource
		want string
	}{
		{"header", TenantSource{Kind: TenantHeader, Header: "x-org"}, "acme"},
		{"trust domain", TenantSource{Kind: TenantTrustDomain}, "example.org"},
		{"spiffe id", TenantSource{Kind: TenantSPIFFEID}, "spiffe://example.org/ns/a/sa/b"},
		{"route metadata", TenantSource{Kind: TenantRouteMetadata, ByRoute: map[string]string{"r1": "team-a"}}, "team-a"},
		{"cel", TenantSource{Kind: TenantCEL, Expr: expr}, "acme-r1"},
		{"none", TenantSource{}, DefaultTenant},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Tracer{p: p, cfg: TracerConfig{Tenant: tt.src}}
			if got := tr.tenantOf(req, "r1", "spiffe://example.org/ns/a/sa/b").Name(); got != tt.want {
				t.Fatalf("tenant %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := CompileTenantExpr(`1 + 1`); err == nil {
		t.Fatal("non-string tenant expression accepted")
	}
}

func TestTenantTableCap(t *testing.T) {
	ts := NewTenants(TenantsConfig{MaxTenants: 2})
	a, b := ts.Lookup([]byte("a")), ts.Lookup([]byte("b"))
	if a.Name() != "a" || b.Name() != "b" {
		t.Fatal("first tenants not named")
	}
	if c := ts.Lookup([]byte("c")); c.Name() != OverflowTenant {
		t.Fatalf("third tenant %q, want overflow", c.Name())
	}
	if ts.Lookup([]byte("a")) != a || ts.Len() != 2 {
		t.Fatal("lookup not stable")
	}
}

// TestTenantMemory reports the table's cost per tenant with 10,000
// distinct tenants, and checks that it stays bounded past the cap.
func TestTenantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement: skipped with -short only")
	}
	ts := NewTenants(TenantsConfig{MaxTenants: 10000, Default: Budget{SpansPerSecond: 10, LogsPerSecond: 10}})
	before := heapInUse()
	name := make([]byte, 0, 16)
	for i := 0; i < 20000; i++ {
		name = append(name[:0], "tenant-"...)
		name = appendInt(name, i)
		ts.Lookup(name).allow(sigSpans, nowNanos())
	}
	after := heapInUse()
	if ts.Len() != 10000 {
		t.Fatalf("table holds %d tenants", ts.Len())
	}
	per := float64(after-before) / 10000
	t.Logf("tenant table: %.0f bytes/tenant with 10,000 tenants (20,000 distinct seen; the rest in %s)", per, OverflowTenant)
	if per > 2048 {
		t.Fatalf("%.0f bytes per tenant", per)
	}
	if d := ts.overflow.dropped[sigSpans][rRate].Load(); d == 0 {
		t.Log("overflow tenant has not hit its budget")
	}
}

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

func TestSeriesOverflow(t *testing.T) {
	ts := NewTenants(TenantsConfig{Budgets: map[string]Budget{"t": {MaxSeries: 2}}})
	te := ts.Lookup([]byte("t"))
	mk := func() []attribute.KeyValue { return nil }
	o1 := te.seriesFor(seriesKey{inst: instServer, status: 200}, mk)
	o2 := te.seriesFor(seriesKey{inst: instServer, status: 201}, mk)
	o3 := te.seriesFor(seriesKey{inst: instServer, status: 202}, mk)
	if o1 == o2 || o3 != te.overflow[instServer] {
		t.Fatal("third series did not go to the overflow series")
	}
	if te.seriesFor(seriesKey{inst: instServer, status: 200}, mk) != o1 {
		t.Fatal("series not cached")
	}
	if d := ts.Dropped("t", "metrics", ReasonSeriesOverflow); d != 1 {
		t.Fatalf("series_overflow %d", d)
	}
}

// failingExporter stands for an unreachable collector: every export fails
// after a delay.
type failingExporter struct{ delay time.Duration }

func (f failingExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
	}
	return errors.New("connection refused")
}
func (failingExporter) Shutdown(context.Context) error { return nil }

func TestSlowCollectorNeverBlocks(t *testing.T) {
	p, err := NewPipeline(PipelineConfig{Spans: failingExporter{delay: 200 * time.Millisecond}, QueueSize: 8, BatchSize: 4, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, AlwaysOn, 1)})
	start := time.Now()
	for i := 0; i < 5000; i++ {
		req := newReq()
		s := tr.Start(req, "", "", time.Now())
		s.End(req, Outcome{Status: 200})
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("5000 requests took %v against a stuck collector", el)
	}
	if d := p.Tenants().Dropped(DefaultTenant, "spans", ReasonQueueFull); d == 0 {
		t.Fatal("no queue_full drops counted")
	}
}

func TestUnsampledDoesNotAllocate(t *testing.T) {
	p, _ := newTestPipeline(t, TenantsConfig{})
	tr := NewTracer(p, TracerConfig{Spans: true, Sampler: sampler(t, ParentBased, 0)})
	req := newReq()
	var resp message.Response
	for _, tp := range []string{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "garbage"} {
		allocs := testing.AllocsPerRun(200, func() {
			req.Header.Reset()
			req.Header.Add("user-agent", "t")
			if tp != "" {
				req.Header.Add("traceparent", tp)
			}
			s := tr.Start(req, "r", "", time.Now())
			a := s.StartAttempt(req, "c", "h:1")
			a.EndAttempt(200, &resp, nil)
			s.End(req, Outcome{Status: 200})
		})
		if allocs != 0 {
			t.Errorf("traceparent %q: %v allocations per unsampled request", tp, allocs)
		}
	}
}

// TestSeriesSharedByPipelines: two pipelines (two collectors) share one
// tenant table; their workers record the same tenant's series at once.
func TestSeriesSharedByPipelines(t *testing.T) {
	ts := NewTenants(TenantsConfig{DefaultMaxSeries: 50})
	te := ts.Lookup([]byte("t"))
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				te.seriesFor(seriesKey{inst: instServer, status: i}, func() []attribute.KeyValue { return nil })
			}
		}()
	}
	wg.Wait()
	if te.nseries[instServer] != 50 || ts.Dropped("t", "metrics", ReasonSeriesOverflow) != 100 {
		t.Fatalf("series %d, overflow drops %d", te.nseries[instServer], ts.Dropped("t", "metrics", ReasonSeriesOverflow))
	}
}
