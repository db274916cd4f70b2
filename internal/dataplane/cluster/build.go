package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/dataplane/circuit"
	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/health"
	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/outlier"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

const httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Env is what building a cluster needs from the process.
type Env struct {
	Stats *stats.Stats
	Log   *slog.Logger
	// Dial overrides the TCP dialer (tests, in-process host).
	Dial func(timeout time.Duration) upstream.Dialer
	// Secrets resolves SDS secret names of upstream TLS contexts (nil: a
	// cluster naming an SDS secret is refused).
	Secrets *secrets.Store
}

// Build compiles c (with cla, its endpoints when the cluster is EDS). prev is
// the cluster of the same name in the running version, or nil: its endpoints
// keep their health and ejection state, and its pools are reused when the
// connection settings did not change. Build starts the health checker; the
// caller must Close the result if it is not published.
func Build(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, prev *Cluster, env *Env) (*Cluster, error) {
	if err := c.ValidateAll(); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	cl := &Cluster{Name: c.GetName(), Stats: env.Stats.Cluster(c.GetName()), md: c.GetMetadata(), log: env.Log}
	switch t := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		switch t.Type {
		case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			cla = c.GetLoadAssignment()
		case clusterv3.Cluster_EDS:
			// cla comes from EDS; nil means not yet received (empty cluster).
		default:
			return nil, fmt.Errorf("cluster %q: type %v is not supported (STATIC, STRICT_DNS, LOGICAL_DNS, EDS are)", cl.Name, t.Type)
		}
	case nil:
		cla = c.GetLoadAssignment()
	default:
		return nil, fmt.Errorf("cluster %q: custom cluster types are not supported", cl.Name)
	}
	eps, err := buildEndpoints(cla, prev)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
	}
	cl.Endpoints = eps

	policy, opts, err := lbPolicy(c)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
	}
	if cl.lb, err = lb.NewPriority(levels(cla, eps), priorityOptions(c, cla, policy, opts)); err != nil {
		return nil, fmt.Errorf("cluster %q: lb_policy: %w", cl.Name, err)
	}
	cl.Breaker = circuit.New(breakerLimits(c))

	if od := c.GetOutlierDetection(); od != nil {
		cl.outlier = outlier.New(outlierConfig(od), time.Now)
		cl.outlier.Update(eps)
		st := cl.Stats
		cl.outlier.OnEject = func(ep *endpoint.Endpoint, reason string) {
			st.Ejections.Inc()
			env.Log.Warn("outlier ejected host", "cluster", cl.Name, "endpoint", ep.Address, "reason", reason)
		}
		cl.outlier.Start()
	}

	if cl.Protocol, err = protocolOf(c); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
	}
	if cl.tls, err = upstreamTLS(c, env.Secrets); err != nil {
		return nil, fmt.Errorf("cluster %q: transport_socket: %w", cl.Name, err)
	}
	connectTimeout := 5 * time.Second
	if c.GetConnectTimeout() != nil {
		connectTimeout = c.GetConnectTimeout().AsDuration()
	}
	if env.Dial != nil {
		cl.dial = env.Dial(connectTimeout)
	} else {
		cl.dial = upstream.NewDialer(connectTimeout)
	}
	cl.settings = settingsFingerprint(c)
	if prev != nil && prev.settings == cl.settings {
		cl.h1, cl.h2 = prev.h1, prev.h2
	} else {
		maxReq := 0
		if v := c.GetMaxRequestsPerConnection(); v != nil { //nolint:staticcheck // deprecated field still sent by older control planes
			maxReq = int(v.GetValue())
		}
		// The current field (what translate writes) wins over the deprecated one.
		if v := httpOptions(c).GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection(); v != nil {
			maxReq = int(v.GetValue())
		}
		var idle time.Duration
		if o := httpOptions(c); o != nil && o.GetCommonHttpProtocolOptions().GetIdleTimeout() != nil {
			idle = o.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration()
		}
		br := cl.Breaker
		cl.h1 = upstream.NewH1(upstream.H1Options{
			Dial: cl.dial, TLS: h1TLS(cl.tls), IdleTimeout: idle, MaxRequestsPerConn: maxReq,
			OnConnect: br.TryAcquireConnection, OnDisconnect: br.ReleaseConnection,
		})
		cl.h2 = upstream.NewH2(upstream.H2Options{Dial: cl.dial, TLS: cl.tls})
	}

	if hcs := c.GetHealthChecks(); len(hcs) > 0 {
		hc, err := healthConfig(hcs[0], cl.tls)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: health_checks[0]: %w", cl.Name, err)
		}
		st := cl.Stats
		name := cl.Name
		log := env.Log
		cl.health = health.Start(context.Background(), hc, eps, func(ep *endpoint.Endpoint, healthy bool) {
			st.SetHealthy(ep.Address, healthy)
			log.Info("health changed", "cluster", name, "endpoint", ep.Address, "healthy", healthy)
		})
		for _, ep := range eps {
			st.SetHealthy(ep.Address, ep.Healthy())
		}
	} else {
		// Without active checks a host carried over from a checked version
		// must not stay marked unhealthy forever.
		for _, ep := range eps {
			ep.SetHealthy(true)
		}
	}
	return cl, nil
}

