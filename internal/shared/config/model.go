// Package config owns OmniRelay's user configuration, schema omnirelay.v1:
// the YAML model, its strict parsing, and its validation with errors that
// point into the user's file (file:line:col, path in the document, reason).
// It also loads Envoy bootstraps (static_resources) as an alternative input.
// Translation of a Config into xDS resources lives in package translate.
//
// Defaults are not written into a parsed Config: a zero field means "the
// default", and the Effective* methods and Default* constants below say what
// that is, so that validation and translation agree on one definition.
package config

import "time"

// Version is the only schema version this package accepts.
const Version = "omnirelay.v1"

// Defaults applied when a field is left out.
const (
	DefaultAdminAddress          = "127.0.0.1:9901"
	DefaultConnectTimeout        = 5 * time.Second
	DefaultHealthCheckTimeout    = 1 * time.Second
	DefaultHealthCheckInterval   = 5 * time.Second
	DefaultUnhealthyThreshold    = 3
	DefaultHealthyThreshold      = 2
	DefaultRetryAttempts         = 2
	DefaultRateLimitFillInterval = 1 * time.Second
	DefaultRateLimitStatus       = 429
	DefaultRedirectCode          = 301
	DefaultTLSMinVersion         = "1.2"
)

// DefaultRetryOn lists the retry conditions used when retry.on is left out:
// failures where the request never reached the application, so that
// retrying is safe for any method.
var DefaultRetryOn = []string{"connect-failure", "refused-stream"}

// Config is one omnirelay.v1 document.
type Config struct {
	// Version is optional; when set it must be "omnirelay.v1".
	Version   string      `yaml:"version"`
	Admin     AdminConfig `yaml:"admin"`
	Listeners []Listener  `yaml:"listeners"`
	Clusters  []Cluster   `yaml:"clusters"`
	// Telemetry sends OTLP traces, metrics and logs (telemetry.go).
	Telemetry *Telemetry `yaml:"telemetry"`

	// src locates paths in the parsed file and carries the parse options; nil
	// for a Config built in code (errors then carry no file position).
	src *source
}

// AdminConfig is the admin endpoint. It is not an xDS resource.
type AdminConfig struct {
	// Address is host:port; DefaultAdminAddress when empty.
	Address string `yaml:"address"`
}

// EffectiveAddress returns Address or DefaultAdminAddress.
func (a AdminConfig) EffectiveAddress() string {
	if a.Address == "" {
		return DefaultAdminAddress
	}
	return a.Address
}

// ListenerProtocol says what a listener speaks.
type ListenerProtocol string

// Listener protocols.
const (
	// ProtocolHTTP is HTTP/1.1 and cleartext HTTP/2 (h2c) on one port.
	ProtocolHTTP ListenerProtocol = "http"
	// ProtocolHTTPS terminates TLS, offering ALPN h2 and http/1.1.
	ProtocolHTTPS ListenerProtocol = "https"
	// ProtocolTCP proxies bytes to a cluster.
	ProtocolTCP ListenerProtocol = "tcp"
	// ProtocolTLS routes TLS connections by SNI without terminating them.
	ProtocolTLS ListenerProtocol = "tls"
)

