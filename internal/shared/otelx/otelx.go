// Package otelx sets up the OpenTelemetry SDK for both planes: a resource,
// OTLP exporters (gRPC or HTTP) for traces, metrics and logs, and the SDK
// providers built on them, with bounded queues and a shutdown that honours
// its context.
//
// Nothing here touches the otel globals (otel.SetTracerProvider and
// friends): a process may run several data planes (the in-process host) or
// a MeshKit beside a proxy, each with its own collector, so providers are
// passed explicitly to whoever records. Exporters do not retry: a failed
// export is dropped and counted by the caller rather than held in memory
// while a collector is down, so that an unreachable collector costs bounded
// memory and never slows the request path.
package otelx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// httpClient is the OTLP/HTTP exporters' client, dialing through cfg.Dial
// when set.
func httpClient(cfg *Config) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}
	if cfg.Dial != nil {
		tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return cfg.Dial(ctx, addr) }
	}
	return &http.Client{Transport: tr}
}

// Protocol is the OTLP transport.
type Protocol string

const (
	GRPC Protocol = "grpc"
	HTTP Protocol = "http"
)

// Temporality of exported sums and histograms.
type Temporality string

const (
	Cumulative Temporality = "cumulative"
	Delta      Temporality = "delta"
)

// Config says where and how to export.
type Config struct {
	// Endpoint is the collector's host:port.
	Endpoint string
	// Dial, when set, opens every connection to the collector instead of
	// dialing Endpoint (the data plane picks an endpoint of the collector's
	// cluster at each dial, so the exporters follow EDS updates).
	Dial     func(ctx context.Context, addr string) (net.Conn, error)
	Protocol Protocol // default GRPC
	// Insecure uses plain text (h2c / http). TLS to the collector is not
	// wired yet: Insecure must be true.
	Insecure bool
	Headers  map[string]string
	// Timeout bounds one export call (default 5s).
	Timeout time.Duration

	ServiceName       string
	ServiceInstanceID string
	Attributes        map[string]string

	Traces, Metrics, Logs bool
	// MetricInterval is the export period of metrics (default 10s).
	MetricInterval time.Duration
	Temporality    Temporality // default Cumulative
	// CardinalityLimit caps series per instrument in the SDK (default
	// 2000): a backstop behind the per-tenant caps of the data plane.
	CardinalityLimit int
	// LogQueueSize bounds log records waiting for export (default 2048).
	LogQueueSize int
	// LogInterval is the log batch export period (default 1s).
	LogInterval time.Duration
	// BatchTimeout is the span batch export period for TracerProvider
	// (default 1s).
	BatchTimeout time.Duration
}

// Providers are the SDK objects built for one Config.
type Providers struct {
	Resource *resource.Resource
	// SpanExporter is set when Traces is on; the data plane's pipeline
	// exports through it directly, TracerProvider batches onto it.
	SpanExporter   sdktrace.SpanExporter
	conn           *grpc.ClientConn
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
	LoggerProvider *sdklog.LoggerProvider
}

// Validate checks cfg.
func (cfg *Config) Validate() error {
	if cfg.Endpoint == "" {
		return errors.New("otlp: endpoint is required")
	}
	switch cfg.Protocol {
	case "", GRPC, HTTP:
	default:
		return fmt.Errorf("otlp: protocol %q: want grpc or http", cfg.Protocol)
	}
	switch cfg.Temporality {
	case "", Cumulative, Delta:
	default:
		return fmt.Errorf("otlp: temporality %q: want cumulative or delta", cfg.Temporality)
	}
	if !cfg.Insecure {
		return errors.New("otlp: TLS to the collector is not supported yet: set insecure")
	}
	return nil
}

