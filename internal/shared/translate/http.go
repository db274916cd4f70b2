package translate

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// hcm builds the HttpConnectionManager of an http or https listener, with
// its route configuration (named after the listener) inline, or in ADS form
// fetched through RDS.
func (t *translator) hcm(l *config.Listener) (*listenerv3.Filter, error) {
	m := &hcmv3.HttpConnectionManager{
		CodecType:         hcmv3.HttpConnectionManager_AUTO,
		StatPrefix:        l.Name,
		StreamIdleTimeout: duration(l.StreamIdleTimeout),
		RequestTimeout:    duration(l.RequestTimeout),
		XffNumTrustedHops: l.XFFNumTrustedHops,
	}
	if l.MaxRequestHeadersKB != 0 {
		m.MaxRequestHeadersKb = wrapperspb.UInt32(l.MaxRequestHeadersKB)
	}
	// omnirelay.v1's defaults are the safe ones for an edge (Envoy's own
	// are off): paths normalized and slashes merged before routing, the
	// peer the trusted client, request ids generated.
	on := func(b *bool) bool { return b == nil || *b }
	m.NormalizePath = wrapperspb.Bool(on(l.NormalizePath))
	m.MergeSlashes = on(l.MergeSlashes)
	m.PathWithEscapedSlashesAction = map[string]hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction{
		"": hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, "keep": hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
		"reject": hcmv3.HttpConnectionManager_REJECT_REQUEST, "unescape_and_redirect": hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		"unescape_and_forward": hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD,
	}[l.PathWithEscapedSlashes]
	m.UseRemoteAddress = wrapperspb.Bool(on(l.UseRemoteAddress))
	m.SkipXffAppend = l.SkipXFFAppend
	if l.GenerateRequestID != nil {
		m.GenerateRequestId = wrapperspb.Bool(*l.GenerateRequestID)
	}
	m.PreserveExternalRequestId = l.PreserveExternalRequestID
	if l.IdleTimeout != nil {
		m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: duration(l.IdleTimeout)}
	}
	filters, cors, err := t.httpFilters(l)
	if err != nil {
		return nil, err
	}
	m.HttpFilters = filters
	rc, err := t.routeConfig(l, cors)
	if err != nil {
		return nil, err
	}
	if t.opts.ADS {
		m.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: rds(rc.Name)}
		t.routes = append(t.routes, rc)
	} else {
		m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	}
	if l.AccessLog != nil {
		if m.AccessLog, err = t.accessLog(l.Name, l.AccessLog, httpLogFields); err != nil {
			return nil, err
		}
	}
	if err := t.telemetry(m); err != nil {
		return nil, err
	}
	return networkFilter(NameHCM, m)
}

// httpFilters returns the listener's HTTP filters in the order written, the
// router last. A local_ratelimit filter without a bucket of its own is added
// when only routes set limits: Envoy applies per-route configs only for
// filters present in the chain. cors is the policy each virtual host gets.
func (t *translator) httpFilters(l *config.Listener) ([]*hcmv3.HttpFilter, *config.CORS, error) {
	var out []*hcmv3.HttpFilter
	var cors *config.CORS
	hasRL := false
	optional := false
	rbacSeen := 0
	add := func(name string, m proto.Message) error {
		a, err := typed(m)
		if err != nil {
			return err
		}
		out = append(out, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}, IsOptional: optional})
		return nil
	}
	for _, f := range l.Filters {
		var err error
		optional = f.Optional
		switch {
		case f.Headers != nil:
			err = add(NameHeaderMut, headerMutation(f.Headers))
		case f.LocalRateLimit != nil:
			hasRL = true
			err = add(NameLocalRL, localRateLimit(l.Name, f.LocalRateLimit))
		case f.Fault != nil:
			err = add(NameFault, fault(f.Fault))
		case f.CORS != nil:
			cors = f.CORS
			err = add(NameCORS, &corsv3.Cors{})
		case f.Extension != nil:
			err = t.addExtension(f.Extension, add)
		case f.JWT != nil, f.RBAC != nil:
			err = addAuthn(&f, &rbacSeen, add)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	// Route limits and the router are not optional: without them the
	// routes would run without their limits, or not at all.
	optional = false
	if !hasRL && routesLimit(l) {
		if err := add(NameLocalRL, &localrlv3.LocalRateLimit{StatPrefix: l.Name}); err != nil {
			return nil, nil, err
		}
	}
	if err := add(NameRouter, &routerv3.Router{}); err != nil {
		return nil, nil, err
	}
	return out, cors, nil
}

// adsSource is the config source of every resource fetched over ADS.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func rds(name string) *hcmv3.Rds {
	return &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}
}

