package translate

import (
	"fmt"
	"math"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otelalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	samplersv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/samplers/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/otelx/otelcfg"
)

// Sampler extension names of Envoy's OpenTelemetry tracer.
const (
	nameSamplerAlwaysOn    = "envoy.tracers.opentelemetry.samplers.always_on"
	nameSamplerRatio       = "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
	nameSamplerParentBased = "envoy.tracers.opentelemetry.samplers.parent_based"
)

// telemetry adds the listener's tracing provider, OpenTelemetry access
// logger and the OmniRelay telemetry extension filter (first in the chain,
// optional so that Envoy skips it) to m.
func (t *translator) telemetry(m *hcmv3.HttpConnectionManager) error {
	tc := t.cfg.Telemetry
	if tc == nil {
		return nil
	}
	cluster := tc.Collector.Cluster
	grpcSvc := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
		Timeout:         duration(tc.Collector.Timeout),
	}
	httpSvc := func(path string) *corev3.HttpService {
		return &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              "http://" + cluster + path,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
			Timeout:          duration(tc.Collector.Timeout),
		}}
	}
	isHTTP := tc.Collector.Protocol == "http"
	ext := &otelcfg.ExtensionConfig{ServiceName: tc.ServiceName}
	if tr := tc.Tracing; tr != nil {
		sampler, err := envoySampler(tr)
		if err != nil {
			return err
		}
		oc := &tracev3.OpenTelemetryConfig{ServiceName: tc.ServiceName, Sampler: sampler}
		if isHTTP {
			oc.HttpService = httpSvc("/v1/traces")
		} else {
			oc.GrpcService = grpcSvc
		}
		a, err := typed(oc)
		if err != nil {
			return err
		}
		m.Tracing = &hcmv3.HttpConnectionManager_Tracing{
			Provider:          &tracev3.Tracing_Http{Name: otelcfg.TracerName, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}},
			RandomSampling:    &typev3.Percent{Value: 100},
			SpawnUpstreamSpan: wrapperspb.Bool(true),
		}
		ext.Sampler = tr.Sampler
		ext.Propagation = tr.Propagation
	}
	if tc.Logs != nil {
		lc := &otelalsv3.OpenTelemetryAccessLogConfig{
			CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{LogName: "omnirelay.access", GrpcService: grpcSvc, TransportApiVersion: corev3.ApiVersion_V3},
			StatPrefix:   "omnirelay_otel",
		}
		if isHTTP {
			// common_config requires a grpc_service: OTLP/HTTP uses the
			// newer top-level fields.
			lc.CommonConfig = nil
			lc.LogName = "omnirelay.access"
			lc.HttpService = httpSvc("/v1/logs")
		}
		a, err := typed(lc)
		if err != nil {
			return err
		}
		m.AccessLog = append(m.AccessLog, &accesslogv3.AccessLog{Name: otelcfg.AccessLoggerName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}})
	}
	if mc := tc.Metrics; mc != nil {
		if tc.Tracing == nil && tc.Logs == nil {
			ext.Collector = &otelcfg.Collector{Cluster: cluster, Protocol: tc.Collector.Protocol}
			if tc.Collector.Timeout != nil {
				ext.Collector.TimeoutMs = tc.Collector.Timeout.Std().Milliseconds()
			}
		}
		ext.Metrics = &otelcfg.Metrics{Temporality: mc.Temporality}
		if mc.Interval != nil {
			ext.Metrics.IntervalMs = mc.Interval.Std().Milliseconds()
		}
	}
	if tn := tc.Tenants; tn != nil {
		ext.Tenants = &otelcfg.Tenants{
			From:       otelcfg.TenantFrom(tn.From),
			MaxTenants: tn.MaxTenants,
		}
		if tn.Default != nil {
			b := otelcfg.Budget(*tn.Default)
			ext.Tenants.Default = &b
		}
		if len(tn.Budgets) > 0 {
			ext.Tenants.Budgets = map[string]otelcfg.Budget{}
			for k, v := range tn.Budgets {
				ext.Tenants.Budgets[k] = otelcfg.Budget(v)
			}
		}
	}
	a, err := otelcfg.EncodeExtension(ext)
	if err != nil {
		return fmt.Errorf("telemetry extension: %w", err)
	}
	f := &hcmv3.HttpFilter{Name: otelcfg.ExtensionFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}, IsOptional: true}
	m.HttpFilters = append([]*hcmv3.HttpFilter{f}, m.HttpFilters...)
	return nil
}

func fraction(r float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(r * 1e6)), Denominator: typev3.FractionalPercent_MILLION}
}

// envoySampler is the sampler of Envoy's OpenTelemetry tracer closest to
// ours (exact for all four kinds).
func envoySampler(tr *config.TelemetryTracing) (*corev3.TypedExtensionConfig, error) {
	ratio := func(r float64) (*corev3.TypedExtensionConfig, error) {
		a, err := typed(&samplersv3.TraceIdRatioBasedSamplerConfig{SamplingPercentage: fraction(r)})
		return &corev3.TypedExtensionConfig{Name: nameSamplerRatio, TypedConfig: a}, err
	}
	switch tr.Sampler {
	case config.SamplerAlways:
		a, err := typed(&samplersv3.AlwaysOnSamplerConfig{})
		return &corev3.TypedExtensionConfig{Name: nameSamplerAlwaysOn, TypedConfig: a}, err
	case config.SamplerNever:
		return ratio(0)
	case config.SamplerRatio:
		return ratio(tr.EffectiveRatio())
	}
	inner, err := ratio(tr.EffectiveRatio())
	if err != nil {
		return nil, err
	}
	a, err := typed(&samplersv3.ParentBasedSamplerConfig{WrappedSampler: inner})
	return &corev3.TypedExtensionConfig{Name: nameSamplerParentBased, TypedConfig: a}, err
}

// routeTelemetry sets a route's tracing override (its metadata, which the
// route_metadata tenant source reads, is translated with the route).
func routeTelemetry(out *routev3.Route, r *config.Route) error {
	if r.Tracing != nil && r.Tracing.SamplingRatio != nil {
		out.Tracing = &routev3.Tracing{RandomSampling: fraction(*r.Tracing.SamplingRatio)}
	}
	return nil
}

// routeMetadata translates Envoy-shaped metadata of a route or virtual host.
func routeMetadata(m *config.Metadata) (*corev3.Metadata, error) {
	md, err := m.Structs()
	if err != nil || md == nil {
		return nil, err
	}
	return &corev3.Metadata{FilterMetadata: md}, nil
}