// New builds the exporters and providers. Exporters connect lazily: an
// unreachable collector is not an error here.
func New(ctx context.Context, cfg Config) (*Providers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Protocol == "" {
		cfg.Protocol = GRPC
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "omnirelay"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceInstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.ServiceInstanceID))
	}
	for k, v := range cfg.Attributes {
		attrs = append(attrs, attribute.String(k, v))
	}
	p := &Providers{Resource: resource.NewWithAttributes("", attrs...)}
	if cfg.Protocol == GRPC {
		// One connection for the three signals.
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		target := cfg.Endpoint
		if cfg.Dial != nil {
			opts = append(opts, grpc.WithContextDialer(cfg.Dial))
			target = "passthrough:///" + cfg.Endpoint
		}
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp: collector connection: %w", err)
		}
		p.conn = conn
	}
	fail := func(err error) (*Providers, error) {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Shutdown(sctx)
		return nil, err
	}
	if cfg.Traces {
		exp, err := spanExporter(ctx, &cfg, p)
		if err != nil {
			return fail(fmt.Errorf("otlp trace exporter: %w", err))
		}
		p.SpanExporter = exp
		bt := cfg.BatchTimeout
		if bt <= 0 {
			bt = time.Second
		}
		p.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithResource(p.Resource),
			sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(bt), sdktrace.WithMaxQueueSize(2048), sdktrace.WithExportTimeout(cfg.Timeout)))
	}
	if cfg.Metrics {
		exp, err := metricExporter(ctx, &cfg, p)
		if err != nil {
			return fail(fmt.Errorf("otlp metric exporter: %w", err))
		}
		iv := cfg.MetricInterval
		if iv <= 0 {
			iv = 10 * time.Second
		}
		lim := cfg.CardinalityLimit
		if lim <= 0 {
			lim = 2000
		}
		p.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithResource(p.Resource),
			sdkmetric.WithCardinalityLimit(lim),
			sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(iv), sdkmetric.WithTimeout(cfg.Timeout))))
	}
	if cfg.Logs {
		exp, err := logExporter(ctx, &cfg, p)
		if err != nil {
			return fail(fmt.Errorf("otlp log exporter: %w", err))
		}
		qs := cfg.LogQueueSize
		if qs <= 0 {
			qs = 2048
		}
		li := cfg.LogInterval
		if li <= 0 {
			li = time.Second
		}
		p.LoggerProvider = sdklog.NewLoggerProvider(sdklog.WithResource(p.Resource),
			sdklog.WithProcessor(sdklog.NewBatchProcessor(exp, sdklog.WithMaxQueueSize(qs),
				sdklog.WithExportInterval(li), sdklog.WithExportTimeout(cfg.Timeout))))
	}
	return p, nil
}

// Shutdown flushes and stops every provider and exporter within ctx.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	if p.TracerProvider != nil {
		// Shuts the span exporter down too.
		errs = append(errs, p.TracerProvider.Shutdown(ctx))
	} else if p.SpanExporter != nil {
		errs = append(errs, p.SpanExporter.Shutdown(ctx))
	}
	if p.MeterProvider != nil {
		errs = append(errs, p.MeterProvider.Shutdown(ctx))
	}
	if p.LoggerProvider != nil {
		errs = append(errs, p.LoggerProvider.Shutdown(ctx))
	}
	if p.conn != nil {
		errs = append(errs, p.conn.Close())
	}
	return errors.Join(errs...)
}

func spanExporter(ctx context.Context, cfg *Config, p *Providers) (sdktrace.SpanExporter, error) {
	if cfg.Protocol == HTTP {
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithInsecure(),
			otlptracehttp.WithHeaders(cfg.Headers), otlptracehttp.WithTimeout(cfg.Timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}), otlptracehttp.WithHTTPClient(httpClient(cfg)))
	}
	return otlptracegrpc.New(ctx, otlptracegrpc.WithGRPCConn(p.conn),
		otlptracegrpc.WithHeaders(cfg.Headers), otlptracegrpc.WithTimeout(cfg.Timeout),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
}

func temporality(cfg *Config) sdkmetric.TemporalitySelector {
	if cfg.Temporality == Delta {
		return func(sdkmetric.InstrumentKind) metricdata.Temporality { return metricdata.DeltaTemporality }
	}
	return sdkmetric.DefaultTemporalitySelector
}

func metricExporter(ctx context.Context, cfg *Config, p *Providers) (sdkmetric.Exporter, error) {
	if cfg.Protocol == HTTP {
		return otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(cfg.Endpoint), otlpmetrichttp.WithInsecure(),
			otlpmetrichttp.WithHeaders(cfg.Headers), otlpmetrichttp.WithTimeout(cfg.Timeout),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}), otlpmetrichttp.WithHTTPClient(httpClient(cfg)),
			otlpmetrichttp.WithTemporalitySelector(temporality(cfg)))
	}
	return otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithGRPCConn(p.conn),
		otlpmetricgrpc.WithHeaders(cfg.Headers), otlpmetricgrpc.WithTimeout(cfg.Timeout),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
		otlpmetricgrpc.WithTemporalitySelector(temporality(cfg)))
}

func logExporter(ctx context.Context, cfg *Config, p *Providers) (sdklog.Exporter, error) {
	if cfg.Protocol == HTTP {
		return otlploghttp.New(ctx, otlploghttp.WithEndpoint(cfg.Endpoint), otlploghttp.WithInsecure(),
			otlploghttp.WithHeaders(cfg.Headers), otlploghttp.WithTimeout(cfg.Timeout),
			otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}), otlploghttp.WithHTTPClient(httpClient(cfg)))
	}
	return otlploggrpc.New(ctx, otlploggrpc.WithGRPCConn(p.conn),
		otlploggrpc.WithHeaders(cfg.Headers), otlploggrpc.WithTimeout(cfg.Timeout),
		otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}))
}
