package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	otelalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	samplersv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/samplers/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/telemetry"
	"github.com/omnirelay/omnirelay/internal/shared/otelx"
	"github.com/omnirelay/omnirelay/internal/shared/otelx/otelcfg"
)

const otelAccessLogType = "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig"

// telemetryHub holds the OTLP exporters and pipelines of a runtime. They
// outlive config versions (a reload that keeps the collector keeps its
// connection, queues, tenant buckets and counters) and are stopped by
// Runtime.Shutdown. It is used with Runtime.mu held.
type telemetryHub struct {
	tenants *telemetry.Tenants
	byKey   map[string]*telemetryEntry
	once    sync.Once
}

type telemetryEntry struct {
	prov *otelx.Providers
	pipe *telemetry.Pipeline
}

// collectorSpec is what one listener's xDS says about its collector.
type collectorSpec struct {
	cluster  string
	protocol otelx.Protocol
	timeout  time.Duration
	service  string
	spans    bool
	logs     bool
	metrics  *otelcfg.Metrics
}

func (c *collectorSpec) key() string {
	m := "-"
	if c.metrics != nil {
		m = fmt.Sprintf("%d/%s", c.metrics.IntervalMs, c.metrics.Temporality)
	}
	return fmt.Sprintf("%s|%s|%s|%s|%t|%t|%s", c.cluster, c.protocol, c.timeout, c.service, c.spans, c.logs, m)
}

// tracer compiles a listener's telemetry (HCM tracing, the OpenTelemetry
// access logger, the OmniRelay telemetry extension) into a Tracer; nil when
// the listener has none.
func (rt *Runtime) tracer(lname string, hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration) (*telemetry.Tracer, error) {
	var ext *otelcfg.ExtensionConfig
	for _, hf := range hcm.GetHttpFilters() {
		if hf.GetName() == otelcfg.ExtensionFilterName {
			var err error
			if ext, err = otelcfg.DecodeExtension(hf.GetTypedConfig()); err != nil {
				return nil, err
			}
		}
	}
	var spec collectorSpec
	var oc *tracev3.OpenTelemetryConfig
	if tr := hcm.GetTracing(); tr != nil && tr.GetProvider() != nil {
		if tr.GetProvider().GetName() != otelcfg.TracerName {
			return nil, fmt.Errorf("tracing provider %q is not supported (want %s)", tr.GetProvider().GetName(), otelcfg.TracerName)
		}
		oc = &tracev3.OpenTelemetryConfig{}
		if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(oc); err != nil {
			return nil, fmt.Errorf("tracing provider: %w", err)
		}
		if err := spec.from(oc.GetGrpcService(), oc.GetHttpService()); err != nil {
			return nil, fmt.Errorf("tracing provider: %w", err)
		}
		spec.spans = true
		spec.service = oc.GetServiceName()
	}
	for i, al := range hcm.GetAccessLog() {
		if typeName(al.GetTypedConfig()) != otelAccessLogType {
			continue
		}
		lc := &otelalsv3.OpenTelemetryAccessLogConfig{}
		if err := al.GetTypedConfig().UnmarshalTo(lc); err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		gs := lc.GetGrpcService()
		if gs == nil {
			gs = lc.GetCommonConfig().GetGrpcService()
		}
		var ls collectorSpec
		if err := ls.from(gs, lc.GetHttpService()); err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		if spec.cluster != "" && (ls.cluster != spec.cluster || ls.protocol != spec.protocol) {
			return nil, fmt.Errorf("access_log[%d]: collector %s/%s differs from the tracing provider's %s/%s (one collector per listener)", i, ls.cluster, ls.protocol, spec.cluster, spec.protocol)
		}
		if spec.cluster == "" {
			spec.cluster, spec.protocol, spec.timeout = ls.cluster, ls.protocol, ls.timeout
		}
		spec.logs = true
	}
	if ext != nil {
		spec.metrics = ext.Metrics
		if ext.ServiceName != "" {
			spec.service = ext.ServiceName
		}
	}
	if spec.cluster == "" && ext != nil && ext.Collector != nil {
		spec.cluster, spec.protocol = ext.Collector.Cluster, otelx.Protocol(ext.Collector.Protocol)
		if spec.protocol == "" {
			spec.protocol = otelx.GRPC
		}
		spec.timeout = time.Duration(ext.Collector.TimeoutMs) * time.Millisecond
	}
	if !spec.spans && !spec.logs && spec.metrics == nil {
		return nil, nil
	}
	if spec.cluster == "" {
		return nil, errors.New("telemetry metrics need a collector: the tracing provider, the OpenTelemetry access logger or the telemetry extension's collector")
	}
	cfg := telemetry.TracerConfig{Listener: lname, Spans: spec.spans, Logs: spec.logs, Metrics: spec.metrics != nil}
	var err error
	if cfg.Sampler, cfg.RouteSamplers, err = samplers(oc, ext, hcm, rc); err != nil {
		return nil, err
	}
	if ext != nil {
		for _, p := range ext.Propagation {
			switch p {
			case "w3c":
				cfg.Propagation |= telemetry.W3C
			case "b3":
				cfg.Propagation |= telemetry.B3
			case "b3multi":
				cfg.Propagation |= telemetry.B3Multi
			default:
				return nil, fmt.Errorf("%s: unknown propagation %q", otelcfg.ExtensionFilterName, p)
			}
		}
		if ext.Tenants != nil {
			if cfg.Tenant, err = tenantSource(ext.Tenants.From, rc); err != nil {
				return nil, err
			}
		}
	}
	pipe, err := rt.telemetryPipeline(&spec, ext)
	if err != nil {
		return nil, err
	}
	return telemetry.NewTracer(pipe, cfg), nil
}

