package translate

import (
	"fmt"
	"math"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

var lbPolicies = map[config.LBPolicy]clusterv3.Cluster_LbPolicy{
	config.LBRoundRobin:   clusterv3.Cluster_ROUND_ROBIN,
	config.LBLeastRequest: clusterv3.Cluster_LEAST_REQUEST,
	config.LBRandom:       clusterv3.Cluster_RANDOM,
	config.LBRingHash:     clusterv3.Cluster_RING_HASH,
	config.LBMaglev:       clusterv3.Cluster_MAGLEV,
}

// cluster returns the Cluster and, for EDS clusters, its load assignment.
// Clusters whose endpoints are all IP addresses are STATIC; any host name
// makes the cluster STRICT_DNS (Envoy rejects names in STATIC clusters).
func (t *translator) cluster(c *config.Cluster) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	lb, ok := lbPolicies[c.EffectiveLB()]
	if !ok {
		return nil, nil, fmt.Errorf("unknown lb policy %q", c.LB)
	}
	out := &clusterv3.Cluster{
		Name:           c.Name,
		ConnectTimeout: durationOr(c.ConnectTimeout, config.DefaultConnectTimeout),
		LbPolicy:       lb,
	}
	if md, err := c.Metadata.Structs(); err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	} else if md != nil {
		out.Metadata = &corev3.Metadata{FilterMetadata: md}
	}
	eps, err := t.endpoints(c)
	if err != nil {
		return nil, nil, err
	}
	cla, err := loadAssignment(c.Name, eps)
	if err != nil {
		return nil, nil, err
	}
	var edsCLA *endpointv3.ClusterLoadAssignment
	switch {
	case c.UsesEDS() || t.opts.ADS && allIPs(eps):
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
		edsCLA = cla
	case allIPs(eps):
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		out.LoadAssignment = cla
	default:
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		out.LoadAssignment = cla
	}

	if out.TypedExtensionProtocolOptions, err = protocolOptions(c); err != nil {
		return nil, nil, err
	}
	if c.UsesTLS() {
		if out.TransportSocket, err = t.upstreamTLS(c); err != nil {
			return nil, nil, err
		}
	}
	if c.MTLS != nil { // mtls.go
		if out.TransportSocket, err = clusterMTLS(c); err != nil {
			return nil, nil, err
		}
	}
	if c.HealthCheck != nil {
		out.HealthChecks = []*corev3.HealthCheck{healthCheck(c)}
	}
	if c.CircuitBreaker != nil || c.RetryBudget != nil {
		out.CircuitBreakers = circuitBreakers(c)
	}
	if od := c.OutlierDetection; od != nil {
		out.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:           u32(od.Consecutive5xx),
			ConsecutiveGatewayFailure: u32(od.ConsecutiveGatewayFailure),
			Interval:                  duration(od.Interval),
			BaseEjectionTime:          duration(od.BaseEjectionTime),
			MaxEjectionPercent:        u32(od.MaxEjectionPercent),
		}
		if od.ConsecutiveGatewayFailure != nil {
			// Envoy detects gateway failures but enforces ejection for
			// them at 0% unless told otherwise; asking for the check means
			// asking for the ejection.
			out.OutlierDetection.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
		}
		o := out.OutlierDetection
		o.EnforcingConsecutive_5Xx = u32(od.EnforcingConsecutive5xx)
		if sr := od.SuccessRate; sr != nil {
			o.SuccessRateMinimumHosts, o.SuccessRateRequestVolume = u32(sr.MinimumHosts), u32(sr.RequestVolume)
			o.SuccessRateStdevFactor, o.EnforcingSuccessRate = u32(sr.StdevFactor), u32(sr.Enforcing)
		}
		if fp := od.FailurePercentage; fp != nil {
			o.FailurePercentageThreshold, o.FailurePercentageMinimumHosts = u32(fp.Threshold), u32(fp.MinimumHosts)
			o.FailurePercentageRequestVolume = u32(fp.RequestVolume)
			// Given means wanted: Envoy enforces it at 0% by default.
			o.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			if fp.Enforcing != nil {
				o.EnforcingFailurePercentage = u32(fp.Enforcing)
			}
		}
	}
	if rh := c.RingHash; rh != nil && rh.MinimumRingSize != 0 {
		out.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(rh.MinimumRingSize),
		}}
	}
	if mg := c.Maglev; mg != nil && mg.TableSize != 0 {
		out.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
			TableSize: wrapperspb.UInt64(mg.TableSize),
		}}
	}
	return out, edsCLA, nil
}

