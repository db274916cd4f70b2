// Package translate turns an omnirelay.v1 Config into the xDS v3 resources
// that implement it (a resources.Snapshot). Output is deterministic: the same
// Config always yields the same resources, in the same order, with the same
// bytes, so that Snapshot.Hash can serve as a version. Both the data plane
// (static mode) and the control plane use it. One Config has three shapes
// (docs/xds-shapes.md): static (Translate), ADS for OmniRelay and Envoy
// (TranslateWith with Options.ADS) and gRPC proxyless (ForGRPC).
package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// Well-known extension names, as Envoy spells them.
const (
	NameHCM           = "envoy.filters.network.http_connection_manager"
	NameTCPProxy      = "envoy.filters.network.tcp_proxy"
	NameTLSInspector  = "envoy.filters.listener.tls_inspector"
	NameTLS           = "envoy.transport_sockets.tls"
	NameHeaderMut     = "envoy.filters.http.header_mutation"
	NameLocalRL       = "envoy.filters.http.local_ratelimit"
	NameFault         = "envoy.filters.http.fault"
	NameCORS          = "envoy.filters.http.cors"
	NameRouter        = "envoy.filters.http.router"
	NameFileLog       = "envoy.access_loggers.file"
	NameStdoutLog     = "envoy.access_loggers.stdout"
	NameStderrLog     = "envoy.access_loggers.stderr"
	KeyHTTPProtocol   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	alpnH2, alpnHTTP1 = "h2", "http/1.1"
)

// Options select the shape of the translation.
type Options struct {
	// ADS publishes what a dynamic proxy (OmniRelay or Envoy) fetches over
	// ADS: HTTP listeners refer to their RouteConfiguration through RDS
	// (config_source ads), and every cluster whose endpoints are IP
	// addresses is EDS with its ClusterLoadAssignment in Endpoints.
	// Clusters with host names stay STRICT_DNS: Envoy resolves no names
	// in EDS.
	ADS bool
	// ServiceEndpoints returns the registry endpoints of a cluster's
	// service (config.Cluster.Service); they join the cluster's static
	// endpoints. Nil means a registry without endpoints.
	ServiceEndpoints func(service string) []config.Endpoint
	// OnWithheld, when set, hears of every resource ForGRPC leaves out and
	// why. Translate and TranslateWith withhold nothing.
	OnWithheld func(Withheld)
	// Packages returns a stored extension package for "store:NAME@VERSION"
	// references (MeshKit's package store); nil refuses them.
	Packages func(name, version string) ([]byte, error)
}

// Withheld is a resource left out of a snapshot because its client could
// not run it.
type Withheld struct {
	TypeURL, Name, Reason string
}

// Translate validates c and returns its xDS resources, routes inline and
// endpoints in their clusters unless a cluster asks for EDS. The returned
// snapshot has passed Snapshot.Validate. It is TranslateWith(c, Options{}).
func Translate(c *config.Config) (*resources.Snapshot, error) {
	return TranslateWith(c, Options{})
}

// TranslateWith validates c and returns its xDS resources in the shape o
// asks for. The returned snapshot has passed Snapshot.Validate.
func TranslateWith(c *config.Config, o Options) (*resources.Snapshot, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	t := &translator{cfg: c, opts: o}
	snap := &resources.Snapshot{}
	for i := range c.Listeners {
		l, err := t.listener(&c.Listeners[i])
		if err != nil {
			return nil, fmt.Errorf("translate listener %q: %w", c.Listeners[i].Name, err)
		}
		snap.Listeners = append(snap.Listeners, l)
	}
	snap.Routes = t.routes
	for i := range c.Clusters {
		cl, cla, err := t.cluster(&c.Clusters[i])
		if err != nil {
			return nil, fmt.Errorf("translate cluster %q: %w", c.Clusters[i].Name, err)
		}
		snap.Clusters = append(snap.Clusters, cl)
		if cla != nil {
			snap.Endpoints = append(snap.Endpoints, cla)
		}
	}
	if err := snap.Validate(); err != nil {
		// Validate passed, so this is a translator bug, or registry
		// endpoints the config validation never saw.
		return nil, fmt.Errorf("translate: generated resources are invalid: %w", err)
	}
	return snap, nil
}

type translator struct {
	cfg  *config.Config
	opts Options
	// routes collects the RouteConfigurations of HTTP listeners in ADS
	// form, in listener order.
	routes []*routev3.RouteConfiguration
}

func (t *translator) listener(l *config.Listener) (*listenerv3.Listener, error) {
	host, port, err := config.SplitAddress(l.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	out := &listenerv3.Listener{
		Name:    l.Name,
		Address: socketAddress(config.ListenHost(host), port),
	}
	switch l.EffectiveProtocol() {
	case config.ProtocolHTTP:
		hcm, err := t.hcm(l)
		if err != nil {
			return nil, err
		}
		out.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm}}}
	case config.ProtocolHTTPS:
		hcm, err := t.hcm(l)
		if err != nil {
			return nil, err
		}
		if out.FilterChains, err = t.httpsChains(l, hcm); err != nil {
			return nil, err
		}
		if out.ListenerFilters, err = tlsInspector(); err != nil {
			return nil, err
		}
	case config.ProtocolTCP:
		f, err := t.tcpProxy(l, l.Cluster, l.WeightedClusters)
		if err != nil {
			return nil, err
		}
		out.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}}
	case config.ProtocolTLS:
		if out.FilterChains, err = t.sniChains(l); err != nil {
			return nil, err
		}
		if out.ListenerFilters, err = tlsInspector(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown protocol %q", l.Protocol)
	}
	if err := t.networkExtensions(l, out); err != nil { // netext.go
		return nil, err
	}
	if err := listenerMTLS(l, out); err != nil { // mtls.go
		return nil, err
	}
	if err := connectionRBAC(l, out); err != nil {
		return nil, err
	}
	return out, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func tlsInspector() ([]*listenerv3.ListenerFilter, error) {
	a, err := resources.NewAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, err
	}
	return []*listenerv3.ListenerFilter{{
		Name:       NameTLSInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
	}}, nil
}