func routesLimit(l *config.Listener) bool {
	for _, vh := range l.VirtualHosts {
		for _, r := range vh.Routes {
			if r.LocalRateLimit != nil {
				return true
			}
		}
	}
	return false
}

func headerMutation(h *config.HeadersFilter) *headermutationv3.HeaderMutation {
	return &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
		RequestMutations:  mutations(h.RequestRemove, h.RequestAdd),
		ResponseMutations: mutations(h.ResponseRemove, h.ResponseAdd),
	}}
}

// mutations removes before it adds, so that removing and adding one name
// replaces the header.
func mutations(remove []string, add config.StringMap) []*mutationv3.HeaderMutation {
	var out []*mutationv3.HeaderMutation
	for _, n := range remove {
		out = append(out, &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Remove{Remove: strings.ToLower(n)}})
	}
	for _, kv := range add {
		out = append(out, &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Append{Append: headerValue(kv)}})
	}
	return out
}

func headerValue(kv config.KeyValue) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: strings.ToLower(kv.Key), Value: kv.Value},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	}
}

func headerValues(m config.StringMap) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, kv := range m {
		out = append(out, headerValue(kv))
	}
	return out
}

func lowerAll(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, strings.ToLower(n))
	}
	return out
}

func hundredPercent() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
	}
}

// localRateLimit builds an enabled, enforced token bucket. Envoy's
// filter_enabled and filter_enforced default to 0%: without them the filter
// would do nothing.
func localRateLimit(statPrefix string, r *config.LocalRateLimit) *localrlv3.LocalRateLimit {
	perFill := r.TokensPerFill
	if perFill == 0 {
		perFill = r.MaxTokens
	}
	status := r.Status
	if status == 0 {
		status = config.DefaultRateLimitStatus
	}
	return &localrlv3.LocalRateLimit{
		StatPrefix: statPrefix,
		Status:     &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     r.MaxTokens,
			TokensPerFill: wrapperspb.UInt32(perFill),
			FillInterval:  durationOr(r.FillInterval, config.DefaultRateLimitFillInterval),
		},
		FilterEnabled:  hundredPercent(),
		FilterEnforced: hundredPercent(),
	}
}

func percent(p *uint32) *typev3.FractionalPercent {
	n := uint32(100)
	if p != nil {
		n = *p
	}
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

func fault(f *config.Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		out.Delay = &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: duration(d.Fixed)},
			Percentage:         percent(d.Percent),
		}
	}
	if a := f.Abort; a != nil {
		out.Abort = &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: a.Status},
			Percentage: percent(a.Percent),
		}
	}
	return out
}

func corsPolicy(c *config.CORS) *corsv3.CorsPolicy {
	p := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.AllowMethods, ","),
		AllowHeaders:  strings.Join(c.AllowHeaders, ","),
		ExposeHeaders: strings.Join(c.ExposeHeaders, ","),
	}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}},
			})
			continue
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, exact(o))
	}
	if c.MaxAge != nil {
		p.MaxAge = strconv.FormatInt(int64(c.MaxAge.Std().Seconds()), 10)
	}
	if c.AllowCredentials {
		p.AllowCredentials = wrapperspb.Bool(true)
	}
	return p
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func (t *translator) routeConfig(l *config.Listener, cors *config.CORS) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{Name: l.Name}
	for _, vh := range l.VirtualHosts {
		out := &routev3.VirtualHost{Name: vh.Name, Domains: vh.EffectiveDomains()}
		md, err := routeMetadata(vh.Metadata)
		if err != nil {
			return nil, fmt.Errorf("virtual host %q: %w", vh.Name, err)
		}
		out.Metadata = md
		if cors != nil {
			a, err := typed(corsPolicy(cors))
			if err != nil {
				return nil, err
			}
			out.TypedPerFilterConfig = map[string]*anypb.Any{NameCORS: a}
		}
		for j := range vh.Routes {
			r, err := t.route(l, &vh.Routes[j])
			if err != nil {
				return nil, fmt.Errorf("virtual host %q: routes[%d]: %w", vh.Name, j, err)
			}
			out.Routes = append(out.Routes, r)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, out)
	}
	return rc, nil
}