func u32(p *uint32) *wrapperspb.UInt32Value {
	if p == nil {
		return nil
	}
	return wrapperspb.UInt32(*p)
}

func allIPs(eps []config.Endpoint) bool {
	for _, e := range eps {
		host, _, err := config.SplitAddress(e.Address)
		if err != nil {
			return false
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return false
		}
	}
	return true
}

type localityKey struct {
	region, zone, subZone string
	priority              uint32
}

// endpoints returns the cluster's static endpoints followed by its
// registry service's. Registry endpoints did not go through config
// validation, so they are checked here; one listed twice (or also
// statically) keeps its first entry, since clients such as gRPC reject a
// load assignment naming an address twice.
func (t *translator) endpoints(c *config.Cluster) ([]config.Endpoint, error) {
	if c.Service == "" || t.opts.ServiceEndpoints == nil {
		return c.Endpoints, nil
	}
	reg := t.opts.ServiceEndpoints(c.Service)
	if len(reg) == 0 {
		return c.Endpoints, nil
	}
	out := slices.Clone(c.Endpoints)
	seen := make(map[string]bool, len(c.Endpoints)+len(reg))
	for _, e := range c.Endpoints {
		seen[e.Address] = true
	}
	for i, e := range reg {
		if err := checkRegistryEndpoint(e); err != nil {
			return nil, fmt.Errorf("service %q: endpoint %d (%s): %w", c.Service, i, e.Address, err)
		}
		if seen[e.Address] {
			continue
		}
		seen[e.Address] = true
		out = append(out, e)
	}
	return out, nil
}

func checkRegistryEndpoint(e config.Endpoint) error {
	host, _, err := config.SplitAddress(e.Address)
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("registry endpoints must be IP addresses: %w", err)
	}
	if e.Priority > 127 {
		return fmt.Errorf("priority %d is more than 127", e.Priority)
	}
	if _, ok := healthStatus(e.Health); !ok && e.Health != "" {
		return fmt.Errorf("unknown health %q", e.Health)
	}
	return nil
}

// healthStatus maps config health to xDS; "" stays UNKNOWN, which every
// client treats as healthy.
func healthStatus(h string) (corev3.HealthStatus, bool) {
	switch h {
	case config.HealthHealthy:
		return corev3.HealthStatus_HEALTHY, true
	case config.HealthUnhealthy:
		return corev3.HealthStatus_UNHEALTHY, true
	case config.HealthDraining:
		return corev3.HealthStatus_DRAINING, true
	}
	return corev3.HealthStatus_UNKNOWN, false
}

// loadAssignment groups endpoints by locality and priority, in the order
// they first appear. Every locality gets a load_balancing_weight (the sum of
// its endpoints' weights): gRPC proxyless clients drop localities without
// one.
func loadAssignment(cluster string, eps []config.Endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	groups := map[localityKey]*endpointv3.LocalityLbEndpoints{}
	weights := map[localityKey]uint64{}
	perPriority := map[uint32]uint64{}
	var order []localityKey
	for _, e := range eps {
		host, port, err := config.SplitAddress(e.Address)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", e.Address, err)
		}
		k := localityKey{priority: e.Priority}
		if e.Locality != nil {
			k.region, k.zone, k.subZone = e.Locality.Region, e.Locality.Zone, e.Locality.SubZone
		}
		g, ok := groups[k]
		if !ok {
			g = &endpointv3.LocalityLbEndpoints{Priority: e.Priority}
			if e.Locality != nil {
				g.Locality = &corev3.Locality{Region: k.region, Zone: k.zone, SubZone: k.subZone}
			}
			groups[k] = g
			order = append(order, k)
		}
		lbe := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(host, port),
		}}}
		lbe.HealthStatus, _ = healthStatus(e.Health)
		w := uint32(1)
		if e.Weight > 0 {
			w = e.Weight
			lbe.LoadBalancingWeight = wrapperspb.UInt32(e.Weight)
		}
		weights[k] += uint64(w)
		perPriority[k.priority] += uint64(w)
		// Envoy and gRPC both reject weight sums past 32 bits; registry
		// endpoints can get there where a hand-written config would not.
		if perPriority[k.priority] > math.MaxUint32 {
			return nil, fmt.Errorf("endpoint %q: endpoint weights of priority %d add up to more than %d", e.Address, k.priority, uint64(math.MaxUint32))
		}
		g.LbEndpoints = append(g.LbEndpoints, lbe)
	}
	for _, k := range order {
		g := groups[k]
		g.LoadBalancingWeight = wrapperspb.UInt32(uint32(weights[k]))
		cla.Endpoints = append(cla.Endpoints, g)
	}
	return cla, nil
}