func networkFilter(name string, m proto.Message) (*listenerv3.Filter, error) {
	a, err := resources.NewAny(m)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// httpsChains builds one filter chain per certificate, matched by its server
// names. The default chain (no server_names) serves the certificate without
// sni, or else a copy of the first certificate's chain.
func (t *translator) httpsChains(l *config.Listener, hcm *listenerv3.Filter) ([]*listenerv3.FilterChain, error) {
	certs := l.TLS.Certificates
	var chains []*listenerv3.FilterChain
	hasDefault := false
	for i := range certs {
		ts, err := t.downstreamTLS(l.TLS, &certs[i])
		if err != nil {
			return nil, err
		}
		fc := &listenerv3.FilterChain{
			Name:            fmt.Sprintf("%s/cert-%d", l.Name, i),
			Filters:         []*listenerv3.Filter{proto.CloneOf(hcm)},
			TransportSocket: ts,
		}
		if len(certs[i].SNI) > 0 {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: certs[i].SNI}
		} else {
			hasDefault = true
		}
		chains = append(chains, fc)
	}
	if !hasDefault {
		ts, err := t.downstreamTLS(l.TLS, &certs[0])
		if err != nil {
			return nil, err
		}
		chains = append(chains, &listenerv3.FilterChain{
			Name:            l.Name + "/default",
			Filters:         []*listenerv3.Filter{proto.CloneOf(hcm)},
			TransportSocket: ts,
		})
	}
	return chains, nil
}

func (t *translator) downstreamTLS(lt *config.ListenerTLS, c *config.Certificate) (*corev3.TransportSocket, error) {
	minVersion := tlsv3.TlsParameters_TLSv1_2
	if lt.MinVersion == "1.3" {
		minVersion = tlsv3.TlsParameters_TLSv1_3
	}
	tc := t.tlsCertificate(c.CertFile, c.KeyFile)
	if c.OCSPStaple != "" {
		tc.OcspStaple = t.fileSource(c.OCSPStaple)
	}
	policy := tlsv3.DownstreamTlsContext_LENIENT_STAPLING
	switch lt.OCSPStaplePolicy {
	case "strict":
		policy = tlsv3.DownstreamTlsContext_STRICT_STAPLING
	case "must_staple":
		policy = tlsv3.DownstreamTlsContext_MUST_STAPLE
	}
	return transportSocket(&tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{tc},
			AlpnProtocols:   []string{alpnH2, alpnHTTP1},
			TlsParams:       &tlsv3.TlsParameters{TlsMinimumProtocolVersion: minVersion},
		},
		OcspStaplePolicy: policy,
	})
}

func (t *translator) tlsCertificate(certFile, keyFile string) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{
		CertificateChain: t.fileSource(certFile),
		PrivateKey:       t.fileSource(keyFile),
	}
}

func (t *translator) fileSource(p string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.cfg.FilePath(p)}}
}

func transportSocket(m proto.Message) (*corev3.TransportSocket, error) {
	a, err := resources.NewAny(m)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: NameTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// sniChains routes TLS connections by server name without terminating them.
func (t *translator) sniChains(l *config.Listener) ([]*listenerv3.FilterChain, error) {
	var chains []*listenerv3.FilterChain
	for i, r := range l.SNIRoutes {
		f, err := t.tcpProxy(l, r.Cluster, nil)
		if err != nil {
			return nil, err
		}
		chains = append(chains, &listenerv3.FilterChain{
			Name:             fmt.Sprintf("%s/sni-%d", l.Name, i),
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: r.SNI},
			Filters:          []*listenerv3.Filter{f},
		})
	}
	if l.Cluster != "" || len(l.WeightedClusters) > 0 {
		f, err := t.tcpProxy(l, l.Cluster, l.WeightedClusters)
		if err != nil {
			return nil, err
		}
		chains = append(chains, &listenerv3.FilterChain{Name: l.Name + "/default", Filters: []*listenerv3.Filter{f}})
	}
	return chains, nil
}

func (t *translator) tcpProxy(l *config.Listener, cluster string, weighted []config.WeightedCluster) (*listenerv3.Filter, error) {
	tp := &tcpv3.TcpProxy{StatPrefix: l.Name, IdleTimeout: duration(l.IdleTimeout)}
	if cluster != "" {
		tp.ClusterSpecifier = &tcpv3.TcpProxy_Cluster{Cluster: cluster}
	} else {
		wc := &tcpv3.TcpProxy_WeightedCluster{}
		for _, w := range weighted {
			wc.Clusters = append(wc.Clusters, &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: w.Cluster, Weight: w.Weight})
		}
		tp.ClusterSpecifier = &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	if l.AccessLog != nil {
		al, err := t.accessLog(l.Name, l.AccessLog, tcpLogFields)
		if err != nil {
			return nil, err
		}
		tp.AccessLog = al
	}
	return networkFilter(NameTCPProxy, tp)
}

// duration converts an optional duration; nil stays nil (Envoy's default).
func duration(d *config.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(d.Std())
}

func durationOr(d *config.Duration, def time.Duration) *durationpb.Duration {
	if d == nil {
		return durationpb.New(def)
	}
	return durationpb.New(d.Std())
}

func typed(m proto.Message) (*anypb.Any, error) { return resources.NewAny(m) }
