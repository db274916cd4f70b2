package translate

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// HCM filter names of the authentication and authorization filters.
const (
	NameJWTAuthn = "envoy.filters.http.jwt_authn"
	NameRBAC     = "envoy.filters.http.rbac"
)

// jwksFetchTimeout bounds one JWKS fetch (http_uri.timeout is required).
const jwksFetchTimeout = 5 * time.Second

// jwtMetadataNamespace is where jwt_authn publishes payloads (Envoy's
// filter name); RBAC claim matchers read from it.
const jwtMetadataNamespace = "envoy.filters.http.jwt_authn"

// addAuthn adds f's jwt or rbac filter through add. seen counts the rbac
// filters of the listener so far: the first keeps Envoy's name, later ones
// get a suffix (filter names key per-route configs, so they stay unique).
func addAuthn(f *config.HTTPFilter, seen *int, add func(string, proto.Message) error) error {
	switch {
	case f.JWT != nil:
		return add(NameJWTAuthn, jwtAuthn(f.JWT))
	case f.RBAC != nil:
		m, err := rbacFilter(f.RBAC)
		if err != nil {
			return err
		}
		name := NameRBAC
		if *seen > 0 {
			name += "." + strings.ToLower(f.RBAC.Action)
			if f.RBAC.Shadow {
				name += ".shadow"
			}
		}
		*seen++
		return add(name, m)
	}
	return nil
}

func jwtAuthn(j *config.JWT) *jwtv3.JwtAuthentication {
	out := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	for i := range j.Providers {
		p := &j.Providers[i]
		out.Providers[p.Name] = jwtProvider(p)
	}
	for _, r := range j.Rules {
		m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: r.PathPrefix}}
		if r.Path != "" {
			m.PathSpecifier = &routev3.RouteMatch_Path{Path: r.Path}
		}
		rule := &jwtv3.RequirementRule{Match: m}
		if req := jwtRequirement(r); req != nil {
			rule.RequirementType = &jwtv3.RequirementRule_Requires{Requires: req}
		}
		out.Rules = append(out.Rules, rule)
	}
	if len(j.Rules) == 0 && len(j.Providers) == 1 {
		out.Rules = []*jwtv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: providerReq(j.Providers[0].Name)},
		}}
	}
	return out
}

func providerReq(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func jwtRequirement(r config.JWTRule) *jwtv3.JwtRequirement {
	list := func(names []string) []*jwtv3.JwtRequirement {
		out := make([]*jwtv3.JwtRequirement, len(names))
		for i, n := range names {
			out[i] = providerReq(n)
		}
		return out
	}
	switch {
	case r.Requires != "":
		return providerReq(r.Requires)
	case r.Any != nil:
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
			RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: list(r.Any)}}}
	case r.All != nil:
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{
			RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: list(r.All)}}}
	case r.AllowMissing:
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
	}
	return nil
}

func jwtProvider(p *config.JWTProvider) *jwtv3.JwtProvider {
	out := &jwtv3.JwtProvider{
		Issuer:               p.Issuer,
		Audiences:            p.Audiences,
		Forward:              p.Forward,
		ForwardPayloadHeader: p.ForwardPayloadHeader,
		// Claims are published under the provider's name so RBAC policies
		// refer to a token by the provider that verified it.
		PayloadInMetadata: p.Name,
		RequireExpiration: p.RequireExpiration,
		// Remember verified signatures (claims are re-checked per request).
		JwtCacheConfig: &jwtv3.JwtCacheConfig{JwtCacheSize: 100},
	}
	if p.ClockSkew != nil {
		out.ClockSkewSeconds = uint32(p.ClockSkew.Std() / time.Second)
	}
	if p.JWKS != "" {
		out.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: p.JWKS}}}
	} else {
		cluster := p.JWKSCluster
		if cluster == "" {
			// Envoy needs a cluster for the JWKS host; OmniRelay fetches
			// the URL itself. Name it after the host for operators who add one.
			if u, err := url.Parse(p.JWKSURI); err == nil {
				cluster = "jwks_" + u.Hostname()
			}
		}
		rj := &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{Uri: p.JWKSURI, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout: durationpb.New(jwksFetchTimeout)},
			// Fetch when the listener starts, not on the first request.
			AsyncFetch: &jwtv3.JwksAsyncFetch{},
		}
		if p.CacheDuration != nil {
			rj.CacheDuration = durationpb.New(p.CacheDuration.Std())
		}
		out.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: rj}
	}
	if f := p.From; f != nil {
		if f.Header != "" {
			out.FromHeaders = []*jwtv3.JwtHeader{{Name: f.Header, ValuePrefix: f.Prefix}}
		}
		if f.Query != "" {
			out.FromParams = []string{f.Query}
		}
		if f.Cookie != "" {
			out.FromCookies = []string{f.Cookie}
		}
	}
	for _, kv := range p.ForwardClaims {
		out.ClaimToHeaders = append(out.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: kv.Value, ClaimName: kv.Key})
	}
	return out
}

