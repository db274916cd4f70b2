package config

import (
	"github.com/omnirelay/omnirelay/internal/shared/otelx/otelcfg"
)

// Telemetry sends traces, metrics and access-log records over OTLP to a
// collector named as a cluster, with per-tenant budgets (docs/telemetry.md).
// It applies to every http and https listener.
type Telemetry struct {
	Collector TelemetryCollector `yaml:"collector"`
	// ServiceName is the resource's service.name (default "omnirelay").
	ServiceName string            `yaml:"service_name"`
	Tracing     *TelemetryTracing `yaml:"tracing"`
	Metrics     *TelemetryMetrics `yaml:"metrics"`
	// Logs, when present, sends one OTLP log record per request.
	Logs    *TelemetryLogs    `yaml:"logs"`
	Tenants *TelemetryTenants `yaml:"tenants"`
}

// TelemetryCollector is where OTLP goes.
type TelemetryCollector struct {
	// Cluster names the collector's cluster in clusters.
	Cluster string `yaml:"cluster"`
	// Protocol is grpc (OTLP/gRPC, the default) or http (OTLP/HTTP).
	Protocol string `yaml:"protocol"`
	// Timeout bounds one export (default 5s).
	Timeout *Duration `yaml:"timeout"`
}

// Samplers of tracing.sampler.
const (
	SamplerParentBased = "parent_based"
	SamplerRatio       = "ratio"
	SamplerAlways      = "always"
	SamplerNever       = "never"
)

// TelemetryTracing turns spans on.
type TelemetryTracing struct {
	// Sampler is parent_based (default: follow the caller, ratio for new
	// traces), ratio, always or never.
	Sampler string `yaml:"sampler"`
	// Ratio of new traces sampled, in [0, 1] (default 1).
	Ratio *float64 `yaml:"ratio"`
	// Propagation lists the header formats read and written: w3c (default),
	// b3 (single header), b3multi (X-B3-*).
	Propagation []string `yaml:"propagation"`
}

// EffectiveRatio returns Ratio or 1.
func (t *TelemetryTracing) EffectiveRatio() float64 {
	if t.Ratio == nil {
		return 1
	}
	return *t.Ratio
}

// TelemetryMetrics turns OTLP metrics on.
type TelemetryMetrics struct {
	// Interval between exports (default 10s).
	Interval *Duration `yaml:"interval"`
	// Temporality is cumulative (default) or delta.
	Temporality string `yaml:"temporality"`
}

// TelemetryLogs turns OTLP access-log records on; it has no fields yet.
type TelemetryLogs struct{}

// TelemetryTenants derives a tenant per request and budgets what each emits.
type TelemetryTenants struct {
	From TenantFrom `yaml:"from"`
	// MaxTenants caps the tenant table (default 10000); later tenants share
	// the "_overflow" tenant.
	MaxTenants int `yaml:"max_tenants"`
	// Default is the budget of tenants without their own.
	Default *TenantBudget `yaml:"default"`
	// Budgets are per-tenant budgets by tenant name.
	Budgets map[string]TenantBudget `yaml:"budgets"`
}

// TenantFrom names exactly one tenant source.
type TenantFrom struct {
	Header        string `yaml:"header"`
	TrustDomain   bool   `yaml:"trust_domain"`
	SPIFFEID      bool   `yaml:"spiffe_id"`
	RouteMetadata string `yaml:"route_metadata"`
	CEL           string `yaml:"cel"`
}

// TenantBudget is what one tenant may emit; a zero or absent rate is
// unlimited.
type TenantBudget struct {
	SpansPerSecond float64 `yaml:"spans_per_second"`
	SpanBurst      float64 `yaml:"span_burst"`
	LogsPerSecond  float64 `yaml:"logs_per_second"`
	LogBurst       float64 `yaml:"log_burst"`
	// MaxSeries caps metric series per instrument (default 1000).
	MaxSeries int `yaml:"max_series"`
}