func (c *collectorSpec) from(gs *corev3.GrpcService, hs *corev3.HttpService) error {
	switch {
	case gs != nil:
		c.cluster = gs.GetEnvoyGrpc().GetClusterName()
		c.protocol = otelx.GRPC
		if c.cluster == "" {
			return errors.New("grpc_service: only envoy_grpc with a cluster_name is supported")
		}
		c.timeout = gs.GetTimeout().AsDuration()
	case hs != nil:
		c.cluster = hs.GetHttpUri().GetCluster()
		c.protocol = otelx.HTTP
		if c.cluster == "" {
			return errors.New("http_service: http_uri.cluster is required")
		}
		c.timeout = hs.GetHttpUri().GetTimeout().AsDuration()
	default:
		return errors.New("a grpc_service or http_service naming the collector cluster is required")
	}
	return nil
}

func ratioOf(fp *typev3.FractionalPercent) float64 {
	d := 100.0
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		d = 10000
	case typev3.FractionalPercent_MILLION:
		d = 1e6
	}
	r := float64(fp.GetNumerator()) / d
	if r > 1 {
		r = 1
	}
	return r
}

// samplers reads the global sampler from the OpenTelemetry tracer's sampler
// extension (Envoy's semantics when there is none: parent-based with the
// HCM random_sampling for new traces) and the per-route overrides from
// route tracing.random_sampling.
func samplers(oc *tracev3.OpenTelemetryConfig, ext *otelcfg.ExtensionConfig, hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration) (telemetry.Sampler, map[string]telemetry.Sampler, error) {
	kind, ratio := telemetry.ParentBased, 1.0
	if rs := hcm.GetTracing().GetRandomSampling(); rs != nil {
		ratio = rs.GetValue() / 100
	}
	if s := oc.GetSampler(); s != nil {
		switch typeName(s.GetTypedConfig()) {
		case "envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig":
			kind, ratio = telemetry.AlwaysOn, 1
		case "envoy.extensions.tracers.opentelemetry.samplers.v3.TraceIdRatioBasedSamplerConfig":
			c := &samplersv3.TraceIdRatioBasedSamplerConfig{}
			if err := s.GetTypedConfig().UnmarshalTo(c); err != nil {
				return telemetry.Sampler{}, nil, err
			}
			kind, ratio = telemetry.Ratio, ratioOf(c.GetSamplingPercentage())
		case "envoy.extensions.tracers.opentelemetry.samplers.v3.ParentBasedSamplerConfig":
			c := &samplersv3.ParentBasedSamplerConfig{}
			if err := s.GetTypedConfig().UnmarshalTo(c); err != nil {
				return telemetry.Sampler{}, nil, err
			}
			kind = telemetry.ParentBased
			inner := &samplersv3.TraceIdRatioBasedSamplerConfig{}
			if w := c.GetWrappedSampler(); w != nil && w.GetTypedConfig().UnmarshalTo(inner) == nil {
				ratio = ratioOf(inner.GetSamplingPercentage())
			}
		default:
			return telemetry.Sampler{}, nil, fmt.Errorf("tracing sampler %q is not supported", s.GetName())
		}
	}
	if ext != nil && ext.Sampler == "never" {
		kind = telemetry.AlwaysOff
	}
	global, err := telemetry.NewSampler(kind, ratio)
	if err != nil {
		return global, nil, err
	}
	var per map[string]telemetry.Sampler
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			rs := r.GetTracing().GetRandomSampling()
			if rs == nil {
				continue
			}
			if r.GetName() == "" {
				return global, nil, fmt.Errorf("virtual host %q: a route with a tracing override needs a name", vh.GetName())
			}
			k := kind
			if k == telemetry.AlwaysOn || k == telemetry.AlwaysOff {
				k = telemetry.Ratio
			}
			s, err := telemetry.NewSampler(k, ratioOf(rs))
			if err != nil {
				return global, nil, fmt.Errorf("route %q: %w", r.GetName(), err)
			}
			if per == nil {
				per = map[string]telemetry.Sampler{}
			}
			per[r.GetName()] = s
		}
	}
	return global, per, nil
}