// SameSettings reports whether a rebuilt cluster could share prev's pools.
func SameSettings(a, b *Cluster) bool { return a != nil && b != nil && a.settings == b.settings }

func h1TLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	cc := c.Clone()
	cc.NextProtos = []string{"http/1.1"}
	return cc
}

// levels groups a cluster's endpoints by EDS priority (in order; absent
// priorities are empty levels and take no traffic) and locality, each
// locality with its load_balancing_weight (the sum of its endpoints'
// weights when EDS sets none).
func levels(cla *endpointv3.ClusterLoadAssignment, eps []*endpoint.Endpoint) []lb.Level {
	weight := map[[2]string]uint32{}
	for _, loc := range cla.GetEndpoints() {
		if w := loc.GetLoadBalancingWeight().GetValue(); w > 0 {
			weight[[2]string{fmt.Sprint(loc.GetPriority()), localityName(loc.GetLocality())}] = w
		}
	}
	var prios []uint32
	byPrio := map[uint32]map[string]*lb.Locality{}
	order := map[uint32][]string{}
	for _, e := range eps {
		locs := byPrio[e.Priority]
		if locs == nil {
			locs = map[string]*lb.Locality{}
			byPrio[e.Priority] = locs
			prios = append(prios, e.Priority)
		}
		l := locs[e.Locality]
		if l == nil {
			l = &lb.Locality{Name: e.Locality, Weight: weight[[2]string{fmt.Sprint(e.Priority), e.Locality}]}
			locs[e.Locality] = l
			order[e.Priority] = append(order[e.Priority], e.Locality)
		}
		l.Endpoints = append(l.Endpoints, e)
	}
	slices.Sort(prios)
	out := make([]lb.Level, 0, len(prios)+1)
	for _, p := range prios {
		var lv lb.Level
		for _, name := range order[p] {
			l := byPrio[p][name]
			if l.Weight == 0 {
				for _, e := range l.Endpoints {
					l.Weight += e.Weight
				}
			}
			lv.Localities = append(lv.Localities, *l)
		}
		out = append(out, lv)
	}
	if len(out) == 0 {
		out = append(out, lb.Level{})
	}
	return out
}

// priorityOptions reads the EDS overprovisioning factor (default 140 %),
// the cluster's healthy_panic_threshold (default 50 %) and whether
// localities are weighted.
func priorityOptions(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, policy lb.Policy, opts lb.Options) lb.PriorityOptions {
	o := lb.PriorityOptions{Policy: policy, Options: opts}
	if f := cla.GetPolicy().GetOverprovisioningFactor(); f != nil {
		o.OverprovisioningFactor = float64(f.GetValue()) / 100
	}
	if t := c.GetCommonLbConfig().GetHealthyPanicThreshold(); t != nil {
		v := t.GetValue()
		o.PanicThreshold = &v
	}
	o.LocalityWeighted = c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	return o
}

