package cors

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func basePolicy() *corsv3.CorsPolicy {
	return &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{
			exact("https://app.example.com"),
			{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".trusted.io"}},
			{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "http://localhost:"}},
			{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "partner"}, IgnoreCase: true},
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `https://[a-z]+\.regex\.dev`}}},
		},
		AllowMethods:     "GET, POST",
		AllowHeaders:     "content-type, x-token",
		ExposeHeaders:    "x-request-id",
		MaxAge:           "600",
		AllowCredentials: wrapperspb.Bool(true),
	}
}

// setup returns a chain whose listener CORS filter is overridden by the
// route's policy, plus the route to put on streams.
func setup(t *testing.T, pol *corsv3.CorsPolicy) (*filter.Chain, *filtertest.Terminal, *filter.Route) {
	t.Helper()
	env := &filter.Env{Name: "envoy.filters.http.cors"}
	base, err := Factory{}.Build(filtertest.Any(t, &corsv3.Cors{}), env)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	over, err := Factory{}.BuildOverride(filtertest.Any(t, pol), base, env)
	if err != nil {
		t.Fatalf("BuildOverride: %v", err)
	}
	term := &filtertest.Terminal{Header: [][2]string{{"access-control-allow-origin", "*"}}}
	return filter.NewChain(term, base), term, &filter.Route{Overrides: []filter.Filter{over}}
}

const (
	allowOrigin = "access-control-allow-origin"
	allowCreds  = "access-control-allow-credentials"
	allowMeth   = "access-control-allow-methods"
	allowHdrs   = "access-control-allow-headers"
	maxAge      = "access-control-max-age"
	expose      = "access-control-expose-headers"
	privateNet  = "access-control-allow-private-network"
)

