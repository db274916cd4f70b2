// Package otelcfg holds what the config, the translator and the data plane
// share about telemetry without linking the OTel SDK: the xDS names, the
// OmniRelay telemetry extension's wire config and the tenant CEL environment.
package otelcfg

import (
	"bytes"
	"encoding/json"
	"fmt"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Names of the telemetry pieces in xDS. Envoy's own shapes carry what Envoy
// has (the HCM tracing provider naming the collector cluster, per-route
// sampling, the OpenTelemetry access logger); what Envoy has no field for
// (sampler kind beyond ratio, B3 propagation, OTLP metrics, per-tenant
// budgets) travels in an optional HTTP filter whose typed config is an
// xds.type.v3.TypedStruct of ExtensionTypeURL. Envoy skips the filter (it is
// marked optional); OmniRelay reads it and removes it from the chain.
const (
	ExtensionFilterName = "omnirelay.telemetry"
	ExtensionTypeURL    = "omnirelay.io/omnirelay.telemetry.v1.Telemetry"
	TracerName          = "envoy.tracers.opentelemetry"
	AccessLoggerName    = "envoy.access_loggers.open_telemetry"
	// RouteMetadataNamespace is the filter_metadata key under which routes
	// and virtual hosts carry values for the route_metadata tenant source.
	RouteMetadataNamespace = "omnirelay.telemetry"
)

// ExtensionConfig is the OmniRelay telemetry extension's config (JSON field
// names as in the TypedStruct). Unknown fields are rejected.
type ExtensionConfig struct {
	// Sampler is parent_based, ratio, always or never (the ratio itself is
	// in the HCM tracing provider's sampler).
	Sampler     string   `json:"sampler,omitempty"`
	Propagation []string `json:"propagation,omitempty"`
	Metrics     *Metrics `json:"metrics,omitempty"`
	Tenants     *Tenants `json:"tenants,omitempty"`
	ServiceName string   `json:"service_name,omitempty"`
	// Collector names the collector for metrics when neither the tracer
	// nor the access logger does (a listener with metrics only).
	Collector *Collector `json:"collector,omitempty"`
}

// Collector is the collector's cluster and OTLP transport.
type Collector struct {
	Cluster   string `json:"cluster"`
	Protocol  string `json:"protocol,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
}

// Metrics turns OTLP metrics on.
type Metrics struct {
	IntervalMs  int64  `json:"interval_ms,omitempty"`
	Temporality string `json:"temporality,omitempty"`
}

// Tenants says how tenants are derived and what each may emit.
type Tenants struct {
	From       TenantFrom        `json:"from"`
	MaxTenants int               `json:"max_tenants,omitempty"`
	Default    *Budget           `json:"default,omitempty"`
	Budgets    map[string]Budget `json:"budgets,omitempty"`
}

// TenantFrom names exactly one source.
type TenantFrom struct {
	Header        string `json:"header,omitempty"`
	TrustDomain   bool   `json:"trust_domain,omitempty"`
	SPIFFEID      bool   `json:"spiffe_id,omitempty"`
	RouteMetadata string `json:"route_metadata,omitempty"`
	CEL           string `json:"cel,omitempty"`
}

// Budget is one tenant's allowance (0 = unlimited).
type Budget struct {
	SpansPerSecond float64 `json:"spans_per_second,omitempty"`
	SpanBurst      float64 `json:"span_burst,omitempty"`
	LogsPerSecond  float64 `json:"logs_per_second,omitempty"`
	LogBurst       float64 `json:"log_burst,omitempty"`
	MaxSeries      int     `json:"max_series,omitempty"`
}

// EncodeExtension packs c as the extension filter's typed config.
func EncodeExtension(c *ExtensionConfig) (*anypb.Any, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(js, st); err != nil {
		return nil, err
	}
	return anypb.New(&xdstypev3.TypedStruct{TypeUrl: ExtensionTypeURL, Value: st})
}

// DecodeExtension unpacks and strictly decodes the extension filter's
// typed config.
func DecodeExtension(a *anypb.Any) (*ExtensionConfig, error) {
	ts := &xdstypev3.TypedStruct{}
	if err := a.UnmarshalTo(ts); err != nil {
		return nil, fmt.Errorf("%s: %w", ExtensionFilterName, err)
	}
	if ts.GetTypeUrl() != ExtensionTypeURL {
		return nil, fmt.Errorf("%s: type_url %q, want %q", ExtensionFilterName, ts.GetTypeUrl(), ExtensionTypeURL)
	}
	js, err := protojson.Marshal(ts.GetValue())
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	c := &ExtensionConfig{}
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %w", ExtensionFilterName, err)
	}
	return c, nil
}
