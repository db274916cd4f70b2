package runtime

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/forwarded"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/httpconn"
	"github.com/omnirelay/omnirelay/internal/dataplane/listener"
	"github.com/omnirelay/omnirelay/internal/dataplane/netrbac"
	"github.com/omnirelay/omnirelay/internal/dataplane/pathnorm"
	"github.com/omnirelay/omnirelay/internal/dataplane/router"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

const (
	hcmType      = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyType = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	routerType   = "envoy.extensions.filters.http.router.v3.Router"
)

func (rt *Runtime) compileListeners(snap *resources.Snapshot, v *Version) (map[string]*listener.Config, error) {
	routes := map[string]*routev3.RouteConfiguration{}
	for _, r := range snap.Routes {
		routes[r.GetName()] = r
	}
	out := map[string]*listener.Config{}
	for _, l := range snap.Listeners {
		lc, err := rt.compileListener(l, routes, v)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		out[lc.Name] = lc
	}
	return out, nil
}

func (rt *Runtime) compileListener(l *listenerv3.Listener, routes map[string]*routev3.RouteConfiguration, v *Version) (*listener.Config, error) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, errors.New("address: only socket addresses are supported")
	}
	pv, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok {
		return nil, errors.New("address: port_value is required")
	}
	lc := &listener.Config{Name: l.GetName(), Address: joinHostPort(sa.GetAddress(), pv.PortValue), Metrics: rt.lmetrics}
	for _, lf := range l.GetListenerFilters() {
		switch lf.GetName() {
		case "envoy.filters.listener.tls_inspector":
			lc.InspectTLS = true
		case "envoy.filters.listener.http_inspector":
		default:
			return nil, fmt.Errorf("listener_filters: %q is not supported", lf.GetName())
		}
	}
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(append([]*listenerv3.FilterChain(nil), chains...), dc)
	}
	for i, fc := range chains {
		ch, err := rt.compileChain(l.GetName(), i, fc, routes, v)
		if err != nil {
			return nil, fmt.Errorf("filter_chains[%d]: %w", i, err)
		}
		if len(ch.ServerNames) > 0 || ch.TransportProtocol != "" {
			lc.InspectTLS = true
		}
		lc.Chains = append(lc.Chains, ch)
	}
	if len(lc.Chains) == 0 {
		return nil, errors.New("no filter chains")
	}
	return lc, nil
}

func joinHostPort(host string, port uint32) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

func (rt *Runtime) compileChain(lname string, idx int, fc *listenerv3.FilterChain, routes map[string]*routev3.RouteConfiguration, v *Version) (*listener.Chain, error) {
	ch := &listener.Chain{Key: fc.GetName()}
	if ch.Key == "" {
		ch.Key = "#" + strconv.Itoa(idx)
	}
	if m := fc.GetFilterChainMatch(); m != nil {
		switch tp := m.GetTransportProtocol(); tp {
		case "", "tls", "raw_buffer":
			ch.TransportProtocol = tp
		default:
			return nil, fmt.Errorf("filter_chain_match.transport_protocol %q is not supported (tls, raw_buffer)", tp)
		}
		for _, n := range m.GetServerNames() {
			ch.ServerNames = append(ch.ServerNames, strings.ToLower(n))
		}
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		cfg, err := rt.downstreamTLS(ts)
		if err != nil {
			return nil, fmt.Errorf("transport_socket: %w", err)
		}
		ch.TLS = cfg
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, errors.New("filters: empty")
	}
	last := filters[len(filters)-1]
	if err := rt.compileConnRBAC(ch, lname, filters[:len(filters)-1]); err != nil {
		return nil, err
	}
	if ch.Network != nil && typeName(last.GetTypedConfig()) != tcpProxyType {
		return nil, errNetworkOnHTTP // netext.go
	}
	switch typeName(last.GetTypedConfig()) {
	case hcmType:
		hcm := &hcmv3.HttpConnectionManager{}
		if err := last.GetTypedConfig().UnmarshalTo(hcm); err != nil {
			return nil, fmt.Errorf("http_connection_manager: %w", err)
		}
		hc, err := rt.compileHCM(lname, hcm, routes, v)
		if err != nil {
			return nil, fmt.Errorf("http_connection_manager: %w", err)
		}
		ch.HTTP = hc
		if ch.TLS != nil && len(ch.TLS.NextProtos) == 0 {
			ch.TLS.NextProtos = []string{"h2", "http/1.1"}
		}
	case tcpProxyType:
		tp := &tcpv3.TcpProxy{}
		if err := last.GetTypedConfig().UnmarshalTo(tp); err != nil {
			return nil, fmt.Errorf("tcp_proxy: %w", err)
		}
		p, err := rt.compileTCPProxy(lname, tp, v)
		if err != nil {
			return nil, fmt.Errorf("tcp_proxy: %w", err)
		}
		ch.TCP = p
	default:
		return nil, fmt.Errorf("filters[0]: network filter %q (%s) is not supported", last.GetName(), last.GetTypedConfig().GetTypeUrl())
	}
	return ch, nil
}

