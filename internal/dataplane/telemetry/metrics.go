package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instruments recorded over OTLP (docs/telemetry.md lists them). They are
// recorded by the export worker, so attribute sets are built off the
// request path and each (tenant, attributes) series is cached there.
const (
	instServer = iota
	instRoute
	instClient
	instRetries
	numInst
)

var instNames = [numInst]string{"http.server.request.duration", "omnirelay.request.duration", "http.client.request.duration", "omnirelay.upstream.retries"}

// durationBuckets are the semantic conventions' advice for HTTP durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

type instruments struct {
	hist    [instRetries]metric.Float64Histogram
	retries metric.Int64Counter
}

func (in *instruments) init(m metric.Meter) error {
	var errs []error
	var err error
	in.hist[instServer], err = m.Float64Histogram(instNames[instServer], metric.WithUnit("s"),
		metric.WithDescription("Duration of downstream HTTP requests."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.hist[instRoute], err = m.Float64Histogram(instNames[instRoute], metric.WithUnit("s"),
		metric.WithDescription("Duration of downstream requests per route, cluster and status class."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.hist[instClient], err = m.Float64Histogram(instNames[instClient], metric.WithUnit("s"),
		metric.WithDescription("Duration of upstream HTTP attempts."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.retries, err = m.Int64Counter(instNames[instRetries], metric.WithUnit("{retry}"),
		metric.WithDescription("Upstream attempts beyond the first, per cluster."))
	errs = append(errs, err)
	return errors.Join(errs...)
}

type seriesKey struct {
	inst      uint8
	proto     uint8
	status    int
	a, b, c   string
	method    string
	errorType string
}

type seriesEntry struct {
	opt metric.MeasurementOption
}

// series returns the cached measurement option for key, building it with
// attrs on first use, or the tenant's overflow series once the tenant holds
// MaxSeries series of that instrument.
func (t *Tenant) seriesFor(key seriesKey, attrs func() []attribute.KeyValue) metric.MeasurementOption {
	t.smu.Lock()
	defer t.smu.Unlock()
	if e, ok := t.series[key]; ok {
		return e.opt
	}
	if t.series == nil {
		t.series = map[seriesKey]*seriesEntry{}
	}
	if t.nseries[key.inst] >= t.maxSeries() {
		t.drop(sigMetrics, rSeries)
		if t.overflow[key.inst] == nil {
			t.overflow[key.inst] = metric.WithAttributeSet(attribute.NewSet(
				attribute.String("omnirelay.tenant", t.name), attribute.Bool("otel.metric.overflow", true)))
		}
		return t.overflow[key.inst]
	}
	t.nseries[key.inst]++
	kv := append(attrs(), attribute.String("omnirelay.tenant", t.name))
	e := &seriesEntry{opt: metric.WithAttributeSet(attribute.NewSet(kv...))}
	t.series[key] = e
	return e.opt
}

func (t *Tenant) maxSeries() int {
	t.mu.Lock()
	n := t.budget.MaxSeries
	t.mu.Unlock()
	return n
}

var statusClasses = [...]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(s int) string {
	if s >= 100 && s < 600 {
		return statusClasses[s/100]
	}
	return "none"
}

func (p *Pipeline) record(s *Span, t *Tenant) {
	ctx := context.Background()
	listener := s.tr.cfg.Listener
	method := knownMethod(s.method)
	in := &p.inst
	d := s.end.Sub(s.start).Seconds()
	opt := t.seriesFor(seriesKey{inst: instServer, proto: s.proto, status: s.status, a: listener, b: s.route, method: method, errorType: s.errType},
		func() []attribute.KeyValue {
			kv := []attribute.KeyValue{
				attribute.String("http.request.method", method),
				attribute.String("network.protocol.version", protoVersions[s.proto]),
				attribute.String("omnirelay.listener", listener),
				attribute.String("omnirelay.route", s.route),
			}
			if s.status > 0 {
				kv = append(kv, attribute.Int("http.response.status_code", s.status))
			}
			if s.errType != "" {
				kv = append(kv, attribute.String("error.type", s.errType))
			}
			return kv
		})
	in.hist[instServer].Record(ctx, d, opt)
	class := statusClass(s.status)
	opt = t.seriesFor(seriesKey{inst: instRoute, a: listener, b: s.route, c: s.cluster, method: class},
		func() []attribute.KeyValue {
			return []attribute.KeyValue{
				attribute.String("omnirelay.listener", listener),
				attribute.String("omnirelay.route", s.route),
				attribute.String("omnirelay.cluster", s.cluster),
				attribute.String("omnirelay.status_class", class),
			}
		})
	in.hist[instRoute].Record(ctx, d, opt)
	for i := 0; i < s.nChildren; i++ {
		c := s.children[i]
		end := c.end
		if end.IsZero() {
			end = s.end
		}
		cm := knownMethod(c.method)
		opt = t.seriesFor(seriesKey{inst: instClient, proto: c.proto, status: c.status, a: c.cluster, method: cm, errorType: c.errType},
			func() []attribute.KeyValue {
				kv := []attribute.KeyValue{
					attribute.String("http.request.method", cm),
					attribute.String("network.protocol.version", protoVersions[c.proto]),
					attribute.String("omnirelay.cluster", c.cluster),
				}
				if c.status > 0 {
					kv = append(kv, attribute.Int("http.response.status_code", c.status))
				}
				if c.errType != "" {
					kv = append(kv, attribute.String("error.type", c.errType))
				}
				return kv
			})
		in.hist[instClient].Record(ctx, end.Sub(c.start).Seconds(), opt)
	}
	if s.nChildren > 1 {
		cl := s.children[0].cluster
		opt = t.seriesFor(seriesKey{inst: instRetries, a: cl}, func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("omnirelay.cluster", cl)}
		})
		in.retries.Add(ctx, int64(s.nChildren-1), opt)
	}
}