func TestPreflight(t *testing.T) {
	tests := []struct {
		name         string
		mutate       func(*corsv3.CorsPolicy)
		headers      []string
		wantLocal    bool
		wantHeaders  map[string]string // "" means absent
		wantUpstream bool
		// upstreamOrigin is the allow-origin expected on a forwarded
		// response; "" means the upstream's own "*".
		upstreamOrigin string
	}{
		{
			name:      "allowed exact origin",
			headers:   []string{"origin", "https://app.example.com", "access-control-request-method", "POST"},
			wantLocal: true,
			wantHeaders: map[string]string{allowOrigin: "https://app.example.com", allowCreds: "true",
				allowMeth: "GET, POST", allowHdrs: "content-type, x-token", maxAge: "600", expose: ""},
		},
		{
			name:        "suffix match",
			headers:     []string{"origin", "https://a.trusted.io", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "https://a.trusted.io"},
		},
		{
			name:        "prefix match",
			headers:     []string{"origin", "http://localhost:3000", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "http://localhost:3000"},
		},
		{
			name:        "contains ignore case",
			headers:     []string{"origin", "https://www.PARTNER.com", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "https://www.PARTNER.com"},
		},
		{
			name:        "regex full match",
			headers:     []string{"origin", "https://abc.regex.dev", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "https://abc.regex.dev"},
		},
		{
			name:         "regex must match fully",
			headers:      []string{"origin", "https://abc.regex.dev.evil.com", "access-control-request-method", "GET"},
			wantUpstream: true,
		},
		{
			name:         "non-matching origin is forwarded by default",
			headers:      []string{"origin", "https://evil.com", "access-control-request-method", "GET"},
			wantUpstream: true,
		},
		{
			name:        "non-matching origin answered when not forwarding",
			mutate:      func(p *corsv3.CorsPolicy) { p.ForwardNotMatchingPreflights = wrapperspb.Bool(false) },
			headers:     []string{"origin", "https://evil.com", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "", allowMeth: "GET, POST"},
		},
		{
			name:           "OPTIONS without request method is an actual request",
			headers:        []string{"origin", "https://app.example.com"},
			wantUpstream:   true,
			upstreamOrigin: "https://app.example.com",
		},
		{
			name:         "no origin",
			headers:      []string{"access-control-request-method", "GET"},
			wantUpstream: true,
		},
		{
			name: "wildcards echo the request",
			mutate: func(p *corsv3.CorsPolicy) {
				p.AllowMethods, p.AllowHeaders = "*", "*"
			},
			headers: []string{"origin", "https://app.example.com", "access-control-request-method", "PATCH",
				"access-control-request-headers", "x-a, x-b"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowMeth: "PATCH", allowHdrs: "x-a, x-b"},
		},
		{
			name:   "private network access",
			mutate: func(p *corsv3.CorsPolicy) { p.AllowPrivateNetworkAccess = wrapperspb.Bool(true) },
			headers: []string{"origin", "https://app.example.com", "access-control-request-method", "GET",
				"access-control-request-private-network", "true"},
			wantLocal:   true,
			wantHeaders: map[string]string{privateNet: "true"},
		},
		{
			name: "private network not allowed",
			headers: []string{"origin", "https://app.example.com", "access-control-request-method", "GET",
				"access-control-request-private-network", "true"},
			wantLocal:   true,
			wantHeaders: map[string]string{privateNet: ""},
		},
		{
			name: "any-origin matcher allows all",
			mutate: func(p *corsv3.CorsPolicy) {
				p.AllowOriginStringMatch = []*matcherv3.StringMatcher{exact("*")}
			},
			headers:     []string{"origin", "https://whoever.net", "access-control-request-method", "GET"},
			wantLocal:   true,
			wantHeaders: map[string]string{allowOrigin: "https://whoever.net"},
		},
		{
			name: "filter disabled",
			mutate: func(p *corsv3.CorsPolicy) {
				p.FilterEnabled = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{}}
			},
			headers:      []string{"origin", "https://app.example.com", "access-control-request-method", "GET"},
			wantUpstream: true,
		},
		{
			name: "shadow mode only evaluates",
			mutate: func(p *corsv3.CorsPolicy) {
				p.FilterEnabled = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{}}
				p.ShadowEnabled = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}
			},
			headers:      []string{"origin", "https://app.example.com", "access-control-request-method", "GET"},
			wantUpstream: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := basePolicy()
			if tt.mutate != nil {
				tt.mutate(pol)
			}
			chain, term, route := setup(t, pol)
			s := filtertest.NewStream("OPTIONS", "/api", tt.headers...)
			s.Route = route
			chain.Run(s)
			if tt.wantUpstream {
				if term.Calls() != 1 {
					t.Fatal("request was not forwarded")
				}
				want := tt.upstreamOrigin
				if want == "" {
					want = "*"
				}
				if got := s.Resp.Header.GetString(allowOrigin); got != want {
					t.Fatalf("forwarded response %s = %q, want %q", allowOrigin, got, want)
				}
				return
			}
			if term.Calls() != 0 || s.Resp.Status != 200 {
				t.Fatalf("want a local 200, got status %d, terminal calls %d", s.Resp.Status, term.Calls())
			}
			for k, want := range tt.wantHeaders {
				if got := s.Resp.Header.GetString(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestActualRequest(t *testing.T) {
	tests := []struct {
		name   string
		route  bool
		origin string
		want   map[string][]string
	}{
		{"allowed origin", true, "https://app.example.com", map[string][]string{
			allowOrigin: {"https://app.example.com"}, allowCreds: {"true"}, expose: {"x-request-id"}}},
		{"non-matching origin keeps upstream headers only", true, "https://evil.com", map[string][]string{
			allowOrigin: {"*"}, allowCreds: nil, expose: nil}},
		{"no origin", true, "", map[string][]string{allowOrigin: {"*"}, expose: nil}},
		{"no policy on the route passes through", false, "https://app.example.com", map[string][]string{
			allowOrigin: {"*"}, allowCreds: nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, term, route := setup(t, basePolicy())
			var hdrs []string
			if tt.origin != "" {
				hdrs = []string{"origin", tt.origin}
			}
			s := filtertest.NewStream("GET", "/api", hdrs...)
			if tt.route {
				s.Route = route
			}
			chain.Run(s)
			if term.Calls() != 1 {
				t.Fatal("request not forwarded")
			}
			for k, want := range tt.want {
				if got := filtertest.Values(&s.Resp.Header, k); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name     string
		cfg      *anypb.Any
		override bool
		want     string
	}{
		{"listener gets a policy", filtertest.Any(t, basePolicy()), false, "typed_config"},
		{"route gets Cors", filtertest.Any(t, &corsv3.Cors{}), true, "typed_config"},
		{"wrong type", filtertest.Any(t, durationpb.New(time.Second)), true, "typed_config"},
		{"bad regex", filtertest.Any(t, &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(("}}}}}), true,
			"allow_origin_string_match[0]: safe_regex"},
		{"newline in max age", filtertest.Any(t, &corsv3.CorsPolicy{MaxAge: "1\r\nx: y"}), true, "max_age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.override {
				_, err = Factory{}.BuildOverride(tt.cfg, nil, &filter.Env{})
			} else {
				_, err = Factory{}.Build(tt.cfg, &filter.Env{})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func BenchmarkActualRequest(b *testing.B) {
	over, err := Factory{}.BuildOverride(filtertest.Any(b, basePolicy()), nil, &filter.Env{})
	if err != nil {
		b.Fatal(err)
	}
	s := filtertest.NewStream("GET", "/")
	term := &filtertest.Terminal{}
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/", "origin", "https://x.trusted.io")
		if over.OnRequest(s) != filter.Continue {
			b.Fatal("stopped")
		}
		_ = term.Serve(s)
		over.OnResponse(s)
	}
}

func BenchmarkPreflight(b *testing.B) {
	over, err := Factory{}.BuildOverride(filtertest.Any(b, basePolicy()), nil, &filter.Env{})
	if err != nil {
		b.Fatal(err)
	}
	s := filtertest.NewStream("OPTIONS", "/")
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "OPTIONS", "/", "origin", "https://abc.regex.dev", "access-control-request-method", "POST")
		if over.OnRequest(s) != filter.Stop {
			b.Fatal("not answered")
		}
	}
}