func (t *translator) route(l *config.Listener, r *config.Route) (*routev3.Route, error) {
	out := &routev3.Route{
		Name:                    r.Name,
		Match:                   routeMatch(&r.Match),
		RequestHeadersToAdd:     headerValues(r.RequestHeadersAdd),
		RequestHeadersToRemove:  lowerAll(r.RequestHeadersRemove),
		ResponseHeadersToAdd:    headerValues(r.ResponseHeadersAdd),
		ResponseHeadersToRemove: lowerAll(r.ResponseHeadersRemove),
	}
	if md, err := routeMetadata(r.Metadata); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	} else {
		out.Metadata = md
	}
	switch {
	case r.Redirect != nil:
		out.Action = &routev3.Route_Redirect{Redirect: redirect(r.Redirect)}
	case r.DirectResponse != nil:
		dr := &routev3.DirectResponseAction{Status: r.DirectResponse.Status}
		if r.DirectResponse.Body != "" {
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.DirectResponse.Body}}
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
	default:
		out.Action = &routev3.Route_Route{Route: routeAction(r)}
	}
	if r.LocalRateLimit != nil {
		a, err := typed(localRateLimit(l.Name+"_route", r.LocalRateLimit))
		if err != nil {
			return nil, err
		}
		out.TypedPerFilterConfig = map[string]*anypb.Any{NameLocalRL: a}
	}
	if err := routeTelemetry(out, r); err != nil {
		return nil, err
	}
	return out, nil
}

func routeMatch(m *config.RouteMatch) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch {
	case m.Path != "":
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case m.PathRegex != "":
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	case m.PathPrefix != "":
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.PathPrefix}
	default:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	switch len(m.Methods) {
	case 0:
	case 1:
		out.Headers = append(out.Headers, stringHeader(":method", exact(m.Methods[0])))
	default:
		quoted := make([]string, len(m.Methods))
		for i, method := range m.Methods {
			quoted[i] = regexp.QuoteMeta(method)
		}
		out.Headers = append(out.Headers, stringHeader(":method", &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
				Regex: "^(" + strings.Join(quoted, "|") + ")$",
			}},
		}))
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, headerMatcher(h))
	}
	for _, kv := range m.Query {
		out.QueryParameters = append(out.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         kv.Key,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact(kv.Value)},
		})
	}
	if m.GRPC {
		out.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	}
	return out
}

func stringHeader(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func headerMatcher(h config.HeaderMatcher) *routev3.HeaderMatcher {
	name := strings.ToLower(h.Name)
	var out *routev3.HeaderMatcher
	switch {
	case h.Present:
		out = &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	case h.Prefix != "":
		out = stringHeader(name, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.Prefix}})
	case h.Suffix != "":
		out = stringHeader(name, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: h.Suffix}})
	case h.Contains != "":
		out = stringHeader(name, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: h.Contains}})
	case h.Regex != "":
		out = stringHeader(name, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}}})
	default:
		out = stringHeader(name, exact(h.Exact))
	}
	out.InvertMatch = h.Invert
	return out
}

var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func redirect(r *config.Redirect) *routev3.RedirectAction {
	code := r.Code
	if code == 0 {
		code = config.DefaultRedirectCode
	}
	out := &routev3.RedirectAction{HostRedirect: r.Host, ResponseCode: redirectCodes[code], StripQuery: r.StripQuery}
	switch {
	case r.HTTPS:
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
	case r.Scheme != "":
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	switch {
	case r.Path != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Path}
	case r.PrefixRewrite != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.PrefixRewrite}
	}
	return out
}