func tenantSource(f otelcfg.TenantFrom, rc *routev3.RouteConfiguration) (telemetry.TenantSource, error) {
	switch {
	case f.Header != "":
		return telemetry.TenantSource{Kind: telemetry.TenantHeader, Header: strings.ToLower(f.Header)}, nil
	case f.TrustDomain:
		return telemetry.TenantSource{Kind: telemetry.TenantTrustDomain}, nil
	case f.SPIFFEID:
		return telemetry.TenantSource{Kind: telemetry.TenantSPIFFEID}, nil
	case f.RouteMetadata != "":
		by := map[string]string{}
		get := func(md *corev3.Metadata) string {
			return md.GetFilterMetadata()[otelcfg.RouteMetadataNamespace].GetFields()[f.RouteMetadata].GetStringValue()
		}
		for _, vh := range rc.GetVirtualHosts() {
			dflt := get(vh.GetMetadata())
			for _, r := range vh.GetRoutes() {
				v := get(r.GetMetadata())
				if v == "" {
					v = dflt
				}
				if v != "" && r.GetName() != "" {
					by[r.GetName()] = v
				}
			}
		}
		return telemetry.TenantSource{Kind: telemetry.TenantRouteMetadata, ByRoute: by}, nil
	case f.CEL != "":
		e, err := telemetry.CompileTenantExpr(f.CEL)
		if err != nil {
			return telemetry.TenantSource{}, err
		}
		return telemetry.TenantSource{Kind: telemetry.TenantCEL, Expr: e}, nil
	}
	return telemetry.TenantSource{}, nil
}

func budget(b otelcfg.Budget) telemetry.Budget {
	return telemetry.Budget{SpansPerSecond: b.SpansPerSecond, SpanBurst: b.SpanBurst, LogsPerSecond: b.LogsPerSecond, LogBurst: b.LogBurst, MaxSeries: b.MaxSeries}
}