func localityName(l *corev3.Locality) string {
	if l == nil {
		return ""
	}
	n := l.GetRegion() + "/" + l.GetZone()
	if l.GetSubZone() != "" {
		n += "/" + l.GetSubZone()
	}
	return n
}

func buildEndpoints(cla *endpointv3.ClusterLoadAssignment, prev *Cluster) ([]*endpoint.Endpoint, error) {
	old := map[string]*endpoint.Endpoint{}
	if prev != nil {
		for _, e := range prev.Endpoints {
			old[e.Address] = e
		}
	}
	var eps []*endpoint.Endpoint
	seen := map[string]bool{}
	for li, loc := range cla.GetEndpoints() {
		locality := localityName(loc.GetLocality())
		for ei, lep := range loc.GetLbEndpoints() {
			switch lep.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			sa := lep.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: only socket addresses are supported", li, ei)
			}
			port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
			if !ok || port.PortValue == 0 || port.PortValue > 65535 {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: port_value 1-65535 required", li, ei)
			}
			addr := joinHostPort(sa.GetAddress(), port.PortValue)
			if seen[addr] {
				continue
			}
			seen[addr] = true
			w := lep.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			ep := old[addr]
			if ep == nil || ep.Weight != w || ep.Locality != locality || ep.Priority != loc.GetPriority() {
				ne := endpoint.New(addr, w)
				ne.Locality = locality
				ne.Priority = loc.GetPriority()
				if ep != nil { // keep live state across a weight change
					ne.SetHealthy(ep.Healthy())
					if u := ep.EjectedUntil(); !u.IsZero() {
						ne.Eject(u)
					}
					ne.EjectionCount.Store(ep.EjectionCount.Load())
				}
				ep = ne
			}
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

func joinHostPort(host string, port uint32) string {
	for i := 0; i < len(host); i++ {
		if host[i] == ':' {
			return "[" + host + "]:" + strconv.Itoa(int(port))
		}
	}
	return host + ":" + strconv.Itoa(int(port))
}

func lbPolicy(c *clusterv3.Cluster) (lb.Policy, lb.Options, error) {
	var opts lb.Options
	var p lb.Policy
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		p = lb.RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		p = lb.LeastRequest
		if cfg := c.GetLeastRequestLbConfig(); cfg != nil && cfg.GetChoiceCount() != nil {
			opts.ChoiceCount = int(cfg.GetChoiceCount().GetValue())
		}
	case clusterv3.Cluster_RANDOM:
		p = lb.Random
	case clusterv3.Cluster_RING_HASH:
		p = lb.RingHash
		if cfg := c.GetRingHashLbConfig(); cfg != nil {
			opts.MinRingSize = cfg.GetMinimumRingSize().GetValue()
			opts.MaxRingSize = cfg.GetMaximumRingSize().GetValue()
		}
	case clusterv3.Cluster_MAGLEV:
		p = lb.Maglev
		if cfg := c.GetMaglevLbConfig(); cfg != nil {
			opts.MaglevTableSize = cfg.GetTableSize().GetValue()
		}
	default:
		return 0, opts, fmt.Errorf("lb_policy %v is not supported", c.GetLbPolicy())
	}
	return p, opts, nil
}

func breakerLimits(c *clusterv3.Cluster) circuit.Limits {
	l := circuit.Limits{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			l.MaxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			l.MaxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			l.MaxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			l.MaxRetries = int64(v.GetValue())
		}
		if b := t.GetRetryBudget(); b != nil {
			l.BudgetPercent = 20
			if b.GetBudgetPercent() != nil {
				l.BudgetPercent = b.GetBudgetPercent().GetValue()
			}
			l.MinRetryConcurrency = 3
			if b.GetMinRetryConcurrency() != nil {
				l.MinRetryConcurrency = int64(b.GetMinRetryConcurrency().GetValue())
			}
			l.HasBudget = true
		}
	}
	return l
}