// compileConnRBAC compiles the network filters before the terminal one:
// only network RBAC may stand there (as Envoy's rbac before tcp_proxy or
// http_connection_manager); it becomes the chain's Authorize hook.
// Extension network filters may stand there too (netext.go).
func (rt *Runtime) compileConnRBAC(ch *listener.Chain, lname string, fs []*listenerv3.Filter) error {
	var ps []*netrbac.Policy
	for i, f := range fs {
		if typeName(f.GetTypedConfig()) == extension.ConfigType {
			if err := rt.addNetworkExtension(ch, lname, f); err != nil { // netext.go
				return fmt.Errorf("filters[%d]: %w", i, err)
			}
			continue
		}
		if typeName(f.GetTypedConfig()) != netrbac.ConfigType {
			return fmt.Errorf("filters[%d]: network filter %q (%s) is not supported before the last filter (only rbac is)", i, f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
		p, err := netrbac.Build(f.GetName(), f.GetTypedConfig(), filterStats{rt.opt.Stats, f.GetName()}, rt.opt.Log)
		if err != nil {
			return fmt.Errorf("filters[%d]: %w", i, err)
		}
		ps = append(ps, p)
	}
	if len(ps) > 0 {
		ch.Authorize = netrbac.Authorizer(ps...)
	}
	return nil
}

func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		return u[i+1:]
	}
	return u
}

func (rt *Runtime) compileTCPProxy(lname string, tp *tcpv3.TcpProxy, v *Version) (*listener.TCPProxy, error) {
	set := v.Clusters
	p := &listener.TCPProxy{
		Clusters: func(name string) listener.Upstream {
			if c := set.Get(name); c != nil {
				return c
			}
			return nil
		},
	}
	switch cs := tp.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		p.Cluster = cs.Cluster
		if set.Get(cs.Cluster) == nil {
			return nil, fmt.Errorf("cluster %q not found", cs.Cluster)
		}
	case *tcpv3.TcpProxy_WeightedClusters:
		for _, w := range cs.WeightedClusters.GetClusters() {
			if set.Get(w.GetName()) == nil {
				return nil, fmt.Errorf("weighted_clusters: cluster %q not found", w.GetName())
			}
			p.Weighted = append(p.Weighted, listener.WeightedTarget{Cluster: w.GetName(), Weight: w.GetWeight()})
		}
	default:
		return nil, errors.New("cluster or weighted_clusters is required")
	}
	if tp.GetIdleTimeout() != nil {
		p.IdleTimeout = tp.GetIdleTimeout().AsDuration()
	}
	if tp.GetMaxConnectAttempts() != nil {
		p.MaxConnectAttempts = int(tp.GetMaxConnectAttempts().GetValue())
	}
	ls := rt.opt.Stats.Listener(lname)
	p.Observe = ls.TCP
	for i, al := range tp.GetAccessLog() {
		lg, err := rt.accessLogger(al)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		p.AccessLogs = append(p.AccessLogs, lg)
	}
	return p.Init(), nil
}