// RouteTracing overrides tracing for one route.
type RouteTracing struct {
	// SamplingRatio replaces tracing.ratio for new traces on this route.
	SamplingRatio *float64 `yaml:"sampling_ratio"`
}

func (v *validator) telemetry(t *Telemetry) {
	if t == nil {
		return
	}
	const p = "telemetry"
	if t.Collector.Cluster == "" {
		v.errf(p+".collector.cluster", "collector cluster is required")
	} else {
		v.clusterRef(p+".collector.cluster", t.Collector.Cluster)
	}
	switch t.Collector.Protocol {
	case "", "grpc", "http":
	default:
		v.errf(p+".collector.protocol", "unknown protocol %q (want grpc or http)", t.Collector.Protocol)
	}
	v.positive(p+".collector.timeout", t.Collector.Timeout)
	if t.Tracing == nil && t.Metrics == nil && t.Logs == nil {
		v.errf(p, "telemetry needs at least one of tracing, metrics, logs")
	}
	if tr := t.Tracing; tr != nil {
		switch tr.Sampler {
		case "", SamplerParentBased, SamplerRatio, SamplerAlways, SamplerNever:
		default:
			v.errf(p+".tracing.sampler", "unknown sampler %q (want parent_based, ratio, always or never)", tr.Sampler)
		}
		v.ratio(p+".tracing.ratio", tr.Ratio)
		for i, pr := range tr.Propagation {
			switch pr {
			case "w3c", "b3", "b3multi":
			default:
				v.errf(idx(p+".tracing.propagation", i), "unknown propagation %q (want w3c, b3 or b3multi)", pr)
			}
		}
	}
	if m := t.Metrics; m != nil {
		v.positive(p+".metrics.interval", m.Interval)
		switch m.Temporality {
		case "", "cumulative", "delta":
		default:
			v.errf(p+".metrics.temporality", "unknown temporality %q (want cumulative or delta)", m.Temporality)
		}
	}
	if tn := t.Tenants; tn != nil {
		v.tenants(tn, p+".tenants")
	}
}

func (v *validator) ratio(p string, r *float64) {
	if r != nil && (*r < 0 || *r > 1 || *r != *r) {
		v.errf(p, "ratio %v is not in [0, 1]", *r)
	}
}

func (v *validator) tenants(tn *TelemetryTenants, p string) {
	f := tn.From
	n := 0
	for _, set := range []bool{f.Header != "", f.TrustDomain, f.SPIFFEID, f.RouteMetadata != "", f.CEL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.errf(p+".from", "tenants.from needs exactly one of header, trust_domain, spiffe_id, route_metadata, cel (found %d)", n)
	}
	if f.Header != "" {
		v.headerName(p+".from.header", f.Header)
	}
	if f.CEL != "" {
		if _, err := otelcfg.CompileTenantCEL(f.CEL); err != nil {
			v.errf(p+".from.cel", "tenant expression: %v", err)
		}
	}
	if tn.MaxTenants < 0 {
		v.errf(p+".max_tenants", "max_tenants %d is negative", tn.MaxTenants)
	}
	if tn.Default != nil {
		v.budget(tn.Default, p+".default")
	}
	for name, b := range tn.Budgets {
		if name == "" {
			v.errf(p+".budgets", "empty tenant name")
		}
		v.budget(&b, p+".budgets."+name)
	}
}

func (v *validator) budget(b *TenantBudget, p string) {
	for _, f := range []struct {
		name string
		val  float64
	}{{"spans_per_second", b.SpansPerSecond}, {"span_burst", b.SpanBurst}, {"logs_per_second", b.LogsPerSecond}, {"log_burst", b.LogBurst}} {
		if f.val < 0 || f.val != f.val {
			v.errf(p+"."+f.name, "%s %v is negative", f.name, f.val)
		}
	}
	if b.MaxSeries < 0 {
		v.errf(p+".max_series", "max_series %d is negative", b.MaxSeries)
	}
}
