package rbac

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"cel.dev/cel-go/cel"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
)

// Small constructors keep the policy tables readable.

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func anyPerm() *rbacconfv3.Permission {
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_Any{Any: true}}
}

func anyPrin() *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Any{Any: true}}
}

func methodPerm(m string) *rbacconfv3.Permission {
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
}

func pathPerm(p string) *rbacconfv3.Permission {
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: prefix(p)}}}}
}

func andPerm(ps ...*rbacconfv3.Permission) *rbacconfv3.Permission {
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_AndRules{AndRules: &rbacconfv3.Permission_Set{Rules: ps}}}
}

func notPerm(p *rbacconfv3.Permission) *rbacconfv3.Permission {
	return &rbacconfv3.Permission{Rule: &rbacconfv3.Permission_NotRule{NotRule: p}}
}

func peerPrin(id string) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Authenticated_{Authenticated: &rbacconfv3.Principal_Authenticated{PrincipalName: exact(id)}}}
}

func ipPrin(cidr string, bits uint32) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: cidr, PrefixLen: wrapperspb.UInt32(bits)}}}
}

func headerPrin(name, value string) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Header{Header: &routev3.HeaderMatcher{
		Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(value)}}}}
}

func claimPrin(key, claim, value string) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: jwtauthn.MetadataNamespace,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: key}}, {Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: claim}}},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(value)}},
	}}}
}

func claimListPrin(key, claim, value string) *rbacconfv3.Principal {
	p := claimPrin(key, claim, value)
	m := p.GetMetadata()
	m.Value = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(value)}}}}}}
	return p
}

func pol(perms []*rbacconfv3.Permission, prins []*rbacconfv3.Principal, cond string) *rbacconfv3.Policy {
	p := &rbacconfv3.Policy{Permissions: perms, Principals: prins}
	if cond != "" {
		env, err := NewCELEnv(0)
		if err != nil {
			panic(err)
		}
		e, err := env.ParseCondition(cond)
		if err != nil {
			panic(cond + ": " + err.Error())
		}
		p.Condition = e
	}
	return p
}

func rules(action rbacconfv3.RBAC_Action, ps map[string]*rbacconfv3.Policy) *rbacconfv3.RBAC {
	return &rbacconfv3.RBAC{Action: action, Policies: ps}
}

type countingStats struct {
	mu sync.Mutex
	n  map[string]int
}

type counter struct {
	s    *countingStats
	name string
}

func (c counter) Inc() { c.s.mu.Lock(); c.s.n[c.name]++; c.s.mu.Unlock() }

func (s *countingStats) Counter(name string, _ ...string) filter.Counter { return counter{s, name} }

func (s *countingStats) get(name string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.n[name] }

func build(t testing.TB, pb *rbacv3.RBAC, stats *countingStats, log *slog.Logger) filter.Filter {
	t.Helper()
	env := &filter.Env{Name: "rbac"}
	if stats != nil {
		env.Stats = stats
	}
	f, err := Factory{Log: log}.Build(filtertest.Any(t, pb), env)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return f
}

// req describes one request for the tables.
type req struct {
	method, path string
	headers      []string
	src          string
	peer         string
	claims       map[string]any // a verified JWT under key "main"
}

func (r req) stream() *filter.Stream {
	method := r.method
	if method == "" {
		method = "GET"
	}
	s := filtertest.NewStream(method, r.path, r.headers...)
	src := r.src
	if src == "" {
		src = "10.0.0.1:40000"
	}
	s.Downstream.RemoteAddr = netip.MustParseAddrPort(src)
	s.Downstream.LocalAddr = netip.MustParseAddrPort("10.0.0.9:8443")
	s.Downstream.PeerIdentity = r.peer
	if r.claims != nil {
		s.Attrs.Claims = withClaims(s.Attrs.Claims, r.claims)
	}
	return s
}

// withClaims publishes claims the way jwt_authn does after verifying a
// token (the end-to-end test runs the real filter in front).
func withClaims(ps []jwtauthn.Payload, claims map[string]any) []jwtauthn.Payload {
	return append(ps, jwtauthn.Payload{Provider: "main", Key: "main", Claims: claims})
}

func status(t *testing.T, flts []filter.Filter, s *filter.Stream) int {
	t.Helper()
	filter.NewChain(&filtertest.Terminal{}, flts...).Run(s)
	return s.Resp.Status
}