// outlierConfig maps Envoy's OutlierDetection with Envoy's defaults: the
// consecutive-5xx and success-rate algorithms enforced at 100 %, the
// consecutive-gateway-failure and failure-percentage ones at 0 % (so they
// are off unless their enforcing_* percentage is set).
func outlierConfig(od *clusterv3.OutlierDetection) outlier.Config {
	cfg := outlier.Config{}
	pct := func(v interface{ GetValue() uint32 }, isSet bool, def uint32) uint32 {
		if !isSet {
			return def
		}
		return min(v.GetValue(), 100)
	}
	if v := od.GetConsecutive_5Xx(); v != nil {
		cfg.Consecutive5xx = v.GetValue()
	}
	e5 := pct(od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() != nil, 100)
	cfg.EnforcingConsecutive5xx = &e5
	if eg := pct(od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() != nil, 0); eg > 0 {
		cfg.ConsecutiveGatewayFailure = 5
		if v := od.GetConsecutiveGatewayFailure(); v != nil {
			cfg.ConsecutiveGatewayFailure = v.GetValue()
		}
		cfg.EnforcingConsecutiveGatewayFailure = &eg
	}
	if es := pct(od.GetEnforcingSuccessRate(), od.GetEnforcingSuccessRate() != nil, 100); es > 0 {
		cfg.SuccessRate = &outlier.SuccessRate{Enforcing: es,
			MinimumHosts:  od.GetSuccessRateMinimumHosts().GetValue(),
			RequestVolume: od.GetSuccessRateRequestVolume().GetValue(),
			StdevFactor:   od.GetSuccessRateStdevFactor().GetValue()}
	}
	if ef := pct(od.GetEnforcingFailurePercentage(), od.GetEnforcingFailurePercentage() != nil, 0); ef > 0 {
		cfg.FailurePercentage = &outlier.FailurePercentage{Enforcing: ef,
			Threshold:     od.GetFailurePercentageThreshold().GetValue(),
			MinimumHosts:  od.GetFailurePercentageMinimumHosts().GetValue(),
			RequestVolume: od.GetFailurePercentageRequestVolume().GetValue()}
		if od.GetFailurePercentageThreshold() == nil {
			cfg.FailurePercentage.Threshold = 0 // the package default, 85
		}
	}
	if v := od.GetBaseEjectionTime(); v != nil {
		cfg.BaseEjectionTime = v.AsDuration()
	}
	if v := od.GetMaxEjectionTime(); v != nil {
		cfg.MaxEjectionTime = v.AsDuration()
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		cfg.MaxEjectionPercent = v.GetValue()
	}
	if v := od.GetInterval(); v != nil {
		cfg.Interval = v.AsDuration()
	}
	return cfg
}

func httpOptions(c *clusterv3.Cluster) *httpv3.HttpProtocolOptions {
	a := c.GetTypedExtensionProtocolOptions()[httpOptionsKey]
	if a == nil {
		return nil
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		return nil
	}
	return o
}

func protocolOf(c *clusterv3.Cluster) (Protocol, error) {
	a := c.GetTypedExtensionProtocolOptions()[httpOptionsKey]
	if a == nil {
		if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated field still sent by older control planes
			return ProtocolHTTP2, nil
		}
		return ProtocolAuto, nil
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		return 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", httpOptionsKey, err)
	}
	switch p := o.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		if p.ExplicitHttpConfig.GetHttp2ProtocolOptions() != nil {
			return ProtocolHTTP2, nil
		}
		if p.ExplicitHttpConfig.GetHttp3ProtocolOptions() != nil {
			return 0, errors.New("HTTP/3 upstreams are not supported")
		}
		return ProtocolHTTP1, nil
	default:
		return ProtocolAuto, nil
	}
}

