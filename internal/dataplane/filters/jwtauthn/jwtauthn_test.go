package jwtauthn

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

var t0 = time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)

func claims(extra map[string]any) map[string]any {
	c := map[string]any{"iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func localProvider(doc string) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{
		Issuer:            "https://issuer.test",
		Audiences:         []string{"api", "other"},
		PayloadInMetadata: "main",
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: doc}}},
	}
}

func requireProvider(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func prefixRule(p string, r *jwtv3.JwtRequirement) *jwtv3.RequirementRule {
	return &jwtv3.RequirementRule{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: r},
	}
}

func build(t testing.TB, f Factory, pb *jwtv3.JwtAuthentication) filter.Filter {
	t.Helper()
	flt, err := f.Build(filtertest.Any(t, pb), &filter.Env{Name: "jwt"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return flt
}

// run sends one request through a chain of flt and returns the status and
// the request the terminal saw (nil when rejected).
func run(t *testing.T, flt filter.Filter, s *filter.Stream) (int, *filter.Stream) {
	t.Helper()
	var seen *filter.Stream
	term := &filtertest.Terminal{OnServe: func(s *filter.Stream) { seen = s }}
	filter.NewChain(term, flt).Run(s)
	return s.Resp.Status, seen
}

func TestVerify(t *testing.T) {
	rsaKey := newRSAKey(t, "rsa1")
	ecKey := newECKey(t, "ec1")
	otherKey := newRSAKey(t, "rsa1") // same kid, different key
	flt := build(t, Factory{Now: func() time.Time { return t0 }}, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"main": localProvider(jwks(t, rsaKey, ecKey))},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("main"))},
	})
	good := rsaKey.sign(t, claims(nil))
	hsConfusion := func() string {
		h := map[string]any{"alg": "HS256", "kid": "rsa1", "typ": "JWT"}
		unsigned := rawToken(h, claims(nil), nil)
		unsigned = unsigned[:len(unsigned)-1]
		mac := hmac.New(sha256.New, publicPEM(t, rsaKey))
		mac.Write([]byte(unsigned))
		return unsigned + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}()
	tests := []struct {
		name   string
		header string
		want   int
		errTok bool // WWW-Authenticate carries error="invalid_token"
	}{
		{name: "valid RS256", header: "Bearer " + good, want: 200},
		{name: "valid ES256", header: "Bearer " + ecKey.sign(t, claims(nil)), want: 200},
		{name: "lower-case scheme", header: "bearer " + good, want: 200},
		{name: "audience in list", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"aud": []any{"x", "other"}})), want: 200},
		{name: "within clock skew", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"exp": t0.Add(-30 * time.Second).Unix()})), want: 200},
		{name: "missing", want: 401},
		{name: "other scheme", header: "Basic dXNlcjpwYXNz", want: 401},
		{name: "expired", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"exp": t0.Add(-2 * time.Minute).Unix()})), want: 401, errTok: true},
		{name: "not yet valid", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"nbf": t0.Add(5 * time.Minute).Unix()})), want: 401, errTok: true},
		{name: "exp not a number", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"exp": "tomorrow"})), want: 401, errTok: true},
		{name: "wrong audience", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"aud": "billing"})), want: 401, errTok: true},
		{name: "no audience", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"aud": nil})), want: 401, errTok: true},
		{name: "wrong issuer", header: "Bearer " + rsaKey.sign(t, claims(map[string]any{"iss": "https://evil.test"})), want: 401, errTok: true},
		{name: "bad signature (other key, same kid)", header: "Bearer " + otherKey.sign(t, claims(nil)), want: 401, errTok: true},
		{name: "tampered payload", header: "Bearer " + tamper(good), want: 401, errTok: true},
		{name: "alg none", header: "Bearer " + rawToken(map[string]any{"alg": "none", "kid": "rsa1"}, claims(nil), nil), want: 401, errTok: true},
		{name: "alg none, no signature part", header: "Bearer " + strings.TrimSuffix(rawToken(map[string]any{"alg": "none"}, claims(nil), nil), "."), want: 401, errTok: true},
		{name: "HS256 signed with the RSA public key", header: "Bearer " + hsConfusion, want: 401, errTok: true},
		{name: "ES256 header on an RSA kid", header: "Bearer " + rawToken(map[string]any{"alg": "ES256", "kid": "rsa1"}, claims(nil), make([]byte, 64)), want: 401, errTok: true},
		{name: "unknown kid", header: "Bearer " + newRSAKey(t, "nope").sign(t, claims(nil)), want: 401, errTok: true},
		{name: "oversized", header: "Bearer " + strings.Repeat("a", MaxTokenBytes) + "." + "b.c", want: 401, errTok: true},
		{name: "garbage base64", header: "Bearer !!!.@@@.###", want: 401, errTok: true},
		{name: "two parts", header: "Bearer abc.def", want: 401, errTok: true},
		{name: "JSON serialization", header: `Bearer {"payload":"e30","signatures":[]}`, want: 401, errTok: true},
		{name: "payload not an object", header: "Bearer " + signRaw(t, rsaKey, `[1,2]`), want: 401, errTok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hs []string
			if tt.header != "" {
				hs = []string{"authorization", tt.header}
			}
			s := filtertest.NewStream("GET", "/api/x?q=1", hs...)
			status, _ := run(t, flt, s)
			if status != tt.want {
				t.Fatalf("status %d, want %d (body %q)", status, tt.want, filtertest.Body(t, s.Resp))
			}
			if tt.want != 401 {
				return
			}
			wa := s.Resp.Header.GetString("www-authenticate")
			if !strings.HasPrefix(wa, `Bearer realm="http://example.com/api/x"`) {
				t.Errorf("WWW-Authenticate %q", wa)
			}
			if got := strings.Contains(wa, `error="invalid_token"`); got != tt.errTok {
				t.Errorf("WWW-Authenticate %q: invalid_token=%v, want %v", wa, got, tt.errTok)
			}
			body := filtertest.Body(t, s.Resp)
			if body != "Jwt is missing" && body != "Jwt verification fails" {
				t.Errorf("body %q names internals", body)
			}
		})
	}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://issuer.test","aud":"api","sub":"root"}`))
	return strings.Join(parts, ".")
}