// protocolOptions sets the upstream HTTP protocol: auto follows the
// downstream request, the others are explicit.
func protocolOptions(c *config.Cluster) (map[string]*anypb.Any, error) {
	opts := &httpv3.HttpProtocolOptions{}
	if c.IdleTimeout != nil || c.MaxRequestsPerConnection != 0 {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: duration(c.IdleTimeout)}
		if c.MaxRequestsPerConnection != 0 {
			opts.CommonHttpProtocolOptions.MaxRequestsPerConnection = wrapperspb.UInt32(c.MaxRequestsPerConnection)
		}
	}
	switch c.EffectiveProtocol() {
	case config.UpstreamAuto:
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		}
	case config.UpstreamHTTP1:
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			},
		}
	case config.UpstreamH2C, config.UpstreamH2:
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			},
		}
	default:
		return nil, fmt.Errorf("unknown protocol %q", c.Protocol)
	}
	a, err := typed(opts)
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{KeyHTTPProtocol: a}, nil
}

// upstreamTLS verifies the server against ca_file, or the system roots,
// unless insecure_skip_verify; with an sni, the certificate must also be
// valid for that name (Envoy checks only the chain otherwise).
func (t *translator) upstreamTLS(c *config.Cluster) (*corev3.TransportSocket, error) {
	ut := c.TLS
	if ut == nil {
		ut = &config.UpstreamTLS{}
	}
	common := &tlsv3.CommonTlsContext{}
	switch c.EffectiveProtocol() {
	case config.UpstreamH2:
		common.AlpnProtocols = []string{alpnH2}
	case config.UpstreamHTTP1:
		common.AlpnProtocols = []string{alpnHTTP1}
	default:
		common.AlpnProtocols = []string{alpnH2, alpnHTTP1}
	}
	if ut.CertFile != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{t.tlsCertificate(ut.CertFile, ut.KeyFile)}
	}
	if !ut.InsecureSkipVerify {
		vc := &tlsv3.CertificateValidationContext{}
		if ut.CAFile != "" {
			vc.TrustedCa = t.fileSource(ut.CAFile)
		} else {
			vc.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
		}
		if ut.SNI != "" {
			vc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ut.SNI}},
			}}
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return transportSocket(&tlsv3.UpstreamTlsContext{Sni: ut.SNI, CommonTlsContext: common})
}

func healthCheck(c *config.Cluster) *corev3.HealthCheck {
	h := c.HealthCheck
	unhealthy, healthy := uint32(config.DefaultUnhealthyThreshold), uint32(config.DefaultHealthyThreshold)
	if h.UnhealthyThreshold != nil {
		unhealthy = *h.UnhealthyThreshold
	}
	if h.HealthyThreshold != nil {
		healthy = *h.HealthyThreshold
	}
	out := &corev3.HealthCheck{
		Timeout:            durationOr(h.Timeout, config.DefaultHealthCheckTimeout),
		Interval:           durationOr(h.Interval, config.DefaultHealthCheckInterval),
		UnhealthyThreshold: wrapperspb.UInt32(unhealthy),
		HealthyThreshold:   wrapperspb.UInt32(healthy),
	}
	switch {
	case h.HTTP != nil:
		hh := &corev3.HealthCheck_HttpHealthCheck{Path: h.HTTP.Path, Host: h.HTTP.Host}
		for _, s := range h.HTTP.ExpectedStatuses {
			hh.ExpectedStatuses = append(hh.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
		}
		if p := c.EffectiveProtocol(); p == config.UpstreamH2C || p == config.UpstreamH2 {
			hh.CodecClientType = typev3.CodecClientType_HTTP2
		}
		out.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hh}
	case h.GRPC != nil:
		out.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: h.GRPC.ServiceName}}
	default:
		out.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return out
}

func circuitBreakers(c *config.Cluster) *clusterv3.CircuitBreakers {
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	if cb := c.CircuitBreaker; cb != nil {
		th.MaxConnections = u32(cb.MaxConnections)
		th.MaxPendingRequests = u32(cb.MaxPending)
		th.MaxRequests = u32(cb.MaxRequests)
		th.MaxRetries = u32(cb.MaxRetries)
	}
	if rb := c.RetryBudget; rb != nil {
		b := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: u32(rb.MinConcurrency)}
		if rb.Percent != nil {
			b.BudgetPercent = &typev3.Percent{Value: *rb.Percent}
		}
		th.RetryBudget = b
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
}
