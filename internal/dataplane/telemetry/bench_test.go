package telemetry

import (
	"context"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTracing measures what telemetry adds to one proxied request (server
// span start/end, one upstream attempt, propagation headers) for tracing off,
// configured but unsampled, 1 % and 100 % sampling. ns/op and allocs/op are
// the request path's; cpu-ns/op is the whole process's CPU per request
// (the export worker included, but it drops what does not fit in its queue:
// dropped/op says how much; BenchmarkExportWorker measures the worker's
// cost per request on its own).
func BenchmarkTracing(b *testing.B) {
	for _, bc := range []struct {
		name  string
		on    bool
		kind  SamplerKind
		ratio float64
	}{
		{name: "off"},
		{name: "unsampled", on: true, kind: Ratio, ratio: 0},
		{name: "ratio-1pct", on: true, kind: Ratio, ratio: 0.01},
		{name: "ratio-100pct", on: true, kind: AlwaysOn, ratio: 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var tr *Tracer
			var p *Pipeline
			if bc.on {
				var err error
				p, err = NewPipeline(PipelineConfig{Spans: discardExporter{}, QueueSize: 1 << 16, RecycleAttributes: true})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Shutdown(context.Background())
				s, _ := NewSampler(bc.kind, bc.ratio)
				tr = NewTracer(p, TracerConfig{Listener: "l", Spans: true, Sampler: s})
			}
			req := &message.Request{Method: []byte("GET"), Path: []byte("/api/v1/items?id=7"), Authority: []byte("svc:8080"), ProtoMajor: 1, ProtoMinor: 1}
			var resp message.Response
			resp.Status = 200
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				// As the codec does per request: headers reset, then parsed.
				req.Header.Reset()
				req.Header.Add("user-agent", "bench")
				req.Header.Add("accept", "*/*")
				start := time.Now()
				s := tr.Start(req, "route", "", start)
				a := s.StartAttempt(req, "cluster", "10.0.0.1:80")
				a.EndAttempt(200, &resp, nil)
				s.End(req, Outcome{Status: 200, Attempts: 1, UpstreamCluster: "cluster"})
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			if p != nil {
				b.ReportMetric(float64(p.Tenants().Dropped(DefaultTenant, "spans", ReasonQueueFull))/float64(b.N), "dropped/op")
			}
		})
	}
}

// BenchmarkExportWorker measures the off-path cost of one sampled request:
// its server span and one client span turned into SDK ReadOnlySpans
// (exported to a discarding exporter), with no goroutine hand-off.
func BenchmarkExportWorker(b *testing.B) {
	p, err := NewPipeline(PipelineConfig{Spans: discardExporter{}, RecycleAttributes: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	s0, _ := NewSampler(AlwaysOn, 1)
	tr := NewTracer(p, TracerConfig{Listener: "l", Spans: true, Sampler: s0})
	req := &message.Request{Method: []byte("GET"), Path: []byte("/api/v1/items?id=7"), Authority: []byte("svc:8080"), ProtoMajor: 1, ProtoMinor: 1}
	var resp message.Response
	resp.Status = 200
	var batch spanBatch
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		req.Header.Reset()
		s := tr.Start(req, "route", "", time.Now())
		a := s.StartAttempt(req, "cluster", "10.0.0.1:80")
		a.EndAttempt(200, &resp, nil)
		s.end = time.Now()
		s.status = 200
		p.process(s, &batch)
		if len(batch.spans) >= 512 {
			_ = p.cfg.Spans.ExportSpans(context.Background(), batch.spans)
			recycle(&batch)
			batch = spanBatch{}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