func routeAction(r *config.Route) *routev3.RouteAction {
	ra := &routev3.RouteAction{PrefixRewrite: r.PrefixRewrite, Timeout: duration(r.Timeout)}
	if r.Cluster != "" {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: r.Cluster}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, w := range r.WeightedClusters {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: w.Cluster, Weight: wrapperspb.UInt32(w.Weight)})
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.HostRewrite != "" {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.HostRewrite}
	}
	if r.Retry != nil {
		ra.RetryPolicy = retryPolicy(r.Retry)
	}
	for _, h := range r.HashPolicy {
		hp := &routev3.RouteAction_HashPolicy{}
		if h.SourceIP {
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{
				ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
			}
		} else {
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(h.Header)},
			}
		}
		ra.HashPolicy = append(ra.HashPolicy, hp)
	}
	return ra
}

// retryPolicy maps attempts (every try) to Envoy's num_retries (retries
// after the first try).
func retryPolicy(r *config.Retry) *routev3.RetryPolicy {
	attempts := r.Attempts
	if attempts == 0 {
		attempts = config.DefaultRetryAttempts
	}
	on := r.On
	if len(on) == 0 {
		on = config.DefaultRetryOn
	}
	if len(r.RetriableStatusCodes) > 0 && !slices.Contains(on, "retriable-status-codes") {
		on = append(append([]string(nil), on...), "retriable-status-codes")
	}
	out := &routev3.RetryPolicy{
		RetryOn:              strings.Join(on, ","),
		NumRetries:           wrapperspb.UInt32(attempts - 1),
		PerTryTimeout:        duration(r.PerTryTimeout),
		RetriableStatusCodes: r.RetriableStatusCodes,
	}
	if b := r.Backoff; b != nil {
		out.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: duration(b.Base), MaxInterval: duration(b.Max)}
	}
	return out
}

// Access log fields, as Envoy command operators. The names are those the
// OmniRelay data plane writes (docs/config.md), so that Envoy and OmniRelay
// proxies fed the same resources produce the same records.
var (
	httpLogFields = map[string]string{
		"start_time":        "%START_TIME%",
		"method":            "%REQ(:METHOD)%",
		"authority":         "%REQ(:AUTHORITY)%",
		"path":              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"protocol":          "%PROTOCOL%",
		"status":            "%RESPONSE_CODE%",
		"response_flags":    "%RESPONSE_FLAGS%",
		"bytes_received":    "%BYTES_RECEIVED%",
		"bytes_sent":        "%BYTES_SENT%",
		"duration_us":       "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
		"route":             "%ROUTE_NAME%",
		"upstream_cluster":  "%UPSTREAM_CLUSTER%",
		"upstream_host":     "%UPSTREAM_HOST%",
		"attempts":          "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
		"downstream_remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
		"peer_identity":     "%DOWNSTREAM_PEER_URI_SAN%",
		"user_agent":        "%REQ(USER-AGENT)%",
		"request_id":        "%REQ(X-REQUEST-ID)%",
	}
	tcpLogFields = map[string]string{
		"start_time":        "%START_TIME%",
		"response_flags":    "%RESPONSE_FLAGS%",
		"bytes_received":    "%BYTES_RECEIVED%",
		"bytes_sent":        "%BYTES_SENT%",
		"duration_us":       "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
		"upstream_cluster":  "%UPSTREAM_CLUSTER%",
		"upstream_host":     "%UPSTREAM_HOST%",
		"server_name":       "%REQUESTED_SERVER_NAME%",
		"downstream_remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
		"peer_identity":     "%DOWNSTREAM_PEER_URI_SAN%",
	}
)

func (t *translator) accessLog(listener string, al *config.AccessLog, fields map[string]string) ([]*accesslogv3.AccessLog, error) {
	values := make(map[string]any, len(fields)+1)
	for k, v := range fields {
		values[k] = v
	}
	values["listener"] = listener
	js, err := structpb.NewStruct(values)
	if err != nil {
		return nil, fmt.Errorf("access log format: %w", err)
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}
	var name string
	var m proto.Message
	switch al.Path {
	case "stdout":
		name, m = NameStdoutLog, &streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}}
	case "stderr":
		name, m = NameStderrLog, &streamv3.StderrAccessLog{AccessLogFormat: &streamv3.StderrAccessLog_LogFormat{LogFormat: format}}
	default:
		name, m = NameFileLog, &filev3.FileAccessLog{Path: t.cfg.FilePath(al.Path), AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format}}
	}
	a, err := typed(m)
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}}, nil
}