// Listener is one listening socket and what runs on it.
type Listener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	// Protocol is http (the default), https, tcp or tls.
	Protocol ListenerProtocol `yaml:"protocol"`

	// http and https.
	VirtualHosts        []VirtualHost `yaml:"virtual_hosts"`
	Filters             []HTTPFilter  `yaml:"filters"`
	MaxRequestHeadersKB uint32        `yaml:"max_request_headers_kb"`
	StreamIdleTimeout   *Duration     `yaml:"stream_idle_timeout"`
	RequestTimeout      *Duration     `yaml:"request_timeout"`
	XFFNumTrustedHops   uint32        `yaml:"xff_num_trusted_hops"`
	// NormalizePath (default true) applies RFC 3986 normalization to the
	// path before routing and forwarding; MergeSlashes (default true)
	// collapses runs of '/'; PathWithEscapedSlashes is keep (default),
	// reject, unescape_and_redirect or unescape_and_forward for %2F/%5C.
	NormalizePath          *bool  `yaml:"normalize_path"`
	MergeSlashes           *bool  `yaml:"merge_slashes"`
	PathWithEscapedSlashes string `yaml:"path_with_escaped_slashes"`
	// UseRemoteAddress (default true) makes the connection's peer the
	// trusted client (with xff_num_trusted_hops counting proxies in front)
	// and appends it to x-forwarded-for; SkipXFFAppend keeps the header as
	// received. GenerateRequestID (default true) sets x-request-id, replacing
	// an external client's unless PreserveExternalRequestID.
	UseRemoteAddress          *bool `yaml:"use_remote_address"`
	SkipXFFAppend             bool  `yaml:"skip_xff_append"`
	GenerateRequestID         *bool `yaml:"generate_request_id"`
	PreserveExternalRequestID bool  `yaml:"preserve_external_request_id"`
	// TLS is required for https and not allowed otherwise.
	TLS *ListenerTLS `yaml:"tls"`

	// tcp, and the default route of tls.
	Cluster          string            `yaml:"cluster"`
	WeightedClusters []WeightedCluster `yaml:"weighted_clusters"`
	// SNIRoutes routes a tls listener's connections by server name.
	SNIRoutes []SNIRoute `yaml:"sni_routes"`

	// IdleTimeout closes idle connections (tcp/tls: no bytes either way;
	// http/https: no active stream). Zero disables it.
	IdleTimeout *Duration  `yaml:"idle_timeout"`
	AccessLog   *AccessLog `yaml:"access_log"`
	// ConnectionRBAC are L4 policies checked on each new connection, any
	// protocol (docs/security.md).
	ConnectionRBAC []RBAC        `yaml:"connection_rbac"`
	MTLS           *ListenerMTLS `yaml:"mtls"` // mesh mTLS (mtls.go)
}

// EffectiveProtocol returns Protocol or ProtocolHTTP.
func (l *Listener) EffectiveProtocol() ListenerProtocol {
	if l.Protocol == "" {
		return ProtocolHTTP
	}
	return l.Protocol
}

// AccessLog writes one JSON line per request (or connection).
type AccessLog struct {
	// Path is "stdout", "stderr" or a file path.
	Path string `yaml:"path"`
}