func TestPolicies(t *testing.T) {
	allow := build(t, &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
		"admins":   pol([]*rbacconfv3.Permission{pathPerm("/admin")}, []*rbacconfv3.Principal{peerPrin("spiffe://mesh.local/ns/ops/sa/admin")}, ""),
		"readers":  pol([]*rbacconfv3.Permission{andPerm(methodPerm("GET"), pathPerm("/api"))}, []*rbacconfv3.Principal{ipPrin("10.0.0.0", 8)}, ""),
		"tenant-a": pol([]*rbacconfv3.Permission{pathPerm("/tenant")}, []*rbacconfv3.Principal{anyPrin()}, `request.headers["x-tenant"] == "a"`),
		"jwt-sub":  pol([]*rbacconfv3.Permission{pathPerm("/me")}, []*rbacconfv3.Principal{claimPrin("main", "sub", "alice")}, ""),
		"jwt-grp":  pol([]*rbacconfv3.Permission{pathPerm("/group")}, []*rbacconfv3.Principal{claimListPrin("main", "groups", "eng")}, ""),
		"cel-jwt": pol([]*rbacconfv3.Permission{pathPerm("/cel-jwt")}, []*rbacconfv3.Principal{anyPrin()},
			`metadata.filter_metadata["envoy.filters.http.jwt_authn"]["main"]["scope"] == "write" && connection.mtls`),
		"partner": pol([]*rbacconfv3.Permission{notPerm(methodPerm("DELETE"))}, []*rbacconfv3.Principal{headerPrin("x-partner", "yes")}, `source.port > 1024`),
	})}, nil, nil)
	tests := []struct {
		name string
		req  req
		want int
	}{
		{name: "admin by SPIFFE ID", req: req{path: "/admin/x", peer: "spiffe://mesh.local/ns/ops/sa/admin"}, want: 200},
		{name: "admin, other identity", req: req{path: "/admin/x", peer: "spiffe://mesh.local/ns/ops/sa/web"}, want: 403},
		{name: "admin, no mTLS", req: req{path: "/admin/x"}, want: 403},
		{name: "reader GET in 10/8", req: req{path: "/api/v1"}, want: 200},
		{name: "reader POST", req: req{method: "POST", path: "/api/v1"}, want: 403},
		{name: "reader from outside", req: req{path: "/api/v1", src: "192.168.1.1:5000"}, want: 403},
		{name: "reader from v4-mapped v6", req: req{path: "/api/v1", src: "[::ffff:10.1.2.3]:5000"}, want: 200},
		{name: "CEL header true", req: req{path: "/tenant", headers: []string{"x-tenant", "a"}}, want: 200},
		{name: "CEL header false", req: req{path: "/tenant", headers: []string{"x-tenant", "b"}}, want: 403},
		{name: "CEL header absent (error: fail closed)", req: req{path: "/tenant"}, want: 403},
		{name: "JWT claim", req: req{path: "/me", claims: map[string]any{"sub": "alice"}}, want: 200},
		{name: "JWT claim other", req: req{path: "/me", claims: map[string]any{"sub": "bob"}}, want: 403},
		{name: "JWT missing", req: req{path: "/me"}, want: 403},
		{name: "JWT list claim", req: req{path: "/group", claims: map[string]any{"groups": []any{"ops", "eng"}}}, want: 200},
		{name: "CEL on JWT and mTLS", req: req{path: "/cel-jwt", peer: "spiffe://x/y", claims: map[string]any{"scope": "write"}}, want: 200},
		{name: "CEL on JWT without mTLS", req: req{path: "/cel-jwt", claims: map[string]any{"scope": "write"}}, want: 403},
		{name: "not_rule + header + CEL source port", req: req{method: "PUT", path: "/p", headers: []string{"x-partner", "yes"}}, want: 200},
		{name: "not_rule excludes DELETE", req: req{method: "DELETE", path: "/p", headers: []string{"x-partner", "yes"}}, want: 403},
		{name: "nothing matches", req: req{path: "/other", src: "192.168.0.1:1"}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.req.stream()
			if got := status(t, []filter.Filter{allow}, s); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			if tt.want == 403 {
				if body := filtertest.Body(t, s.Resp); body != deniedBody {
					t.Fatalf("body %q", body)
				}
			}
		})
	}
}

func TestDenyWinsAndShadow(t *testing.T) {
	stats := &countingStats{n: map[string]int{}}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	deny := build(t, &rbacv3.RBAC{
		Rules: rules(rbacconfv3.RBAC_DENY, map[string]*rbacconfv3.Policy{
			"no-debug": pol([]*rbacconfv3.Permission{pathPerm("/debug")}, []*rbacconfv3.Principal{anyPrin()}, ""),
		}),
	}, stats, log)
	allowAll := build(t, &rbacv3.RBAC{
		Rules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
			"all": pol([]*rbacconfv3.Permission{anyPerm()}, []*rbacconfv3.Principal{anyPrin()}, ""),
		}),
		ShadowRules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
			"only-get": pol([]*rbacconfv3.Permission{methodPerm("GET")}, []*rbacconfv3.Principal{anyPrin()}, ""),
		}),
	}, stats, log)
	chain := []filter.Filter{deny, allowAll}
	tests := []struct {
		name string
		req  req
		want int
	}{
		{name: "deny policy beats allow-all", req: req{path: "/debug/pprof"}, want: 403},
		{name: "allowed", req: req{path: "/x"}, want: 200},
		{name: "shadow would deny, request still passes", req: req{method: "POST", path: "/x"}, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status(t, chain, tt.req.stream()); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}
	// Each filter counts in its own name space in production (env.Name);
	// here both share one sink.
	if got := stats.get("rbac.denied"); got != 1 {
		t.Errorf("denied = %d", got)
	}
	if got := stats.get("rbac.shadow_denied"); got != 1 {
		t.Errorf("shadow_denied = %d", got)
	}
	if got := stats.get("rbac.shadow_allowed"); got != 1 {
		t.Errorf("shadow_allowed = %d", got)
	}
	if !strings.Contains(logBuf.String(), "policy=\"\"") && !strings.Contains(logBuf.String(), "rbac shadow denied") {
		t.Errorf("shadow denial not logged: %q", logBuf.String())
	}
}