func signRaw(t *testing.T, k *testKey, payload string) string {
	t.Helper()
	return k.signPayload(t, []byte(payload))
}

func TestClaimsForwardedAndForgedHeadersRemoved(t *testing.T) {
	k := newRSAKey(t, "k")
	p := localProvider(jwks(t, k))
	p.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{
		{HeaderName: "x-user", ClaimName: "sub"},
		{HeaderName: "x-tenant", ClaimName: "org.tenant"},
		{HeaderName: "x-groups", ClaimName: "groups"},
	}
	p.ForwardPayloadHeader = "x-jwt-payload"
	flt := build(t, Factory{Now: func() time.Time { return t0 }}, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"main": p},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/open", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}),
			prefixRule("/", requireProvider("main")),
		},
	})
	tok := k.sign(t, claims(map[string]any{"org": map[string]any{"tenant": "acme"}, "groups": []any{"a", "b"}}))

	s := filtertest.NewStream("GET", "/api", "authorization", "Bearer "+tok, "x-user", "forged", "x-jwt-payload", "forged")
	status, seen := run(t, flt, s)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	h := &seen.Req.Header
	for name, want := range map[string]string{"x-user": "alice", "x-tenant": "acme", "x-groups": "a,b"} {
		if got := filtertest.Values(h, name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want [%q]", name, got, want)
		}
	}
	if h.Has("authorization") {
		t.Error("token forwarded although forward is false")
	}
	if got := h.GetString("x-jwt-payload"); got == "forged" || got == "" {
		t.Errorf("x-jwt-payload %q", got)
	}
	if v, ok := Lookup(seen.Attrs.Claims, "main", []string{"org", "tenant"}); !ok || v != "acme" {
		t.Errorf("Lookup = %v, %v", v, ok)
	}
	if ps := seen.Attrs.Claims; len(ps) != 1 || ps[0].Provider != "main" || ps[0].Claims["sub"] != "alice" {
		t.Errorf("Payloads = %+v", ps)
	}

	// Without a token, allow_missing lets the request on, still without the
	// forged headers.
	s = filtertest.NewStream("GET", "/open", "x-user", "forged")
	if status, seen = run(t, flt, s); status != 200 || seen.Req.Header.Has("x-user") || len(seen.Attrs.Claims) != 0 {
		t.Fatalf("allow_missing: status %d, x-user kept=%v", status, seen != nil && seen.Req.Header.Has("x-user"))
	}
	// allow_missing with an invalid token fails.
	s = filtertest.NewStream("GET", "/open", "authorization", "Bearer "+tamper(tok))
	if status, _ = run(t, flt, s); status != 401 {
		t.Fatalf("allow_missing with a bad token: %d", status)
	}
}