// telemetryPipeline returns the pipeline for spec, creating its exporters
// on first use. Connections to the collector go to an endpoint of its
// cluster in the version running at dial time.
func (rt *Runtime) telemetryPipeline(spec *collectorSpec, ext *otelcfg.ExtensionConfig) (*telemetry.Pipeline, error) {
	h := &rt.tel
	h.once.Do(func() {
		h.tenants = telemetry.NewTenants(telemetry.TenantsConfig{})
		h.byKey = map[string]*telemetryEntry{}
		_ = rt.opt.Stats.Registry.Register(h.tenants)
	})
	tc := telemetry.TenantsConfig{}
	if ext != nil && ext.Tenants != nil {
		tc.MaxTenants = ext.Tenants.MaxTenants
		if ext.Tenants.Default != nil {
			tc.Default = budget(*ext.Tenants.Default)
		}
		tc.Budgets = map[string]telemetry.Budget{}
		for k, v := range ext.Tenants.Budgets {
			tc.Budgets[k] = budget(v)
		}
	}
	h.tenants.SetConfig(tc)
	if e := h.byKey[spec.key()]; e != nil {
		return e.pipe, nil
	}
	cluster := spec.cluster
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		v := rt.cur.Load()
		if v == nil {
			return nil, errors.New("telemetry collector: no config applied yet")
		}
		cl := v.Clusters.Get(cluster)
		if cl == nil {
			return nil, fmt.Errorf("telemetry collector: cluster %q not found", cluster)
		}
		ep := cl.Pick(&lb.Context{})
		if ep == nil {
			return nil, fmt.Errorf("telemetry collector: cluster %q has no healthy endpoint", cluster)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ep.Address)
	}
	oc := otelx.Config{
		Endpoint: cluster, Protocol: spec.protocol, Insecure: true, Dial: dial, Timeout: spec.timeout,
		ServiceName: spec.service, Traces: spec.spans, Logs: spec.logs, Metrics: spec.metrics != nil,
	}
	if m := spec.metrics; m != nil {
		oc.MetricInterval = time.Duration(m.IntervalMs) * time.Millisecond
		oc.Temporality = otelx.Temporality(m.Temporality)
	}
	prov, err := otelx.New(context.Background(), oc)
	if err != nil {
		return nil, err
	}
	pc := telemetry.PipelineConfig{Spans: prov.SpanExporter, RecycleAttributes: true, Resource: prov.Resource, Tenants: h.tenants, Log: rt.opt.Log,
		ExportTimeout: oc.Timeout}
	if prov.LoggerProvider != nil {
		pc.Logger = prov.LoggerProvider.Logger("github.com/omnirelay/omnirelay/internal/dataplane/telemetry")
	}
	if prov.MeterProvider != nil {
		pc.Meter = prov.MeterProvider.Meter("github.com/omnirelay/omnirelay/internal/dataplane/telemetry")
	}
	pipe, err := telemetry.NewPipeline(pc)
	if err != nil {
		_ = prov.Shutdown(context.Background())
		return nil, err
	}
	h.byKey[spec.key()] = &telemetryEntry{prov: prov, pipe: pipe}
	return pipe, nil
}

// shutdownTelemetry flushes and stops every pipeline and exporter.
func (rt *Runtime) shutdownTelemetry(ctx context.Context) error {
	rt.mu.Lock()
	entries := rt.tel.byKey
	rt.tel.byKey = map[string]*telemetryEntry{}
	rt.mu.Unlock()
	var errs []error
	for _, e := range entries {
		errs = append(errs, e.pipe.Shutdown(ctx), e.prov.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// TelemetryTenants returns the tenant table (nil before telemetry is used).
func (rt *Runtime) TelemetryTenants() *telemetry.Tenants {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.tel.tenants
}