func TestCostLimit(t *testing.T) {
	env, err := NewCELEnv(50)
	if err != nil {
		t.Fatal(err)
	}
	cond, err := env.ParseCondition(`[1,2,3,4,5,6,7,8,9,10].all(x, [1,2,3,4,5,6,7,8,9,10].all(y, x*y > 0))`)
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []rbacconfv3.RBAC_Action{rbacconfv3.RBAC_ALLOW, rbacconfv3.RBAC_DENY} {
		t.Run(action.String(), func(t *testing.T) {
			e, err := Compile(rules(action, map[string]*rbacconfv3.Policy{
				"expensive": {Permissions: []*rbacconfv3.Permission{anyPerm()}, Principals: []*rbacconfv3.Principal{anyPrin()}, Condition: cond},
			}), env)
			if err != nil {
				t.Fatal(err)
			}
			in := InputFor(req{path: "/"}.stream())
			// Over the limit the evaluation fails: closed for both actions.
			if ok, _ := e.Evaluate(&in); ok {
				t.Fatal("over-cost condition let the request through")
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		pb   *rbacv3.RBAC
		want string
	}{
		{name: "CEL type error names policy", pb: &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
			"p1": {Permissions: []*rbacconfv3.Permission{anyPerm()}, Principals: []*rbacconfv3.Principal{anyPrin()},
				Condition: mustParse(t, `unknown_var == 1`)}})}, want: "policies[p1].condition"},
		{name: "bad CIDR", pb: &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
			"p2": pol([]*rbacconfv3.Permission{anyPerm()}, []*rbacconfv3.Principal{ipPrin("10.0.0.300", 8)}, "")})}, want: "policies[p2].principals[0].direct_remote_ip"},
		{name: "LOG action", pb: &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_LOG, nil)}, want: "action"},
		{name: "foreign metadata", pb: &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_ALLOW, map[string]*rbacconfv3.Policy{
			"p3": pol([]*rbacconfv3.Permission{anyPerm()}, []*rbacconfv3.Principal{{Identifier: &rbacconfv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
				Filter: "other", Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "k"}}},
				Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}}}}}, "")})}, want: "metadata.filter"},
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

// mustParse parses without type-checking, so Build sees the error.
func mustParse(t *testing.T, src string) *exprpb.Expr {
	t.Helper()
	env, _ := NewCELEnv(0)
	ast, iss := env.env.Parse(src)
	if iss != nil && iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	pe, err := cel.AstToParsedExpr(ast)
	if err != nil {
		t.Fatal(err)
	}
	return pe.GetExpr()
}

func TestPerRoute(t *testing.T) {
	base := build(t, &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_DENY, map[string]*rbacconfv3.Policy{
		"all": pol([]*rbacconfv3.Permission{anyPerm()}, []*rbacconfv3.Principal{anyPrin()}, "")})}, nil, nil)
	off, err := Factory{}.BuildOverride(filtertest.Any(t, &rbacv3.RBACPerRoute{}), base, nil)
	if err != nil || off != filter.Disabled {
		t.Fatalf("override without rbac = %v, %v; want Disabled", off, err)
	}
	over, err := Factory{}.BuildOverride(filtertest.Any(t, &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}}), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := status(t, []filter.Filter{over}, req{path: "/"}.stream()); got != 200 {
		t.Fatalf("route override without rules: %d", got)
	}
}

func TestGRPCDenied(t *testing.T) {
	deny := build(t, &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_DENY, map[string]*rbacconfv3.Policy{
		"all": pol([]*rbacconfv3.Permission{anyPerm()}, []*rbacconfv3.Principal{anyPrin()}, "")})}, nil, nil)
	s := req{method: "POST", path: "/pkg.S/M", headers: []string{"content-type", "application/grpc"}}.stream()
	status(t, []filter.Filter{deny}, s)
	if got := s.Resp.Header.GetString("grpc-status"); got != "7" {
		t.Fatalf("grpc-status %q, want 7", got)
	}
}
