package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// These tests export to a real OpenTelemetry Collector (tools/otelcol: the
// OTLP receiver and the file exporter, which writes what it received as
// OTLP JSON lines) started on loopback, and assert on what it received.

// collectorBinary returns the collector: $OMNIRELAY_OTELCOL (set by .ci/run)
// or a build of tools/otelcol into the user cache (go build is incremental:
// later runs only relink when nothing changed).
func collectorBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OMNIRELAY_OTELCOL"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	out := filepath.Join(dir, "omnirelay-test", "otelcol")
	src, err := filepath.Abs("../../../tools/otelcol")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test collector (tools/otelcol): %v\n%s", err, b)
	}
	return out
}

type collector struct {
	dir        string
	grpc, http string
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	bin := collectorBinary(t)
	c := &collector{dir: t.TempDir(), grpc: testutil.Addr(t), http: testutil.Addr(t)}
	cfg := `
receivers:
  otlp:
    protocols:
      grpc: { endpoint: "` + c.grpc + `" }
      http: { endpoint: "` + c.http + `" }
exporters:
  file/traces: { path: "` + c.dir + `/traces.json", flush_interval: 50ms }
  file/logs: { path: "` + c.dir + `/logs.json", flush_interval: 50ms }
  file/metrics: { path: "` + c.dir + `/metrics.json", flush_interval: 50ms }
service:
  telemetry:
    metrics: { level: none }
  pipelines:
    traces: { receivers: [otlp], exporters: [file/traces] }
    logs: { receivers: [otlp], exporters: [file/logs] }
    metrics: { receivers: [otlp], exporters: [file/metrics] }
`
	cfgPath := filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config", cfgPath)
	logf, _ := os.Create(filepath.Join(c.dir, "collector.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.dir, "collector.log"))
			t.Logf("collector log:\n%s", b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range []string{c.grpc, c.http} {
		for {
			conn, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("collector did not listen on %s", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// OTLP JSON, only the fields the tests read.
type otlpAttr struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string `json:"stringValue"`
		IntValue    *string `json:"intValue"`
		BoolValue   *bool   `json:"boolValue"`
	} `json:"value"`
}

type otlpResource struct {
	Attributes []otlpAttr `json:"attributes"`
}

type otlpSpan struct {
	TraceID      string     `json:"traceId"`
	SpanID       string     `json:"spanId"`
	ParentSpanID string     `json:"parentSpanId"`
	Name         string     `json:"name"`
	Kind         int        `json:"kind"`
	Attributes   []otlpAttr `json:"attributes"`
	service      string
}

type otlpLog struct {
	TraceID    string     `json:"traceId"`
	SpanID     string     `json:"spanId"`
	EventName  string     `json:"eventName"`
	Attributes []otlpAttr `json:"attributes"`
	service    string
}

func attrOf(as []otlpAttr, k string) string {
	for _, a := range as {
		if a.Key == k {
			switch {
			case a.Value.StringValue != nil:
				return *a.Value.StringValue
			case a.Value.IntValue != nil:
				return *a.Value.IntValue
			case a.Value.BoolValue != nil && *a.Value.BoolValue:
				return "true"
			case a.Value.BoolValue != nil:
				return "false"
			}
		}
	}
	return ""
}

func readLines(t *testing.T, path string, fn func([]byte)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		fn(sc.Bytes())
	}
}

func (c *collector) spans(t *testing.T) []otlpSpan {
	var out []otlpSpan
	readLines(t, filepath.Join(c.dir, "traces.json"), func(b []byte) {
		var doc struct {
			ResourceSpans []struct {
				Resource   otlpResource `json:"resource"`
				ScopeSpans []struct {
					Spans []otlpSpan `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		for _, rs := range doc.ResourceSpans {
			svc := attrOf(rs.Resource.Attributes, "service.name")
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					s.service = svc
					out = append(out, s)
				}
			}
		}
	})
	return out
}

func (c *collector) logs(t *testing.T) []otlpLog {
	var out []otlpLog
	readLines(t, filepath.Join(c.dir, "logs.json"), func(b []byte) {
		var doc struct {
			ResourceLogs []struct {
				Resource  otlpResource `json:"resource"`
				ScopeLogs []struct {
					LogRecords []otlpLog `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		for _, rl := range doc.ResourceLogs {
			svc := attrOf(rl.Resource.Attributes, "service.name")
			for _, sl := range rl.ScopeLogs {
				for _, l := range sl.LogRecords {
					l.service = svc
					out = append(out, l)
				}
			}
		}
	})
	return out
}

// metricNames lists the metric names the collector received.
func (c *collector) metricNames(t *testing.T) map[string]bool {
	out := map[string]bool{}
	readLines(t, filepath.Join(c.dir, "metrics.json"), func(b []byte) {
		var doc struct {
			ResourceMetrics []struct {
				ScopeMetrics []struct {
					Metrics []struct {
						Name string `json:"name"`
					} `json:"metrics"`
				} `json:"scopeMetrics"`
			} `json:"resourceMetrics"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		for _, rm := range doc.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					out[m.Name] = true
				}
			}
		}
	})
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const telemetryProxy = `
telemetry:
  collector: { cluster: otel, protocol: PROTO, timeout: 2s }
  service_name: SERVICE
  tracing: { sampler: parent_based, ratio: 1 }
  logs: {}
  metrics: { interval: 200ms, temporality: delta }
  tenants:
    from: { header: x-tenant }
    budgets:
      noisy: { spans_per_second: 0.01, span_burst: 1 }
listeners:
  - name: web
    address: ADDR
    virtual_hosts:
      - name: all
        routes:
          - name: ROUTE
            match: { path_prefix: / }
            cluster: up
clusters:
  - { name: up, endpoints: [UPSTREAM] }
  - { name: otel, endpoints: [COLLECTOR] }
`

func telemetryCfg(service, proto, addr, route, upstream, coll string) string {
	return strings.NewReplacer("SERVICE", service, "PROTO", proto, "ADDR", addr, "ROUTE", route,
		"UPSTREAM", upstream, "COLLECTOR", coll).Replace(telemetryProxy)
}

func TestTelemetryToCollector(t *testing.T) {
	col := startCollector(t)
	var mu sync.Mutex
	var backendTP []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		backendTP = append(backendTP, r.Header.Get("traceparent"))
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	defer backend.Close()

	// client -> A (OTLP/gRPC) -> B (OTLP/HTTP) -> backend
	a, b := newRuntime(t), newRuntime(t)
	aAddr, bAddr := testutil.Addr(t), testutil.Addr(t)
	if err := b.Apply(snapshot(t, telemetryCfg("proxy-b", "http", bAddr, "to-backend", backend.Listener.Addr().String(), col.http)), "test"); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(snapshot(t, telemetryCfg("proxy-a", "grpc", aAddr, "to-b", bAddr, col.grpc)), "test"); err != nil {
		t.Fatal(err)
	}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const callerSpan = "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", "http://"+aAddr+"/items/7?x=1", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	req.Header.Set("tracestate", "rojo=00f067aa0ba902b7")
	req.Header.Set("x-request-id", "req-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}

	var spans []otlpSpan
	eventually(t, "4 spans of the trace", func() bool {
		spans = spans[:0]
		for _, s := range col.spans(t) {
			if s.TraceID == traceID {
				spans = append(spans, s)
			}
		}
		return len(spans) >= 4
	})
	find := func(service string, kind int) otlpSpan {
		for _, s := range spans {
			if s.service == service && s.Kind == kind {
				return s
			}
		}
		t.Fatalf("no span of %s kind %d in %+v", service, kind, spans)
		return otlpSpan{}
	}
	const server, client = 2, 3
	aSrv, aCli, bSrv, bCli := find("proxy-a", server), find("proxy-a", client), find("proxy-b", server), find("proxy-b", client)
	if aSrv.ParentSpanID != callerSpan || aCli.ParentSpanID != aSrv.SpanID || bSrv.ParentSpanID != aCli.SpanID || bCli.ParentSpanID != bSrv.SpanID {
		t.Fatalf("span chain broken: A server parent %s, A client parent %s (A server %s), B server parent %s (A client %s), B client parent %s (B server %s)",
			aSrv.ParentSpanID, aCli.ParentSpanID, aSrv.SpanID, bSrv.ParentSpanID, aCli.SpanID, bCli.ParentSpanID, bSrv.SpanID)
	}
	mu.Lock()
	gotTP := backendTP[0]
	mu.Unlock()
	if gotTP != "00-"+traceID+"-"+bCli.SpanID+"-01" {
		t.Fatalf("backend got traceparent %q, want B's client span %s", gotTP, bCli.SpanID)
	}
	for k, want := range map[string]string{
		"http.request.method": "GET", "url.path": "/items/7", "http.response.status_code": "200",
		"network.protocol.version": "1.1", "omnirelay.route": "to-b", "omnirelay.cluster": "up", "omnirelay.listener": "web",
	} {
		if got := attrOf(aSrv.Attributes, k); got != want {
			t.Errorf("A server span %s = %q, want %q", k, got, want)
		}
	}
	if got := attrOf(aSrv.Attributes, "server.address"); got != "127.0.0.1" {
		t.Errorf("server.address %q", got)
	}
	if got := attrOf(bCli.Attributes, "omnirelay.cluster"); got != "up" {
		t.Errorf("B client span cluster %q", got)
	}
	if aSrv.Name != "GET to-b" || aCli.Name != "GET" {
		t.Errorf("span names %q %q", aSrv.Name, aCli.Name)
	}

	// Access records from both proxies, carrying the trace and their span.
	eventually(t, "access log records of the trace", func() bool {
		n := 0
		for _, l := range col.logs(t) {
			if l.TraceID == traceID && l.EventName == "omnirelay.access" {
				if l.service == "proxy-a" && (l.SpanID != aSrv.SpanID || attrOf(l.Attributes, "request_id") != "req-1" || attrOf(l.Attributes, "status") != "200") {
					t.Fatalf("A's log record: span %s attrs %+v", l.SpanID, l.Attributes)
				}
				n++
			}
		}
		return n >= 2
	})
	eventually(t, "OTLP metrics", func() bool {
		m := col.metricNames(t)
		return m["http.server.request.duration"] && m["http.client.request.duration"] && m["omnirelay.request.duration"]
	})

	// A noisy tenant gets one span, the rest are dropped and counted.
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", "http://"+aAddr+"/noisy", nil)
		req.Header.Set("x-tenant", "noisy")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if d := counter(t, a, "omnirelay_telemetry_dropped_total", map[string]string{"tenant": "noisy", "signal": "spans", "reason": "rate_limited"}); d != 4 {
		t.Fatalf("noisy tenant drops %v, want 4", d)
	}
	eventually(t, "the noisy tenant's one span", func() bool {
		n := 0
		for _, s := range col.spans(t) {
			if s.service == "proxy-a" && attrOf(s.Attributes, "omnirelay.tenant") == "noisy" && s.Kind == server {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("noisy tenant exported %d server spans", n)
		}
		return n == 1
	})
}

// TestTelemetryUnreachableCollector: a collector that is down neither
// blocks nor fails requests; what could not be exported is counted.
func TestTelemetryUnreachableCollector(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer backend.Close()
	dead := testutil.Addr(t) // nothing listens here
	rt := newRuntime(t)
	addr := testutil.Addr(t)
	if err := rt.Apply(snapshot(t, telemetryCfg("proxy", "grpc", addr, "r", backend.Listener.Addr().String(), dead)), "test"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 50; i++ {
		code, _ := get(t, http.DefaultClient, "http://"+addr+"/")
		if code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("50 requests took %v with the collector down", el)
	}
	eventually(t, "export_failed drops", func() bool {
		return counter(t, rt, "omnirelay_telemetry_dropped_total", map[string]string{"tenant": "_default", "signal": "spans", "reason": "export_failed"}) > 0
	})
}

// TestTelemetryConfigOptions checks, through config -> xDS -> runtime and
// the headers a backend receives, that the sampler, the per-route sampling
// override and the propagation formats are applied (the collector here is
// down: sampling decisions still travel in the headers).
func TestTelemetryConfigOptions(t *testing.T) {
	var mu sync.Mutex
	got := map[string]http.Header{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
	}))
	defer backend.Close()
	const tmpl = `
telemetry:
  collector: { cluster: otel, timeout: 100ms }
  tracing: { sampler: SAMPLER, ratio: 0, propagation: [PROP] }
listeners:
  - name: web
    address: ADDR
    virtual_hosts:
      - name: all
        routes:
          - name: hot
            match: { path: /hot }
            cluster: up
            tracing: { sampling_ratio: 1 }
          - name: cold
            match: { path_prefix: / }
            cluster: up
clusters:
  - { name: up, endpoints: [UPSTREAM] }
  - { name: otel, endpoints: [COLLECTOR] }
`
	for _, tt := range []struct {
		name, sampler, prop string
		hot, cold           bool // sampled flag the backend sees
		header              string
	}{
		{name: "ratio with route override", sampler: "ratio", prop: "w3c", hot: true, cold: false, header: "traceparent"},
		{name: "always ignores ratio", sampler: "always", prop: "w3c", hot: true, cold: true, header: "traceparent"},
		{name: "never", sampler: "never", prop: "w3c", hot: true, cold: false, header: "traceparent"},
		{name: "b3 only", sampler: "ratio", prop: "b3", hot: true, cold: false, header: "b3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rt := newRuntime(t)
			addr := testutil.Addr(t)
			y := strings.NewReplacer("SAMPLER", tt.sampler, "PROP", tt.prop, "ADDR", addr,
				"UPSTREAM", backend.Listener.Addr().String(), "COLLECTOR", testutil.Addr(t)).Replace(tmpl)
			if err := rt.Apply(snapshot(t, y), "test"); err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]bool{"/hot": tt.hot, "/cold": tt.cold} {
				if code, _ := get(t, http.DefaultClient, "http://"+addr+path); code != 200 {
					t.Fatalf("%s: status %d", path, code)
				}
				mu.Lock()
				h := got[path]
				mu.Unlock()
				v := h.Get(tt.header)
				if v == "" {
					t.Fatalf("%s: backend got no %s header (headers %v)", path, tt.header, h)
				}
				sampled := strings.HasSuffix(v, "-01") || strings.HasSuffix(v, "-1")
				if sampled != want {
					t.Errorf("%s: %s %q, sampled %v, want %v", path, tt.header, v, sampled, want)
				}
				if tt.prop == "b3" && h.Get("traceparent") != "" {
					t.Errorf("%s: traceparent sent with propagation b3 only", path)
				}
			}
		})
	}
}

// TestTelemetryMetricsOnly: a listener with metrics and neither tracing nor
// logs finds its collector through the telemetry extension.
func TestTelemetryMetricsOnly(t *testing.T) {
	col := startCollector(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	y := strings.NewReplacer("COLLECTOR", col.http, "UPSTREAM", backend.Listener.Addr().String()).Replace(`
telemetry:
  collector: { cluster: otel, protocol: http }
  metrics: { interval: 100ms }
listeners:
  - name: web
    address: ADDR
    virtual_hosts:
      - name: all
        routes: [{ name: r, cluster: up }]
clusters:
  - { name: up, endpoints: [UPSTREAM] }
  - { name: otel, endpoints: [COLLECTOR] }
`)
	rt := newRuntime(t)
	addr := testutil.Addr(t)
	if err := rt.Apply(snapshot(t, strings.Replace(y, "ADDR", addr, 1)), "test"); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, http.DefaultClient, "http://"+addr+"/"); code != 200 {
		t.Fatalf("status %d", code)
	}
	eventually(t, "OTLP/HTTP metrics", func() bool { return col.metricNames(t)["http.server.request.duration"] })
	if n := len(col.spans(t)); n != 0 {
		t.Fatalf("metrics-only listener exported %d spans", n)
	}
}