// ListenerTLS is the server side of an https listener.
type ListenerTLS struct {
	// Certificates are offered by SNI; the one without sni (or else the
	// first) is used when no name matches.
	Certificates []Certificate `yaml:"certificates"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// OCSPStaplePolicy says what to do when a certificate's OCSP staple
	// has expired: lenient (default: serve it without the staple), strict
	// (do not serve that certificate) or must_staple (every certificate
	// needs a staple, served only while it is current).
	OCSPStaplePolicy string `yaml:"ocsp_staple_policy"`
}

// Certificate is a PEM certificate chain and key, selected by SNI. Relative
// paths are relative to the config file's directory.
type Certificate struct {
	CertFile string   `yaml:"cert_file"`
	KeyFile  string   `yaml:"key_file"`
	SNI      []string `yaml:"sni"`
	// OCSPStaple is a DER OCSP response for the certificate, stapled to
	// handshakes (status good, for this certificate; checked at load). It
	// is re-read when the file changes, like the certificate.
	OCSPStaple string `yaml:"ocsp_staple"`
}

// SNIRoute sends TLS connections whose server name matches to a cluster.
type SNIRoute struct {
	SNI     []string `yaml:"sni"`
	Cluster string   `yaml:"cluster"`
}

// WeightedCluster is one share of traffic split by weight.
type WeightedCluster struct {
	Cluster string `yaml:"cluster"`
	Weight  uint32 `yaml:"weight"`
}

// HTTPFilter is one entry of a listener's filters list; exactly one field is
// set. The router always runs last and is not listed.
type HTTPFilter struct {
	Headers        *HeadersFilter  `yaml:"headers"`
	LocalRateLimit *LocalRateLimit `yaml:"local_rate_limit"`
	Fault          *Fault          `yaml:"fault"`
	CORS           *CORS           `yaml:"cors"`
	JWT            *JWT            `yaml:"jwt"`
	RBAC           *RBAC           `yaml:"rbac"`
	Extension      *Extension      `yaml:"extension"`
	// Optional lets a proxy that cannot run this filter skip it instead of
	// rejecting the listener (xDS is_optional; MeshKit drops it for such
	// proxies).
	Optional bool `yaml:"optional"`
}

// HeadersFilter adds and removes request and response headers on every
// request of the listener.
type HeadersFilter struct {
	RequestAdd     StringMap `yaml:"request_add"`
	RequestRemove  []string  `yaml:"request_remove"`
	ResponseAdd    StringMap `yaml:"response_add"`
	ResponseRemove []string  `yaml:"response_remove"`
}

// LocalRateLimit is a token bucket local to this proxy.
type LocalRateLimit struct {
	// MaxTokens is the bucket size (required).
	MaxTokens uint32 `yaml:"max_tokens"`
	// TokensPerFill defaults to MaxTokens.
	TokensPerFill uint32 `yaml:"tokens_per_fill"`
	// FillInterval defaults to DefaultRateLimitFillInterval.
	FillInterval *Duration `yaml:"fill_interval"`
	// Status is the response status when limited (default 429).
	Status uint32 `yaml:"status"`
}

// Fault injects delays and aborts into a share of requests.
type Fault struct {
	Delay *FaultDelay `yaml:"delay"`
	Abort *FaultAbort `yaml:"abort"`
}

// FaultDelay delays a share of requests by a fixed time.
type FaultDelay struct {
	Fixed *Duration `yaml:"fixed"`
	// Percent of requests, 0-100; 100 when left out.
	Percent *uint32 `yaml:"percent"`
}

// FaultAbort answers a share of requests with a status, without upstream.
type FaultAbort struct {
	Status uint32 `yaml:"status"`
	// Percent of requests, 0-100; 100 when left out.
	Percent *uint32 `yaml:"percent"`
}

// CORS answers preflights and decorates responses for allowed origins.
type CORS struct {
	// AllowOrigins are exact origins, or "*" for any.
	AllowOrigins     []string  `yaml:"allow_origins"`
	AllowMethods     []string  `yaml:"allow_methods"`
	AllowHeaders     []string  `yaml:"allow_headers"`
	ExposeHeaders    []string  `yaml:"expose_headers"`
	MaxAge           *Duration `yaml:"max_age"`
	AllowCredentials bool      `yaml:"allow_credentials"`
}

// VirtualHost groups routes by the request's host.
type VirtualHost struct {
	Name string `yaml:"name"`
	// Domains match the Host header: exact, "*.suffix", "prefix.*" or "*".
	// Defaults to ["*"].
	Domains []string `yaml:"domains"`
	Routes  []Route  `yaml:"routes"`
	// Metadata is the virtual host's Envoy metadata, read for its routes
	// that have none of their own (telemetry's route_metadata tenants).
	Metadata *Metadata `yaml:"metadata"`
}

// EffectiveDomains returns Domains or ["*"].
func (v *VirtualHost) EffectiveDomains() []string {
	if len(v.Domains) == 0 {
		return []string{"*"}
	}
	return v.Domains
}

// Route matches requests and says what to do with them: forward to a cluster
// (Cluster or WeightedClusters), Redirect, or DirectResponse.
type Route struct {
	Name  string     `yaml:"name"`
	Match RouteMatch `yaml:"match"`

	Cluster          string            `yaml:"cluster"`
	WeightedClusters []WeightedCluster `yaml:"weighted_clusters"`
	Redirect         *Redirect         `yaml:"redirect"`
	DirectResponse   *DirectResponse   `yaml:"direct_response"`

	// Forwarding options (cluster and weighted_clusters only).
	PrefixRewrite string       `yaml:"prefix_rewrite"`
	HostRewrite   string       `yaml:"host_rewrite"`
	Timeout       *Duration    `yaml:"timeout"`
	Retry         *Retry       `yaml:"retry"`
	HashPolicy    []HashPolicy `yaml:"hash_policy"`

	RequestHeadersAdd     StringMap `yaml:"request_headers_add"`
	RequestHeadersRemove  []string  `yaml:"request_headers_remove"`
	ResponseHeadersAdd    StringMap `yaml:"response_headers_add"`
	ResponseHeadersRemove []string  `yaml:"response_headers_remove"`

	// LocalRateLimit gives this route its own token bucket.
	LocalRateLimit *LocalRateLimit `yaml:"local_rate_limit"`

	// Tracing overrides telemetry.tracing for this route.
	Tracing *RouteTracing `yaml:"tracing"`
	// Metadata is the route's Envoy metadata (metadata.go): Proxy-Wasm
	// plugins read it as route_metadata, telemetry's route_metadata tenant
	// source reads its "omnirelay.telemetry" namespace.
	Metadata *Metadata `yaml:"metadata"`
}

// RouteMatch selects requests. At most one of Path, PathPrefix and PathRegex
// is set; with none, the route matches every path (prefix "/").
type RouteMatch struct {
	Path       string         `yaml:"path"`
	PathPrefix string         `yaml:"path_prefix"`
	PathRegex  string         `yaml:"path_regex"`
	Methods    []string       `yaml:"methods"`
	Headers    HeaderMatchers `yaml:"headers"`
	Query      StringMap      `yaml:"query"`
	GRPC       bool           `yaml:"grpc"`
}

// HeaderMatcher matches one request header. Exactly one of Exact, Prefix,
// Suffix, Contains, Regex and Present is set.
type HeaderMatcher struct {
	Name     string `yaml:"name"`
	Exact    string `yaml:"exact"`
	Prefix   string `yaml:"prefix"`
	Suffix   string `yaml:"suffix"`
	Contains string `yaml:"contains"`
	Regex    string `yaml:"regex"`
	Present  bool   `yaml:"present"`
	Invert   bool   `yaml:"invert"`

	fromMap bool // written as name: value, so located by key, not index
}

// Retry retries failed upstream attempts.
type Retry struct {
	// Attempts counts every try, the first included (default 2).
	Attempts uint32 `yaml:"attempts"`
	// On lists Envoy retry conditions (default DefaultRetryOn).
	On                   []string  `yaml:"on"`
	RetriableStatusCodes []uint32  `yaml:"retriable_status_codes"`
	PerTryTimeout        *Duration `yaml:"per_try_timeout"`
	Backoff              *Backoff  `yaml:"backoff"`
}

// Backoff is the jittered exponential wait between tries.
type Backoff struct {
	Base *Duration `yaml:"base"`
	Max  *Duration `yaml:"max"`
}

// Redirect answers with a redirect built from the request's URL.
type Redirect struct {
	Scheme        string `yaml:"scheme"`
	Host          string `yaml:"host"`
	Path          string `yaml:"path"`
	PrefixRewrite string `yaml:"prefix_rewrite"`
	// Code is 301 (default), 302, 303, 307 or 308.
	Code uint32 `yaml:"code"`
	// HTTPS redirects to the https scheme.
	HTTPS bool `yaml:"https"`
	// StripQuery drops the query string from the redirect location.
	StripQuery bool `yaml:"strip_query"`
}

// DirectResponse answers without an upstream.
type DirectResponse struct {
	Status uint32 `yaml:"status"`
	Body   string `yaml:"body"`
}

// HashPolicy feeds consistent hashing (ring_hash, maglev); exactly one field
// is set.
type HashPolicy struct {
	Header   string `yaml:"header"`
	SourceIP bool   `yaml:"source_ip"`
}

// LBPolicy is a cluster's load-balancing policy.
type LBPolicy string

// Load-balancing policies.
const (
	LBRoundRobin   LBPolicy = "round_robin"
	LBLeastRequest LBPolicy = "least_request"
	LBRandom       LBPolicy = "random"
	LBRingHash     LBPolicy = "ring_hash"
	LBMaglev       LBPolicy = "maglev"
)

// UpstreamProtocol is what a cluster speaks to its endpoints.
type UpstreamProtocol string

// Upstream protocols.
const (
	// UpstreamAuto uses the downstream request's protocol.
	UpstreamAuto  UpstreamProtocol = "auto"
	UpstreamHTTP1 UpstreamProtocol = "http1"
	// UpstreamH2C is cleartext HTTP/2 (prior knowledge).
	UpstreamH2C UpstreamProtocol = "h2c"
	// UpstreamH2 is HTTP/2 over TLS; it implies tls.
	UpstreamH2 UpstreamProtocol = "h2"
)

// Cluster is a named group of upstream endpoints and how to use them.
type Cluster struct {
	Name string `yaml:"name"`
	// Metadata is the cluster's Envoy metadata (metadata.go).
	Metadata *Metadata `yaml:"metadata"`
	// LB is round_robin (default), least_request, random, ring_hash, maglev.
	LB        LBPolicy   `yaml:"lb"`
	Endpoints []Endpoint `yaml:"endpoints"`
	// ConnectTimeout defaults to DefaultConnectTimeout.
	ConnectTimeout *Duration `yaml:"connect_timeout"`
	// Protocol is auto (default), http1, h2c or h2.
	Protocol UpstreamProtocol `yaml:"protocol"`
	TLS      *UpstreamTLS     `yaml:"tls"`
	MTLS     *ClusterMTLS     `yaml:"mtls"` // mesh mTLS (mtls.go)

	HealthCheck      *HealthCheck      `yaml:"health_check"`
	CircuitBreaker   *CircuitBreaker   `yaml:"circuit_breaker"`
	OutlierDetection *OutlierDetection `yaml:"outlier_detection"`
	RetryBudget      *RetryBudget      `yaml:"retry_budget"`
	RingHash         *RingHash         `yaml:"ring_hash"`
	Maglev           *Maglev           `yaml:"maglev"`

	MaxRequestsPerConnection uint32    `yaml:"max_requests_per_connection"`
	IdleTimeout              *Duration `yaml:"idle_timeout"`
	// EDS publishes the endpoints as a separate ClusterLoadAssignment
	// (served over ADS) instead of inline.
	EDS bool `yaml:"eds"`
	// Service names a service of MeshKit's registry whose registered
	// endpoints join the static ones. It implies EDS, and lets the cluster
	// list no static endpoint at all.
	Service string `yaml:"service"`
}

// UsesEDS reports whether the cluster's endpoints travel as a separate
// ClusterLoadAssignment: eds: true, or a registry service.
func (c *Cluster) UsesEDS() bool { return c.EDS || c.Service != "" }

// EffectiveLB returns LB or LBRoundRobin.
func (c *Cluster) EffectiveLB() LBPolicy {
	if c.LB == "" {
		return LBRoundRobin
	}
	return c.LB
}

// EffectiveProtocol returns Protocol or UpstreamAuto.
func (c *Cluster) EffectiveProtocol() UpstreamProtocol {
	if c.Protocol == "" {
		return UpstreamAuto
	}
	return c.Protocol
}

// UsesTLS reports whether connections to the endpoints use TLS.
func (c *Cluster) UsesTLS() bool {
	return c.TLS != nil || c.Protocol == UpstreamH2
}

// Endpoint is one upstream address. In YAML it is either "host:port" or a
// mapping with address and the optional fields.
type Endpoint struct {
	Address string `yaml:"address"`
	// Weight is relative among endpoints of a cluster (default 1).
	Weight   uint32    `yaml:"weight"`
	Locality *Locality `yaml:"locality"`
	// Priority 0 is used first; higher priorities take over when lower
	// ones are unhealthy.
	Priority uint32 `yaml:"priority"`
	// Health is healthy (default), unhealthy or draining. MeshKit sets it
	// from the registry; proxies send no new requests to the other two.
	Health string `yaml:"health"`
}

// Endpoint health values.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthDraining  = "draining"
)

// EffectiveHealth returns Health or HealthHealthy.
func (e *Endpoint) EffectiveHealth() string {
	if e.Health == "" {
		return HealthHealthy
	}
	return e.Health
}

// Locality places an endpoint for zone-aware balancing.
type Locality struct {
	Region  string `yaml:"region"`
	Zone    string `yaml:"zone"`
	SubZone string `yaml:"sub_zone"`
}

// UpstreamTLS is the client side of TLS to endpoints. Without CAFile the
// system roots verify the server, unless InsecureSkipVerify.
type UpstreamTLS struct {
	SNI                string `yaml:"sni"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// HealthCheck probes endpoints actively; exactly one of HTTP, TCP, GRPC.
type HealthCheck struct {
	HTTP *HTTPHealthCheck `yaml:"http"`
	TCP  *TCPHealthCheck  `yaml:"tcp"`
	GRPC *GRPCHealthCheck `yaml:"grpc"`
	// Interval defaults to DefaultHealthCheckInterval, Timeout to
	// DefaultHealthCheckTimeout.
	Interval *Duration `yaml:"interval"`
	Timeout  *Duration `yaml:"timeout"`
	// UnhealthyThreshold consecutive failures mark an endpoint unhealthy,
	// HealthyThreshold consecutive successes healthy again.
	UnhealthyThreshold *uint32 `yaml:"unhealthy_threshold"`
	HealthyThreshold   *uint32 `yaml:"healthy_threshold"`
}

// HTTPHealthCheck sends GET Path and expects one of ExpectedStatuses
// (default 200).
type HTTPHealthCheck struct {
	Path             string   `yaml:"path"`
	Host             string   `yaml:"host"`
	ExpectedStatuses []uint32 `yaml:"expected_statuses"`
}

// TCPHealthCheck only connects.
type TCPHealthCheck struct{}

// GRPCHealthCheck calls grpc.health.v1.Health/Check.
type GRPCHealthCheck struct {
	ServiceName string `yaml:"service_name"`
}

// CircuitBreaker caps what the proxy sends to a cluster at once.
type CircuitBreaker struct {
	MaxConnections *uint32 `yaml:"max_connections"`
	MaxPending     *uint32 `yaml:"max_pending"`
	MaxRequests    *uint32 `yaml:"max_requests"`
	MaxRetries     *uint32 `yaml:"max_retries"`
}

// OutlierDetection ejects endpoints that fail in a row.
type OutlierDetection struct {
	Consecutive5xx            *uint32   `yaml:"consecutive_5xx"`
	ConsecutiveGatewayFailure *uint32   `yaml:"consecutive_gateway_failure"`
	Interval                  *Duration `yaml:"interval"`
	BaseEjectionTime          *Duration `yaml:"base_ejection_time"`
	MaxEjectionPercent        *uint32   `yaml:"max_ejection_percent"`
	// EnforcingConsecutive5xx is the percent chance a host that trips
	// consecutive_5xx is ejected (default 100).
	EnforcingConsecutive5xx *uint32 `yaml:"enforcing_consecutive_5xx"`
	// SuccessRate and FailurePercentage are Envoy's interval algorithms;
	// success rate runs with Envoy's defaults unless turned off with
	// enforcing: 0, failure percentage only when given.
	SuccessRate       *OutlierSuccessRate       `yaml:"success_rate"`
	FailurePercentage *OutlierFailurePercentage `yaml:"failure_percentage"`
}

// OutlierSuccessRate ejects hosts whose success rate over an interval is
// below the cluster's mean by stdev_factor/1000 standard deviations.
type OutlierSuccessRate struct {
	MinimumHosts  *uint32 `yaml:"minimum_hosts"`
	RequestVolume *uint32 `yaml:"request_volume"`
	StdevFactor   *uint32 `yaml:"stdev_factor"`
	Enforcing     *uint32 `yaml:"enforcing"`
}

// OutlierFailurePercentage ejects hosts whose failures over an interval
// reach threshold percent of their requests.
type OutlierFailurePercentage struct {
	Threshold     *uint32 `yaml:"threshold"`
	MinimumHosts  *uint32 `yaml:"minimum_hosts"`
	RequestVolume *uint32 `yaml:"request_volume"`
	Enforcing     *uint32 `yaml:"enforcing"`
}

// RetryBudget bounds concurrent retries to a share of active requests.
type RetryBudget struct {
	// Percent of active requests that may be retries (Envoy default 20).
	Percent *float64 `yaml:"percent"`
	// MinConcurrency retries are always allowed (Envoy default 3).
	MinConcurrency *uint32 `yaml:"min_concurrency"`
}

// RingHash tunes the ring_hash balancer.
type RingHash struct {
	MinimumRingSize uint64 `yaml:"minimum_ring_size"`
}

// Maglev tunes the maglev balancer.
type Maglev struct {
	// TableSize must be prime (Envoy default 65537).
	TableSize uint64 `yaml:"table_size"`
}