func (rt *Runtime) compileHCM(lname string, hcm *hcmv3.HttpConnectionManager, routes map[string]*routev3.RouteConfiguration, v *Version) (*httpconn.Config, error) {
	var rc *routev3.RouteConfiguration
	switch r := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rc = r.RouteConfig
	case *hcmv3.HttpConnectionManager_Rds:
		rc = routes[r.Rds.GetRouteConfigName()]
		if rc == nil {
			return nil, fmt.Errorf("rds: route configuration %q not found", r.Rds.GetRouteConfigName())
		}
	default:
		return nil, errors.New("route_config or rds is required")
	}

	// Build the listener-level filters; the router must be last.
	hfs := hcm.GetHttpFilters()
	if len(hfs) == 0 || typeName(hfs[len(hfs)-1].GetTypedConfig()) != routerType {
		return nil, errors.New("http_filters: the last filter must be envoy.filters.http.router")
	}
	if len(hfs)-1 > filter.MaxFilters {
		return nil, fmt.Errorf("http_filters: %d filters, at most %d are supported", len(hfs)-1, filter.MaxFilters)
	}
	var filters []filter.Filter
	byName := map[string]int{}
	factories := map[int]filter.Factory{}
	for i, hf := range hfs[:len(hfs)-1] {
		if hf.GetDisabled() {
			return nil, fmt.Errorf("http_filters[%d] %q: disabled-by-default filters are not supported", i, hf.GetName())
		}
		f, ok := rt.opt.Filters.Lookup(hf.GetTypedConfig().GetTypeUrl())
		if !ok {
			if hf.GetIsOptional() {
				continue
			}
			return nil, fmt.Errorf("http_filters[%d] %q: unsupported filter type %s", i, hf.GetName(), hf.GetTypedConfig().GetTypeUrl())
		}
		env := &filter.Env{Index: len(filters), Name: hf.GetName(), Stats: filterStats{rt.opt.Stats, hf.GetName()}}
		built, err := f.Build(hf.GetTypedConfig(), env)
		if err != nil {
			return nil, fmt.Errorf("http_filters[%d] %q: %w", i, hf.GetName(), err)
		}
		byName[hf.GetName()] = len(filters)
		factories[len(filters)] = f
		filters = append(filters, built)
	}
	fb := func(name string, cfg *anypb.Any) (int, filter.Filter, error) {
		idx, ok := byName[name]
		if !ok {
			return -1, nil, nil
		}
		rf, ok := factories[idx].(filter.RouteFactory)
		if !ok {
			return -1, nil, fmt.Errorf("filter %q has no per-route configuration", name)
		}
		f, err := rf.BuildOverride(cfg, filters[idx], &filter.Env{Index: idx, Name: name, Stats: filterStats{rt.opt.Stats, name}})
		return idx, f, err
	}
	table, err := router.Compile(rc, fb)
	if err != nil {
		return nil, err
	}
	rtr := &router.Router{Clusters: v.Clusters, Table: table}
	cfg := &httpconn.Config{
		Chain:      filter.NewChain(rtr, filters...),
		ServerName: hcm.GetServerName(),
	}
	lim := http1.DefaultLimits()
	if kb := hcm.GetMaxRequestHeadersKb(); kb != nil {
		lim.MaxHeaderBytes = int(kb.GetValue()) << 10
	}
	if n := hcm.GetCommonHttpProtocolOptions().GetMaxHeadersCount(); n != nil {
		lim.MaxHeaders = int(n.GetValue())
	}
	cfg.Limits = lim
	if d := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		cfg.IdleTimeout = d.AsDuration()
	}
	if d := hcm.GetRequestHeadersTimeout(); d != nil && d.AsDuration() > 0 {
		cfg.RequestHeadersTimeout = d.AsDuration()
	}
	// Envoy's defaults: no normalization, XFF not appended, request ids
	// generated (omnirelay.v1 sets the safer choices explicitly).
	cfg.Paths = pathnorm.Options{
		Normalize:      hcm.GetNormalizePath().GetValue(),
		MergeSlashes:   hcm.GetMergeSlashes(),
		EscapedSlashes: escapedSlashes(hcm.GetPathWithEscapedSlashesAction()),
	}
	cfg.Forwarded = forwarded.Options{
		UseRemoteAddress:          hcm.GetUseRemoteAddress().GetValue(),
		TrustedHops:               hcm.GetXffNumTrustedHops(),
		SkipXFFAppend:             hcm.GetSkipXffAppend(),
		GenerateRequestID:         hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue(),
		PreserveExternalRequestID: hcm.GetPreserveExternalRequestId(),
	}
	ls := rt.opt.Stats.Listener(lname)
	cfg.Observe = func(_ *filter.Stream, status int, d time.Duration) {
		ls.Request(status)
		ls.Duration.Observe(d.Seconds())
	}
	for i, al := range hcm.GetAccessLog() {
		if typeName(al.GetTypedConfig()) == otelAccessLogType {
			continue // telemetry: compiled by rt.tracer below
		}
		lg, err := rt.accessLogger(al)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		cfg.AccessLogs = append(cfg.AccessLogs, lg)
	}
	if cfg.Tracer, err = rt.tracer(lname, hcm, rc); err != nil { // telemetry
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return cfg.Init(), nil
}