func rbacFilter(r *config.RBAC) (*rbacv3.RBAC, error) {
	rules := &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_ALLOW, Policies: map[string]*rbacconfv3.Policy{}}
	if r.Action == "DENY" {
		rules.Action = rbacconfv3.RBAC_DENY
	}
	names := make([]string, 0, len(r.Policies))
	for n := range r.Policies {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		pol := r.Policies[n]
		out := &rbacconfv3.Policy{}
		for _, p := range pol.Permissions {
			out.Permissions = append(out.Permissions, rbacPermission(&p))
		}
		if len(out.Permissions) == 0 {
			out.Permissions = []*rbacconfv3.Permission{{Rule: &rbacconfv3.Permission_Any{Any: true}}}
		}
		for _, p := range pol.Principals {
			pr, err := rbacPrincipal(&p)
			if err != nil {
				return nil, fmt.Errorf("rbac policy %q: %w", n, err)
			}
			out.Principals = append(out.Principals, pr)
		}
		if len(out.Principals) == 0 {
			out.Principals = []*rbacconfv3.Principal{{Identifier: &rbacconfv3.Principal_Any{Any: true}}}
		}
		if pol.Condition != "" {
			e, err := config.CompileCondition(pol.Condition)
			if err != nil {
				return nil, fmt.Errorf("rbac policy %q: condition: %w", n, err)
			}
			out.Condition = e
		}
		rules.Policies[n] = out
	}
	if r.Shadow {
		return &rbacv3.RBAC{ShadowRules: rules}, nil
	}
	return &rbacv3.RBAC{Rules: rules}, nil
}

func exactMatch(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefixMatch(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func rbacHeader(h *config.RBACHeader) *routev3.HeaderMatcher {
	m := &routev3.HeaderMatcher{Name: strings.ToLower(h.Name)}
	switch {
	case h.Present:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	case h.Prefix != "":
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: prefixMatch(h.Prefix)}
	case h.Regex != "":
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}}}}
	default:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: exactMatch(h.Exact)}
	}
	return m
}

// rbacPermission ANDs the fields set in p.
func rbacPermission(p *config.RBACPermission) *rbacconfv3.Permission {
	var all []*rbacconfv3.Permission
	if p.Any {
		all = append(all, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_Any{Any: true}})
	}
	if p.PathPrefix != "" || p.Path != "" {
		sm := prefixMatch(p.PathPrefix)
		if p.Path != "" {
			sm = exactMatch(p.Path)
		}
		all = append(all, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm}}}})
	}
	if len(p.Methods) > 0 {
		var or []*rbacconfv3.Permission
		for _, m := range p.Methods {
			or = append(or, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactMatch(m)}}}})
		}
		all = append(all, orPerm(or))
	}
	if p.Header != nil {
		all = append(all, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_Header{Header: rbacHeader(p.Header)}})
	}
	if p.Port != 0 {
		all = append(all, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_DestinationPort{DestinationPort: p.Port}})
	}
	if p.Not != nil {
		all = append(all, &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_NotRule{NotRule: rbacPermission(p.Not)}})
	}
	if len(all) == 1 {
		return all[0]
	}
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_AndRules{AndRules: &rbacconfv3.Permission_Set{Rules: all}}}
}

