// Package cors is the built-in CORS HTTP filter. As in Envoy, the listener
// carries an empty envoy.extensions.filters.http.cors.v3.Cors that only
// enables the filter, and the policy
// (envoy.extensions.filters.http.cors.v3.CorsPolicy) comes per virtual host
// or route through typed_per_filter_config["envoy.filters.http.cors"], which
// reaches this package as a route override (filter.RouteFactory). Without a
// policy the filter passes everything through.
//
// With a policy and a request carrying a non-empty Origin:
//   - a preflight (OPTIONS with Access-Control-Request-Method) is answered
//     locally with 200 and the allow-origin, -credentials, -methods, -headers,
//     max-age and private-network headers; a preflight from an origin that
//     does not match is forwarded upstream (forward_not_matching_preflights,
//     default true) or answered with 200 and no allow-origin;
//   - any other request goes on, and the response gets
//     access-control-allow-origin (the request's origin), -allow-credentials
//     and -expose-headers when the origin matches;
//   - a non-matching origin gets no CORS headers.
//
// allow_methods or allow_headers "*" echo the preflight's request method or
// headers. filter_enabled (default 100%) and shadow_enabled (default 0%:
// evaluate and count only) follow Envoy; runtime keys are ignored. Unlike
// Envoy, a virtual host policy and a route policy are not merged field by
// field: the most specific policy applies as a whole (the router passes one
// override per filter).
//
// Counters (through filter.Env.Stats, label filter = the configured name):
// cors_origin_valid, cors_origin_invalid.
package cors

import (
	"fmt"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// ConfigType is the listener-level config message (enables the filter).
const ConfigType = "envoy.extensions.filters.http.cors.v3.Cors"

// PolicyType is the per-route config message.
const PolicyType = "envoy.extensions.filters.http.cors.v3.CorsPolicy"

// Factory builds CORS filters. The zero value is ready to use.
type Factory struct{}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory: the listener-level filter has no policy.
func (Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	var pb corsv3.Cors
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("cors: %w", err)
	}
	return &corsFilter{index: envIndex(env)}, nil
}

// BuildOverride implements filter.RouteFactory: cfg is a CorsPolicy.
func (Factory) BuildOverride(cfg *anypb.Any, _ filter.Filter, env *filter.Env) (filter.Filter, error) {
	var pb corsv3.CorsPolicy
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("cors policy: %w", err)
	}
	p, err := compilePolicy(&pb, env)
	if err != nil {
		return nil, fmt.Errorf("cors policy: %w", err)
	}
	return &corsFilter{index: envIndex(env), policy: p}, nil
}

func envIndex(env *filter.Env) int {
	if env == nil {
		return 0
	}
	return env.Index
}

// policy is a compiled CorsPolicy, immutable and shared by all streams.
type policy struct {
	origins        []strmatch.String
	anyOrigin      bool // a matcher accepts "*": every origin is allowed
	allowMethods   string
	allowHeaders   string
	exposeHeaders  string
	maxAge         string
	credentials    bool
	privateNetwork bool
	forwardUnknown bool
	enabled        xdsconfig.Percent
	shadow         xdsconfig.Percent

	statValid, statInvalid filter.Counter
}

func compilePolicy(pb *corsv3.CorsPolicy, env *filter.Env) (*policy, error) {
	p := &policy{
		allowMethods:   pb.GetAllowMethods(),
		allowHeaders:   pb.GetAllowHeaders(),
		exposeHeaders:  pb.GetExposeHeaders(),
		maxAge:         pb.GetMaxAge(),
		credentials:    pb.GetAllowCredentials().GetValue(),
		privateNetwork: pb.GetAllowPrivateNetworkAccess().GetValue(),
		forwardUnknown: true,
	}
	if v := pb.GetForwardNotMatchingPreflights(); v != nil {
		p.forwardUnknown = v.GetValue()
	}
	for i, m := range pb.GetAllowOriginStringMatch() {
		sm, err := strmatch.CompileString(m)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d]: %w", i, err)
		}
		if sm.MatchString("*") {
			p.anyOrigin = true
		}
		p.origins = append(p.origins, sm)
	}
	for _, f := range [...]struct{ name, value string }{{"allow_methods", p.allowMethods},
		{"allow_headers", p.allowHeaders}, {"expose_headers", p.exposeHeaders}, {"max_age", p.maxAge}} {
		if err := checkHeaderValue(f.value); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	var err error
	if p.enabled, err = xdsconfig.FromRuntime(pb.GetFilterEnabled(), xdsconfig.All()); err != nil {
		return nil, fmt.Errorf("filter_enabled: %w", err)
	}
	if p.shadow, err = xdsconfig.FromRuntime(pb.GetShadowEnabled(), xdsconfig.None()); err != nil {
		return nil, fmt.Errorf("shadow_enabled: %w", err)
	}
	name := ""
	if env != nil {
		name = env.Name
	}
	p.statValid = xdsconfig.Counter(env, "cors_origin_valid", "filter", name)
	p.statInvalid = xdsconfig.Counter(env, "cors_origin_invalid", "filter", name)
	return p, nil
}