func TestLocationsAndRequirements(t *testing.T) {
	a, b := newRSAKey(t, "a"), newECKey(t, "b")
	pa := localProvider(jwks(t, a))
	pa.FromParams = []string{"token"}
	pb := localProvider(jwks(t, b))
	pb.PayloadInMetadata = "b"
	pb.FromCookies = []string{"session"}
	pb.FromHeaders = []*jwtv3.JwtHeader{{Name: "x-b-token"}}
	anyOf := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
		Requirements: []*jwtv3.JwtRequirement{requireProvider("a"), requireProvider("b")}}}}
	allOf := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{
		Requirements: []*jwtv3.JwtRequirement{requireProvider("a"), requireProvider("b")}}}}
	pbConf := &jwtv3.JwtAuthentication{
		Providers:      map[string]*jwtv3.JwtProvider{"a": pa, "b": pb},
		RequirementMap: map[string]*jwtv3.JwtRequirement{"only-b": requireProvider("b")},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/any", anyOf),
			prefixRule("/all", allOf),
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/b"}},
				RequirementType: &jwtv3.RequirementRule_RequirementName{RequirementName: "only-b"}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/public"}}},
			prefixRule("/", requireProvider("a")),
		},
	}
	f := Factory{Now: func() time.Time { return t0 }}
	flt := build(t, f, pbConf)
	ta, tb := a.sign(t, claims(nil)), b.sign(t, claims(nil))
	tests := []struct {
		name    string
		path    string
		headers []string
		want    int
	}{
		{name: "query param", path: "/x?a=1&token=" + ta, want: 200},
		{name: "cookie", path: "/b", headers: []string{"cookie", "x=1; session=" + tb}, want: 200},
		{name: "custom header without prefix", path: "/b", headers: []string{"x-b-token", tb}, want: 200},
		{name: "b token on an a-only route", path: "/x", headers: []string{"x-b-token", tb}, want: 401},
		{name: "any: b", path: "/any", headers: []string{"x-b-token", tb}, want: 200},
		{name: "any: a", path: "/any?token=" + ta, want: 200},
		{name: "any: none", path: "/any", want: 401},
		{name: "all: both", path: "/all?token=" + ta, headers: []string{"x-b-token", tb}, want: 200},
		{name: "all: one", path: "/all?token=" + ta, want: 401},
		{name: "rule without requirement", path: "/public/x", want: 200},
		{name: "exact path rule does not match longer path", path: "/bx", headers: []string{"x-b-token", tb}, want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := filtertest.NewStream("GET", tt.path, tt.headers...)
			if status, _ := run(t, flt, s); status != tt.want {
				t.Fatalf("status %d, want %d", status, tt.want)
			}
		})
	}

	t.Run("per-route", func(t *testing.T) {
		off, err := f.BuildOverride(filtertest.Any(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}}), flt, nil)
		if err != nil || off != filter.Disabled {
			t.Fatalf("disabled override = %v, %v", off, err)
		}
		onlyB, err := f.BuildOverride(filtertest.Any(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "only-b"}}), flt, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := filtertest.NewStream("GET", "/x?token="+ta)
		if status, _ := run(t, onlyB, s); status != 401 {
			t.Fatalf("route requiring b accepted a: %d", status)
		}
		if _, err := f.BuildOverride(filtertest.Any(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "nope"}}), flt, nil); err == nil {
			t.Fatal("unknown requirement_name accepted")
		}
	})
}

func TestBuildErrors(t *testing.T) {
	k := newRSAKey(t, "k")
	tests := []struct {
		name string
		pb   *jwtv3.JwtAuthentication
		want string
	}{
		{name: "unknown provider", pb: &jwtv3.JwtAuthentication{Rules: []*jwtv3.RequirementRule{prefixRule("/", requireProvider("x"))}}, want: `provider "x"`},
		{name: "bad inline jwks", pb: &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": localProvider("{")}}, want: "providers[p].local_jwks"},
		{name: "bad url", pb: &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{Uri: "file:///etc/passwd", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "c"}, Timeout: durationpb.New(time.Second)}}}}}}, want: "not an http(s) URL"},
		{name: "extract only", pb: &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": localProvider(jwks(t, k))}, Rules: []*jwtv3.RequirementRule{prefixRule("/", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ExtractOnlyWithoutValidation{}})}}, want: "extract_only_without_validation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Factory{}.Build(filtertest.Any(t, tt.pb), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestGRPCRejection(t *testing.T) {
	k := newRSAKey(t, "k")
	flt := build(t, Factory{}, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"main": localProvider(jwks(t, k))},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("main"))},
	})
	s := filtertest.NewStream("POST", "/pkg.Svc/M", "content-type", "application/grpc")
	run(t, flt, s)
	if got := s.Resp.Header.GetString("grpc-status"); got != "16" {
		t.Fatalf("grpc-status %q, want 16 (UNAUTHENTICATED)", got)
	}
	if s.Resp.Header.GetString("www-authenticate") == "" {
		t.Fatal("no WWW-Authenticate on a gRPC rejection")
	}
}
