package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// PipelineConfig wires a Pipeline to its exporters. Every exporter is
// optional: a nil one turns its signal off.
type PipelineConfig struct {
	Spans    sdktrace.SpanExporter
	Logger   otellog.Logger
	Meter    metric.Meter
	Resource *resource.Resource
	Tenants  *Tenants
	Log      *slog.Logger

	// QueueSize bounds the finished requests waiting for the worker
	// (default 4096); beyond it requests are dropped and counted.
	QueueSize int
	// BatchSize is the most spans per export call (default 512).
	BatchSize int
	// FlushInterval exports a partial batch after this long (default 1s).
	FlushInterval time.Duration
	// RecycleAttributes returns the spans' attribute slices to a pool once
	// ExportSpans has returned. Only for exporters that are done with the
	// spans by then (the OTLP exporters serialise before they return; an
	// in-memory test exporter that keeps them is not).
	RecycleAttributes bool
	// ExportTimeout bounds one export call (default 5s).
	ExportTimeout time.Duration
}

// Pipeline is the off-path half: one worker goroutine turns finished
// requests into SDK ReadOnlySpans, OTLP log records and metric measurements,
// and one exporter goroutine sends span batches. It outlives config versions
// (Tracers of each version point at it) and is stopped by Shutdown.
type Pipeline struct {
	cfg     PipelineConfig
	tenants *Tenants
	q       chan *Span
	batches chan spanBatch
	scope   instrumentation.Scope
	inst    instruments

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	exported atomic.Uint64
}

type spanBatch struct {
	spans   []sdktrace.ReadOnlySpan
	tenants []*Tenant
	attrs   []*[]attribute.KeyValue // to recycle after export
}

var attrPool = sync.Pool{New: func() any { s := make([]attribute.KeyValue, 0, 20); return &s }}

func (p *Pipeline) attrSlice(b *spanBatch) []attribute.KeyValue {
	if !p.cfg.RecycleAttributes {
		return make([]attribute.KeyValue, 0, 20)
	}
	sp := attrPool.Get().(*[]attribute.KeyValue)
	b.attrs = append(b.attrs, sp)
	return (*sp)[:0]
}

func recycle(b *spanBatch) {
	for _, sp := range b.attrs {
		clear((*sp)[:cap(*sp)])
		*sp = (*sp)[:0]
		attrPool.Put(sp)
	}
}

// NewPipeline starts the worker goroutines.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = 5 * time.Second
	}
	if cfg.Tenants == nil {
		cfg.Tenants = NewTenants(TenantsConfig{})
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Resource == nil {
		cfg.Resource = resource.Empty()
	}
	p := &Pipeline{
		cfg: cfg, tenants: cfg.Tenants,
		q:       make(chan *Span, cfg.QueueSize),
		batches: make(chan spanBatch, 2),
		scope:   instrumentation.Scope{Name: "github.com/omnirelay/omnirelay/internal/dataplane/telemetry"},
		stop:    make(chan struct{}),
	}
	if cfg.Meter != nil {
		if err := p.inst.init(cfg.Meter); err != nil {
			return nil, fmt.Errorf("telemetry: metric instruments: %w", err)
		}
	}
	p.wg.Add(2)
	go p.work()
	go p.exportLoop()
	return p, nil
}

// Tenants returns the pipeline's tenant table.
func (p *Pipeline) Tenants() *Tenants { return p.tenants }

// ExportedSpans counts spans the exporter accepted (tests, admin).
func (p *Pipeline) ExportedSpans() uint64 { return p.exported.Load() }

func (p *Pipeline) enqueue(s *Span) {
	select {
	case p.q <- s:
	default:
		t := s.tenant
		if t == nil {
			t = p.tenants.deflt
		}
		if s.recording {
			t.drop(sigSpans, rQueue)
		}
		if s.logIt {
			t.drop(sigLogs, rQueue)
		}
		if s.tr.cfg.Metrics {
			t.drop(sigMetrics, rQueue)
		}
		putSpan(s)
	}
}

// Shutdown stops accepting, exports what is queued within ctx and stops
// the goroutines. The exporters themselves are shut down by their owner.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.stop) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("telemetry pipeline shutdown: %w", ctx.Err())
	}
}