func checkHeaderValue(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return fmt.Errorf("invalid byte %q at offset %d", c, i)
		}
	}
	return nil
}

func (p *policy) allows(origin []byte) bool {
	if p.anyOrigin {
		return true
	}
	for i := range p.origins {
		if p.origins[i].Match(origin) {
			return true
		}
	}
	return false
}

// corsFilter is the listener filter (policy nil) or a route's override.
type corsFilter struct {
	index  int
	policy *policy
}

var _ filter.Filter = (*corsFilter)(nil)

// OnRequest implements filter.Filter.
func (f *corsFilter) OnRequest(s *filter.Stream) filter.Status {
	p := f.policy
	if p == nil {
		return filter.Continue
	}
	enabled := p.enabled.Sample()
	if !enabled && !p.shadow.Sample() {
		return filter.Continue
	}
	h := &s.Req.Header
	origin, ok := h.Get("origin")
	if !ok || len(origin) == 0 {
		return filter.Continue
	}
	allowed := p.allows(origin)
	if allowed {
		p.statValid.Inc()
	} else {
		p.statInvalid.Inc()
	}
	if !enabled { // shadow mode: evaluate and count only
		return filter.Continue
	}
	if allowed {
		// The response phase adds the headers of the policy that matched.
		s.SetState(f.index, p)
	}
	if string(s.Req.Method) != "OPTIONS" {
		return filter.Continue
	}
	reqMethod, ok := h.Get("access-control-request-method")
	if !ok || len(reqMethod) == 0 {
		return filter.Continue
	}
	if !allowed && p.forwardUnknown {
		return filter.Continue
	}
	p.preflight(s, origin, reqMethod, allowed)
	return filter.Stop
}

// preflight answers a preflight request locally.
func (p *policy) preflight(s *filter.Stream, origin, reqMethod []byte, allowed bool) {
	r := s.LocalResponse()
	r.Status = 200
	r.ContentLength = 0
	out := &r.Header
	if allowed {
		out.SetBytes("access-control-allow-origin", origin)
	}
	if p.credentials {
		out.Set("access-control-allow-credentials", "true")
	}
	switch p.allowMethods {
	case "":
	case "*":
		out.SetBytes("access-control-allow-methods", reqMethod)
	default:
		out.Set("access-control-allow-methods", p.allowMethods)
	}
	switch p.allowHeaders {
	case "":
	case "*":
		if v, ok := s.Req.Header.Get("access-control-request-headers"); ok && len(v) > 0 {
			out.SetBytes("access-control-allow-headers", v)
		}
	default:
		out.Set("access-control-allow-headers", p.allowHeaders)
	}
	if p.maxAge != "" {
		out.Set("access-control-max-age", p.maxAge)
	}
	if p.privateNetwork {
		if v, ok := s.Req.Header.Get("access-control-request-private-network"); ok && string(v) == "true" {
			out.Set("access-control-allow-private-network", "true")
		}
	}
	s.Resp = r
}

// OnResponse implements filter.Filter.
func (f *corsFilter) OnResponse(s *filter.Stream) {
	p, ok := s.State(f.index).(*policy)
	if !ok || s.Resp == nil {
		return
	}
	origin, _ := s.Req.Header.Get("origin")
	h := &s.Resp.Header
	h.SetBytes("access-control-allow-origin", origin)
	if p.credentials {
		h.Set("access-control-allow-credentials", "true")
	}
	if p.exposeHeaders != "" {
		h.Set("access-control-expose-headers", p.exposeHeaders)
	}
}