func orPerm(ps []*rbacconfv3.Permission) *rbacconfv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_OrRules{OrRules: &rbacconfv3.Permission_Set{Rules: ps}}}
}

// rbacPrincipal ANDs the fields set in p.
func rbacPrincipal(p *config.RBACPrincipal) (*rbacconfv3.Principal, error) {
	var all []*rbacconfv3.Principal
	if p.Any {
		all = append(all, &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Any{Any: true}})
	}
	authn := func(sm *matcherv3.StringMatcher) *rbacconfv3.Principal {
		return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Authenticated_{
			Authenticated: &rbacconfv3.Principal_Authenticated{PrincipalName: sm}}}
	}
	if p.Peer != "" {
		all = append(all, authn(exactMatch(p.Peer)))
	}
	if p.PeerPrefix != "" {
		all = append(all, authn(prefixMatch(p.PeerPrefix)))
	}
	for _, ips := range []struct {
		cidrs []string
		make  func(*corev3.CidrRange) *rbacconfv3.Principal
	}{
		{p.SourceIP, func(c *corev3.CidrRange) *rbacconfv3.Principal {
			return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}
		}},
		{p.RemoteIP, func(c *corev3.CidrRange) *rbacconfv3.Principal {
			return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_RemoteIp{RemoteIp: c}}
		}},
	} {
		if len(ips.cidrs) == 0 {
			continue
		}
		var or []*rbacconfv3.Principal
		for _, c := range ips.cidrs {
			pfx, err := config.ParseCIDR(c)
			if err != nil {
				return nil, err
			}
			or = append(or, ips.make(&corev3.CidrRange{AddressPrefix: pfx.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(pfx.Bits()))}))
		}
		if len(or) == 1 {
			all = append(all, or[0])
		} else {
			all = append(all, &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_OrIds{OrIds: &rbacconfv3.Principal_Set{Ids: or}}})
		}
	}
	if p.Header != nil {
		all = append(all, &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Header{Header: rbacHeader(p.Header)}})
	}
	if j := p.JWT; j != nil {
		path := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: j.Provider}}}
		for _, seg := range strings.Split(j.Claim, ".") {
			path = append(path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: seg}})
		}
		value := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
		if j.Value != "" {
			str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exactMatch(j.Value)}}
			list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str}}}}
			// A string claim equal to value, or a list claim holding it.
			value = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
				ValueMatchers: []*matcherv3.ValueMatcher{str, list}}}}
		}
		all = append(all, &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
			Filter: jwtMetadataNamespace, Path: path, Value: value}}})
	}
	if p.Not != nil {
		n, err := rbacPrincipal(p.Not)
		if err != nil {
			return nil, err
		}
		all = append(all, &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_NotId{NotId: n}})
	}
	if len(all) == 1 {
		return all[0], nil
	}
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_AndIds{AndIds: &rbacconfv3.Principal_Set{Ids: all}}}, nil
}

// NameNetworkRBAC is the network filter name of connection policies.
const NameNetworkRBAC = "envoy.filters.network.rbac"

// connectionRBAC puts the listener's connection policies in front of every
// filter chain's terminal filter (tcp_proxy or http_connection_manager).
func connectionRBAC(l *config.Listener, out *listenerv3.Listener) error {
	if len(l.ConnectionRBAC) == 0 {
		return nil
	}
	var fs []*listenerv3.Filter
	for i := range l.ConnectionRBAC {
		r := &l.ConnectionRBAC[i]
		h, err := rbacFilter(r)
		if err != nil {
			return fmt.Errorf("connection_rbac[%d]: %w", i, err)
		}
		m := &netrbacv3.RBAC{StatPrefix: l.Name, Rules: h.GetRules(), ShadowRules: h.GetShadowRules()}
		name := NameNetworkRBAC
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		f, err := networkFilter(name, m)
		if err != nil {
			return err
		}
		fs = append(fs, f)
	}
	for _, fc := range out.GetFilterChains() {
		pre := make([]*listenerv3.Filter, 0, len(fs)+len(fc.Filters))
		for _, f := range fs {
			pre = append(pre, proto.CloneOf(f))
		}
		fc.Filters = append(pre, fc.Filters...)
	}
	return nil
}