func settingsFingerprint(c *clusterv3.Cluster) string {
	// The pools depend on transport socket, protocol options and timeouts;
	// deterministic marshalling of just those makes a cheap comparison key.
	sub := &clusterv3.Cluster{
		TransportSocket:               c.GetTransportSocket(),
		TypedExtensionProtocolOptions: c.GetTypedExtensionProtocolOptions(),
		ConnectTimeout:                c.GetConnectTimeout(),
		MaxRequestsPerConnection:      c.GetMaxRequestsPerConnection(),
		CircuitBreakers:               c.GetCircuitBreakers(),
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(sub)
	return string(b)
}

func upstreamTLS(c *clusterv3.Cluster, store *secrets.Store) (*tls.Config, error) {
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil, nil
	}
	if ts.GetName() != "envoy.transport_sockets.tls" && ts.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" {
		return nil, fmt.Errorf("transport socket %q is not supported", ts.GetName())
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
		return nil, err
	}
	common := u.GetCommonTlsContext()
	if secrets.UsesSDS(common) {
		// SDS: the certificate and roots are read from the store at each
		// handshake, and the server is verified by SPIFFE ID / SAN matchers.
		if store == nil {
			return nil, errors.New("SDS secrets are not available in this process")
		}
		p, err := secrets.Compile(common, store)
		if err != nil {
			return nil, err
		}
		return secrets.ClientConfig(p, u.GetSni()), nil
	}
	cfg := &tls.Config{ServerName: u.GetSni(), MinVersion: tls.VersionTLS12, CipherSuites: secrets.CipherSuitesTLS12()}
	for i, tc := range common.GetTlsCertificates() {
		certPEM, err := ReadDataSource(tc.GetCertificateChain())
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d].certificate_chain: %w", i, err)
		}
		keyPEM, err := ReadDataSource(tc.GetPrivateKey())
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d].private_key: %w", i, err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	if vc := common.GetValidationContext(); vc != nil && vc.GetTrustedCa() != nil {
		caPEM, err := ReadDataSource(vc.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("validation_context.trusted_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("validation_context.trusted_ca: no PEM certificates")
		}
		cfg.RootCAs = pool
	} else if vc := common.GetValidationContext(); vc != nil && vc.GetSystemRootCerts() != nil {
		// RootCAs nil: crypto/tls verifies against the system roots.
	} else {
		// Envoy does not verify upstream certificates without a validation
		// context; we keep its semantics so configs mean the same thing.
		cfg.InsecureSkipVerify = true
	}
	if vc := common.GetValidationContext(); vc != nil && !cfg.InsecureSkipVerify {
		for _, m := range vc.GetMatchTypedSubjectAltNames() {
			if e := m.GetMatcher().GetExact(); e != "" && cfg.ServerName == "" {
				cfg.ServerName = e
			}
		}
	}
	return cfg, nil
}

// ReadDataSource returns the bytes of an xDS DataSource.
func ReadDataSource(ds *corev3.DataSource) ([]byte, error) { return secrets.ReadDataSource(ds) }

func healthConfig(hc *corev3.HealthCheck, tlsCfg *tls.Config) (health.Config, error) {
	cfg := health.Config{
		Interval:           hc.GetInterval().AsDuration(),
		Timeout:            hc.GetTimeout().AsDuration(),
		UnhealthyThreshold: int(hc.GetUnhealthyThreshold().GetValue()),
		Jitter:             hc.GetIntervalJitter().AsDuration(),
		HealthyThreshold:   int(hc.GetHealthyThreshold().GetValue()),
	}
	switch k := hc.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		cfg.Kind = health.HTTP
		cfg.HTTP2 = k.HttpHealthCheck.GetCodecClientType() == typev3.CodecClientType_HTTP2
		cfg.Path = k.HttpHealthCheck.GetPath()
		cfg.Host = k.HttpHealthCheck.GetHost()
		for _, r := range k.HttpHealthCheck.GetExpectedStatuses() {
			cfg.ExpectedStatuses = append(cfg.ExpectedStatuses, health.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd())})
		}
	case *corev3.HealthCheck_TcpHealthCheck_:
		cfg.Kind = health.TCP
	case *corev3.HealthCheck_GrpcHealthCheck_:
		cfg.Kind = health.GRPC
		cfg.GRPCService = k.GrpcHealthCheck.GetServiceName()
	default:
		return cfg, fmt.Errorf("health checker %T is not supported", k)
	}
	cfg.TLS = tlsCfg
	return cfg, nil
}