// filterStats gives filters counters named after the filter they count for.
type filterStats struct {
	s      *stats.Stats
	filter string
}

func (f filterStats) Counter(name string, _ ...string) filter.Counter {
	return f.s.FilterCounter(f.filter, name)
}

// accessLogger is called with rt.mu held (from apply).
func escapedSlashes(a hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction) pathnorm.EscapedSlashes {
	switch a {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		return pathnorm.RejectEscapedSlashes
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		return pathnorm.UnescapeAndRedirect
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		return pathnorm.UnescapeAndForward
	}
	return pathnorm.KeepEscapedSlashes // KEEP_UNCHANGED and the unspecified default
}

func (rt *Runtime) accessLogger(al *accesslogv3.AccessLog) (*slog.Logger, error) {
	var w io.Writer
	switch typeName(al.GetTypedConfig()) {
	case "envoy.extensions.access_loggers.file.v3.FileAccessLog":
		fl := &filev3.FileAccessLog{}
		if err := al.GetTypedConfig().UnmarshalTo(fl); err != nil {
			return nil, err
		}
		switch fl.GetPath() {
		case "/dev/stdout":
			w = os.Stdout
		case "/dev/stderr":
			w = os.Stderr
		default:
			f := rt.logFiles[fl.GetPath()]
			if f == nil {
				var err error
				if f, err = os.OpenFile(fl.GetPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
					return nil, err
				}
				rt.logFiles[fl.GetPath()] = f
			}
			w = f
		}
	case "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog":
		w = os.Stdout
	case "envoy.extensions.access_loggers.stream.v3.StderrAccessLog":
		w = os.Stderr
	default:
		return nil, fmt.Errorf("access logger %q is not supported", al.GetName())
	}
	// Records carry their own fields; the handler adds only time and level.
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.LevelKey || a.Key == slog.MessageKey {
			return slog.Attr{}
		}
		return a
	}})), nil
}

// downstreamTLS compiles a DownstreamTlsContext. Every certificate and
// validation context, inline or by SDS name, goes through the secrets
// package, so that handshake failures carry a reason and SDS secrets are
// read live at each handshake.
func (rt *Runtime) downstreamTLS(ts *corev3.TransportSocket) (*tls.Config, error) {
	if typeName(ts.GetTypedConfig()) != "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" {
		return nil, fmt.Errorf("transport socket %q is not supported", ts.GetName())
	}
	d := &tlsv3.DownstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
		return nil, err
	}
	common := d.GetCommonTlsContext()
	p, err := secrets.Compile(common, rt.opt.Secrets)
	if err != nil {
		return nil, err
	}
	if len(p.Static) == 0 && len(p.Certs) == 0 {
		return nil, errors.New("tls_certificates or tls_certificate_sds_secret_configs: at least one certificate is required")
	}
	p.OCSPPolicy = secrets.OCSPPolicyFromProto(d.GetOcspStaplePolicy())
	if p.OCSPPolicy == secrets.OCSPMustStaple {
		for i, c := range p.Static {
			if len(c.OCSPStaple) == 0 {
				return nil, fmt.Errorf("tls_certificates[%d]: ocsp_staple_policy MUST_STAPLE needs an ocsp_staple", i)
			}
		}
	}
	p.RequireClientCert = d.GetRequireClientCertificate().GetValue()
	if p.RequireClientCert && p.Validation == nil && p.StaticValidation == nil {
		return nil, errors.New("require_client_certificate needs a validation context")
	}
	return secrets.ServerConfig(p), nil
}