func (p *Pipeline) work() {
	defer p.wg.Done()
	defer close(p.batches)
	tick := time.NewTicker(p.cfg.FlushInterval)
	defer tick.Stop()
	var b spanBatch
	flush := func() {
		if len(b.spans) == 0 {
			return
		}
		select {
		case p.batches <- b:
		default:
			// The exporter is still busy with earlier batches (a slow or
			// unreachable collector): drop rather than grow.
			for _, t := range b.tenants {
				t.drop(sigSpans, rQueue)
			}
			recycle(&b)
		}
		b = spanBatch{}
	}
	for {
		select {
		case s := <-p.q:
			p.process(s, &b)
			if len(b.spans) >= p.cfg.BatchSize {
				flush()
			}
		case <-tick.C:
			flush()
		case <-p.stop:
			for {
				select {
				case s := <-p.q:
					p.process(s, &b)
					if len(b.spans) >= p.cfg.BatchSize {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

func (p *Pipeline) exportLoop() {
	defer p.wg.Done()
	for b := range p.batches {
		if p.cfg.Spans == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ExportTimeout)
		err := p.cfg.Spans.ExportSpans(ctx, b.spans)
		cancel()
		if p.cfg.RecycleAttributes {
			recycle(&b)
		}
		if err != nil {
			for _, t := range b.tenants {
				t.drop(sigSpans, rExport)
			}
			p.cfg.Log.Debug("span export failed", "spans", len(b.spans), "error", err)
			continue
		}
		p.exported.Add(uint64(len(b.spans)))
	}
}

func (p *Pipeline) process(s *Span, b *spanBatch) {
	defer putSpan(s)
	t := s.tenant
	if t == nil {
		t = p.tenants.deflt
	}
	if s.recording && p.cfg.Spans != nil {
		b.spans = append(b.spans, p.serverSpan(s, p.attrSlice(b)))
		b.tenants = append(b.tenants, t)
		for i := 0; i < s.nChildren; i++ {
			b.spans = append(b.spans, p.clientSpan(s, s.children[i], p.attrSlice(b)))
			b.tenants = append(b.tenants, t)
		}
	}
	if s.logIt && p.cfg.Logger != nil {
		p.emitLog(s, t)
	}
	if s.tr.cfg.Metrics && p.cfg.Meter != nil {
		p.record(s, t)
	}
}

func toSpanContext(sc SpanContext, ts trace.TraceState, remote bool) trace.SpanContext {
	var fl trace.TraceFlags
	if sc.Sampled {
		fl = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID(sc.TraceID), SpanID: trace.SpanID(sc.SpanID),
		TraceFlags: fl, TraceState: ts, Remote: remote,
	})
}

var protoVersions = map[uint8]string{10: "1.0", 11: "1.1", 20: "2"}

func (p *Pipeline) serverSpan(s *Span, attrs []attribute.KeyValue) sdktrace.ReadOnlySpan {
	var ts trace.TraceState
	if len(s.tracestate) > 0 {
		ts, _ = trace.ParseTraceState(string(s.tracestate))
	}
	method := knownMethod(s.method)
	name := method
	if s.route != "" {
		name = method + " " + s.route
	}
	host, port := splitAuthority(string(s.authority))
	attrs = append(attrs,
		attribute.String("http.request.method", method),
		attribute.String("url.path", string(s.path)),
		attribute.String("server.address", host),
		attribute.String("network.protocol.version", protoVersions[s.proto]),
		attribute.String("omnirelay.listener", s.tr.cfg.Listener),
	)
	if method == "_OTHER" {
		attrs = append(attrs, attribute.String("http.request.method_original", string(s.method)))
	}
	if port > 0 {
		attrs = append(attrs, attribute.Int("server.port", port))
	}
	if s.scheme != 0 {
		attrs = append(attrs, attribute.String("url.scheme", [...]string{"", "http", "https"}[s.scheme]))
	}
	if s.status > 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", s.status))
	}
	if s.route != "" {
		attrs = append(attrs, attribute.String("omnirelay.route", s.route))
	}
	if s.cluster != "" {
		attrs = append(attrs, attribute.String("omnirelay.cluster", s.cluster))
	}
	if s.remote.IsValid() {
		attrs = append(attrs, attribute.String("client.address", s.remote.Addr().String()), attribute.Int("client.port", int(s.remote.Port())))
	}
	if s.flags != "" {
		attrs = append(attrs, attribute.String("omnirelay.response_flags", s.flags))
	}
	if s.tenant != nil {
		attrs = append(attrs, attribute.String("omnirelay.tenant", s.tenant.name))
	}
	if s.grpcStatus >= 0 {
		attrs = append(attrs, attribute.Int("rpc.grpc.status_code", s.grpcStatus))
	}
	st := sdktrace.Status{Code: codes.Unset}
	if s.errType != "" {
		attrs = append(attrs, attribute.String("error.type", s.errType))
		st = sdktrace.Status{Code: codes.Error}
	}
	stub := tracetest.SpanStub{
		Name:                 name,
		SpanContext:          toSpanContext(s.sc, ts, false),
		SpanKind:             trace.SpanKindServer,
		StartTime:            s.start,
		EndTime:              s.end,
		Attributes:           attrs,
		Status:               st,
		ChildSpanCount:       s.nChildren,
		Resource:             p.cfg.Resource,
		InstrumentationScope: p.scope,
	}
	if s.hasParent {
		stub.Parent = toSpanContext(SpanContext{TraceID: s.sc.TraceID, SpanID: s.parent, Sampled: true}, ts, true)
	}
	return stub.Snapshot()
}

func (p *Pipeline) clientSpan(s, c *Span, attrs []attribute.KeyValue) sdktrace.ReadOnlySpan {
	method := knownMethod(c.method)
	host, port := splitAuthority(c.host)
	attrs = append(attrs,
		attribute.String("http.request.method", method),
		attribute.String("url.path", string(c.path)),
		attribute.String("server.address", host),
		attribute.String("network.protocol.version", protoVersions[c.proto]),
		attribute.String("omnirelay.cluster", c.cluster),
		attribute.String("omnirelay.listener", s.tr.cfg.Listener),
	)
	if port > 0 {
		attrs = append(attrs, attribute.Int("server.port", port))
	}
	if c.attempt > 1 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", c.attempt-1))
	}
	if c.status > 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", c.status))
	}
	if s.route != "" {
		attrs = append(attrs, attribute.String("omnirelay.route", s.route))
	}
	if c.grpcStatus >= 0 {
		attrs = append(attrs, attribute.Int("rpc.grpc.status_code", c.grpcStatus))
	}
	st := sdktrace.Status{Code: codes.Unset}
	if c.errType != "" {
		attrs = append(attrs, attribute.String("error.type", c.errType))
		st = sdktrace.Status{Code: codes.Error}
	}
	end := c.end
	if end.IsZero() {
		end = s.end
	}
	stub := tracetest.SpanStub{
		Name:                 method,
		SpanContext:          toSpanContext(c.sc, trace.TraceState{}, false),
		Parent:               toSpanContext(s.sc, trace.TraceState{}, false),
		SpanKind:             trace.SpanKindClient,
		StartTime:            c.start,
		EndTime:              end,
		Attributes:           attrs,
		Status:               st,
		Resource:             p.cfg.Resource,
		InstrumentationScope: p.scope,
	}
	return stub.Snapshot()
}

func (p *Pipeline) emitLog(s *Span, t *Tenant) {
	var r otellog.Record
	r.SetEventName("omnirelay.access")
	r.SetTimestamp(s.start)
	r.SetObservedTimestamp(s.end)
	r.SetSeverity(otellog.SeverityInfo)
	r.SetSeverityText("INFO")
	r.SetBody(attribute.StringValue("access"))
	r.AddAttributes(
		attribute.String("listener", s.tr.cfg.Listener),
		attribute.String("method", string(s.method)),
		attribute.String("authority", string(s.authority)),
		attribute.String("path", string(s.path)),
		attribute.String("protocol", protoNames[s.proto]),
		attribute.Int("status", s.status),
		attribute.String("response_flags", s.flags),
		attribute.Int64("bytes_received", s.bytesRecv),
		attribute.Int64("bytes_sent", s.bytesSent),
		attribute.Int64("duration_us", s.end.Sub(s.start).Microseconds()),
		attribute.String("route", s.route),
		attribute.String("upstream_cluster", s.cluster),
		attribute.String("upstream_host", s.host),
		attribute.Int("attempts", s.attempts),
		attribute.String("downstream_remote", s.remote.String()),
		attribute.String("peer_identity", s.peer),
		attribute.String("user_agent", string(s.userAgent)),
		attribute.String("request_id", string(s.requestID)),
		attribute.String("tenant", t.name),
	)
	ctx := context.Background()
	if s.sc.TraceID.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, toSpanContext(s.sc, trace.TraceState{}, false))
	}
	p.cfg.Logger.Emit(ctx, r)
}

var protoNames = map[uint8]string{10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}

func knownMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return "_OTHER"
}

func splitAuthority(a string) (string, int) {
	if a == "" {
		return "", 0
	}
	i := len(a) - 1
	for i >= 0 && a[i] >= '0' && a[i] <= '9' {
		i--
	}
	if i >= 0 && a[i] == ':' && i < len(a)-1 && (a[0] != '[' || a[i-1] == ']') {
		port := 0
		for _, c := range a[i+1:] {
			port = port*10 + int(c-'0')
			if port > 65535 {
				return a, 0
			}
		}
		return a[:i], port
	}
	return a, 0
}
