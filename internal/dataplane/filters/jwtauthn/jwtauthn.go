// Package jwtauthn is the JWT authentication HTTP filter
// (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication): it finds a
// bearer token in the request (header with prefix, query parameter or
// cookie), verifies its signature with github.com/lestrrat-go/jwx/v3 against
// the provider's JWKS (inline, or fetched over HTTP and cached), checks
// issuer, audiences and time claims, and either lets the request on (with
// claims forwarded as headers) or answers 401.
//
// Security properties that must stay true:
//   - a token is only accepted with an algorithm its key allows: the JWK's
//     "alg" when set, else the key type's family; "none" never, HMAC only
//     with symmetric keys from inline config (no RSA-public-key-as-HMAC
//     confusion, no shared secrets from a URL);
//   - with no keys (JWKS endpoint down before the first fetch, or serving
//     garbage) every token fails: access never opens; a later fetch failure
//     keeps the last good keys;
//   - tokens over MaxTokenBytes are rejected undecoded; every failure is a
//     401 with WWW-Authenticate and a body naming no internals;
//   - headers the filter writes (claim headers, payload header) are removed
//     from the incoming request first, so clients cannot forge them.
//
// Verified payloads are published for later filters (RBAC, the DSL) in the
// stream's typed attributes, s.Attrs.Claims.
//
// Remote JWKS: OmniRelay fetches http_uri.uri with its own HTTP client
// rather than through http_uri.cluster (the cluster name is accepted and
// ignored), so a JWKS host needs no mesh cluster; use an https URL.
package jwtauthn

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/localreply"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"

// MetadataNamespace is the dynamic-metadata namespace Envoy publishes JWT
// payloads under; RBAC metadata matchers name it.
const MetadataNamespace = "envoy.filters.http.jwt_authn"

// Factory builds JWT filters. Use NewFactory in a proxy: its factories share
// fetched JWKS across config versions. The zero value works but refetches
// remote keys for every version. Now and Client are for tests (fixed
// clocks, fake transports).
type Factory struct {
	Now    func() time.Time
	Client *http.Client
	jwks   *jwksStore
}

// NewFactory returns a factory whose filters share remote key sets across
// config versions (see jwksStore).
func NewFactory() Factory {
	return Factory{jwks: &jwksStore{m: map[string]*remoteKeys{}}}
}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory.
func (f Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	var pb jwtv3.JwtAuthentication
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	a, err := f.compile(&pb, env)
	if err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	return a, nil
}

func (f Factory) compile(pb *jwtv3.JwtAuthentication, env *filter.Env) (*authn, error) {
	if pb.GetFilterStateRules() != nil {
		return nil, errors.New("filter_state_rules: not supported")
	}
	now := f.Now
	if now == nil {
		now = time.Now
	}
	client := f.Client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	a := &authn{
		providers:   map[string]*provider{},
		reqMap:      map[string]*requirement{},
		bypassCORS:  pb.GetBypassCorsPreflight(),
		strip:       pb.GetStripFailureResponse(),
		allowed:     xdsconfig.Counter(env, "jwt_authn.allowed"),
		denied:      xdsconfig.Counter(env, "jwt_authn.denied"),
		fetchOK:     xdsconfig.Counter(env, "jwt_authn.jwks_fetch_success"),
		fetchFailed: xdsconfig.Counter(env, "jwt_authn.jwks_fetch_failed"),
	}
	onFetch := func(ok bool) {
		if ok {
			a.fetchOK.Inc()
		} else {
			a.fetchFailed.Inc()
		}
	}
	names := make([]string, 0, len(pb.GetProviders()))
	for name := range pb.GetProviders() {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic allow_missing order and errors
	for _, name := range names {
		p, err := compileProvider(name, pb.GetProviders()[name], now, client, onFetch, f.jwks)
		if err != nil {
			return nil, fmt.Errorf("providers[%s].%w", name, err)
		}
		a.providers[name] = p
		a.all = append(a.all, p)
		for _, ch := range p.claimHeaders {
			a.outHeaders = append(a.outHeaders, ch.header)
		}
		if p.payloadHeader != "" {
			a.outHeaders = append(a.outHeaders, p.payloadHeader)
		}
	}
	for name, r := range pb.GetRequirementMap() {
		c, err := compileRequirement(r, a.providers, 0)
		if err != nil {
			return nil, fmt.Errorf("requirement_map[%s].%w", name, err)
		}
		a.reqMap[name] = c
	}
	for i, r := range pb.GetRules() {
		pm, hs, err := compileRouteMatch(r.GetMatch())
		if err != nil {
			return nil, fmt.Errorf("rules[%d].match.%w", i, err)
		}
		ru := rule{path: pm, headers: hs}
		switch t := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if ru.req, err = compileRequirement(t.Requires, a.providers, 0); err != nil {
				return nil, fmt.Errorf("rules[%d].requires.%w", i, err)
			}
		case *jwtv3.RequirementRule_RequirementName:
			if ru.req = a.reqMap[t.RequirementName]; ru.req == nil {
				return nil, fmt.Errorf("rules[%d].requirement_name: %q not in requirement_map", i, t.RequirementName)
			}
		}
		a.rules = append(a.rules, ru)
	}
	return a, nil
}

