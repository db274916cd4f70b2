// Package telemetry is the request-path side of OpenTelemetry in the data
// plane: W3C trace-context (and optional B3) propagation, sampling, a server
// span per downstream request and a client span per upstream attempt,
// OTLP access-log records and OTLP request metrics, all bounded per tenant.
//
// # Why not the SDK's spans on the request path
//
// The OTel SDK's Tracer.Start allocates a span, its attribute slice, a
// context and (with a parent) a wrapper per call, and takes a lock per
// attribute set; an unsampled SDK span still allocates its context. The
// proxy's budget is 0 allocations and <= 0.3 µs unsampled, so the request
// path here records plain values (ids, a few byte slices copied into a
// pooled arena, status, timings) into a pooled Span. The Pipeline's worker
// goroutine turns each finished request into SDK ReadOnlySpans
// (tracetest.SpanStub.Snapshot, the SDK's supported way to build one), log
// records for the SDK LoggerProvider and measurements on SDK instruments,
// and hands span batches to an OTLP exporter. BenchmarkTracing and
// BenchmarkExportWorker measure both halves.
//
// # Bounds
//
// Everything that grows is capped: the queue to the worker (a full queue
// drops and counts, the request never waits), the batches waiting for the
// exporter, the attempts recorded per request, the tenant table (past its
// cap every new tenant shares "_overflow"), and each tenant's metric series
// (past MaxSeries a tenant's measurements go to its overflow series carrying
// otel.metric.overflow=true, as the SDK does for its own cardinality limit).
// Each tenant has token buckets for spans/s and log records/s; drops are
// counted per tenant, signal and reason (omnirelay_telemetry_dropped_total).
//
// # Contract
//
// A Tracer is immutable, built per listener per config version; a nil
// Tracer is telemetry off and costs a nil check. Start runs at stream start
// on the stream's goroutine, StartAttempt/EndAttempt around each upstream
// try on the same goroutine, End once at stream completion; none of them
// blocks. A Pipeline outlives config versions and is stopped by Shutdown.
package telemetry