// BuildOverride implements filter.RouteFactory: cfg is a PerRouteConfig that
// disables the filter on the route or selects a requirement_map entry.
func (Factory) BuildOverride(cfg *anypb.Any, base filter.Filter, _ *filter.Env) (filter.Filter, error) {
	var pb jwtv3.PerRouteConfig
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("jwt_authn per-route: %w", err)
	}
	if pb.GetDisabled() {
		return filter.Disabled, nil
	}
	a, ok := base.(*authn)
	if !ok {
		return nil, errors.New("jwt_authn per-route: the listener has no jwt_authn filter at this position")
	}
	req := a.reqMap[pb.GetRequirementName()]
	if req == nil {
		return nil, fmt.Errorf("jwt_authn per-route: requirement_name %q not in requirement_map", pb.GetRequirementName())
	}
	o := *a
	o.routeReq = req
	return &o, nil
}

// authn is one compiled filter, immutable and shared by all streams.
type authn struct {
	providers  map[string]*provider
	all        []*provider
	reqMap     map[string]*requirement
	rules      []rule
	routeReq   *requirement // set on per-route copies: replaces rules
	outHeaders []string
	bypassCORS bool
	strip      bool

	allowed, denied, fetchOK, fetchFailed filter.Counter
}

var _ filter.Filter = (*authn)(nil)

func (a *authn) requirementFor(s *filter.Stream) *requirement {
	if a.routeReq != nil {
		return a.routeReq
	}
	path := s.Req.PathOnly()
	for i := range a.rules {
		r := &a.rules[i]
		if r.path.match(path) && r.headers.Match(&s.Req.Header) {
			return r.req
		}
	}
	return nil
}

// OnRequest implements filter.Filter.
func (a *authn) OnRequest(s *filter.Stream) filter.Status {
	for _, h := range a.outHeaders {
		s.Req.Header.Del(h)
	}
	if a.bypassCORS && string(s.Req.Method) == http.MethodOptions &&
		s.Req.Header.Has("origin") && s.Req.Header.Has("access-control-request-method") {
		return filter.Continue
	}
	req := a.requirementFor(s)
	if req == nil {
		return filter.Continue
	}
	st := evalState{ctx: s.Ctx, s: s, all: a.all}
	if err := st.check(req); err != nil {
		a.denied.Inc()
		a.reject(s, err)
		return filter.Stop
	}
	a.allowed.Inc()
	if len(st.done) == 0 {
		return filter.Continue
	}
	for _, v := range st.done {
		v.prov.apply(s, v.loc, v.claims, v.payload)
		s.Attrs.Claims = append(s.Attrs.Claims, Payload{Provider: v.prov.name, Key: v.prov.metadataKey, Claims: v.claims})
	}
	return filter.Continue
}

// OnResponse implements filter.Filter.
func (a *authn) OnResponse(*filter.Stream) {}

// reject answers 401 the way RFC 6750 asks: WWW-Authenticate names the realm
// and, for a presented token, error="invalid_token". The body says only
// whether a token was missing or failed.
func (a *authn) reject(s *filter.Stream, err error) {
	body, challenge := "Jwt verification fails", `Bearer realm="`+realm(s)+`", error="invalid_token"`
	if errors.Is(err, errMissing) {
		body, challenge = "Jwt is missing", `Bearer realm="`+realm(s)+`"`
	}
	if a.strip {
		body = ""
	}
	localreply.Send(s, http.StatusUnauthorized, localreply.NoGRPCStatus, body)
	s.Resp.Header.Set("www-authenticate", challenge)
}

// realm is the request URL without its query, as Envoy reports it, with
// characters that could break out of the quoted string dropped.
func realm(s *filter.Stream) string {
	var b strings.Builder
	scheme := string(s.Req.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	for _, part := range [...]string{scheme, "://", string(s.Req.Authority), string(s.Req.PathOnly())} {
		for i := 0; i < len(part); i++ {
			if c := part[i]; c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// Payload is one verified JWT as later filters see it: the stream's typed
// attribute (filter.Stream.Attrs.Claims), where the filter appends each token
// it verified and RBAC, the DSL and extensions read them.
type Payload = filter.Claims

// Lookup finds a claim by metadata key and path, as an Envoy metadata
// matcher with filter "envoy.filters.http.jwt_authn" and path [key, p1, ...]
// would. ok is false when no verified token has that key or path.
func Lookup(ps []Payload, key string, path []string) (any, bool) {
	for _, p := range ps {
		if p.Key != key {
			continue
		}
		var v any = p.Claims
		for _, seg := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			if v, ok = m[seg]; !ok {
				return nil, false
			}
		}
		return v, true
	}
	return nil, false
}

func regexMatcher(re *matcherv3.RegexMatcher) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: re}}
}
