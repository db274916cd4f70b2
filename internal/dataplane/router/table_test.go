package router

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func clusterRoute(name string, m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
}

func testTable(t testing.TB) *Table {
	canary := prefix("/api/")
	canary.Headers = []*routev3.HeaderMatcher{exactHeader("x-canary", "true")}
	regex := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `/items/[0-9]+`}}}
	exact := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}
	post := prefix("/submit")
	post.Headers = []*routev3.HeaderMatcher{exactHeader(":method", "POST")}
	query := prefix("/q")
	query.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "1"}}}}}
	grpc := prefix("/")
	grpc.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	ci := prefix("/CASE")
	ci.CaseSensitive = wrapperspb.Bool(false)
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		{Name: "shop", Domains: []string{"shop.example.com", "*.shop.example.com"}, Routes: []*routev3.Route{
			clusterRoute("canary", canary, "v2"),
			clusterRoute("regex", regex, "items"),
			clusterRoute("exact", exact, "exact"),
			clusterRoute("post", post, "post"),
			clusterRoute("query", query, "debug"),
			clusterRoute("grpc", grpc, "grpc"),
			clusterRoute("ci", ci, "ci"),
			clusterRoute("default", prefix("/"), "v1"),
		}},
		{Name: "www", Domains: []string{"www.*"}, Routes: []*routev3.Route{clusterRoute("www", prefix("/"), "www")}},
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{clusterRoute("any", prefix("/only/"), "any")}},
	}}
	tab, err := Compile(rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func request(method, host, path string, hdr ...string) *message.Request {
	r := &message.Request{}
	r.SetMethod(method)
	r.SetAuthority(host)
	r.SetPath(path)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestTableMatch(t *testing.T) {
	tab := testTable(t)
	tests := []struct {
		name string
		req  *message.Request
		want string // route name, "" for no match
	}{
		{"canary header", request("GET", "shop.example.com", "/api/x", "x-canary", "true"), "canary"},
		{"canary header wrong value", request("GET", "shop.example.com", "/api/x", "x-canary", "false"), "default"},
		{"host with port", request("GET", "shop.example.com:8080", "/api/x", "x-canary", "true"), "canary"},
		{"host upper case", request("GET", "SHOP.example.COM", "/"), "default"},
		{"suffix wildcard", request("GET", "eu.shop.example.com", "/"), "default"},
		{"prefix wildcard", request("GET", "www.example.org", "/"), "www"},
		{"catch-all host", request("GET", "other.test", "/only/a"), "any"},
		{"catch-all host no route", request("GET", "other.test", "/elsewhere"), ""},
		{"regex is anchored", request("GET", "shop.example.com", "/items/42"), "regex"},
		{"regex partial does not match", request("GET", "shop.example.com", "/items/42/x"), "default"},
		{"exact path", request("GET", "shop.example.com", "/exact"), "exact"},
		{"exact path ignores query", request("GET", "shop.example.com", "/exact?a=b"), "exact"},
		{"exact path longer", request("GET", "shop.example.com", "/exactly"), "default"},
		{"method matcher", request("POST", "shop.example.com", "/submit"), "post"},
		{"method matcher wrong method", request("GET", "shop.example.com", "/submit"), "default"},
		{"query matcher", request("GET", "shop.example.com", "/q?x=1&debug=1"), "query"},
		{"query matcher wrong value", request("GET", "shop.example.com", "/q?debug=2"), "default"},
		{"grpc matcher", request("POST", "shop.example.com", "/pkg.Svc/M", "content-type", "application/grpc"), "grpc"},
		{"case-insensitive prefix", request("GET", "shop.example.com", "/case/x"), "ci"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tab.Match(tt.req)
			got := ""
			if r != nil {
				got = r.Name()
			}
			if got != tt.want {
				t.Fatalf("Match = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name string
		rc   *routev3.RouteConfiguration
	}{
		{"bad regex", &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
			clusterRoute("r", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}, "c")}}}}},
		{"duplicate domain", &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"x.com"}}, {Name: "b", Domains: []string{"x.com"}}}}},
		{"two catch-alls", &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"*"}}, {Name: "b", Domains: []string{"*"}}}}},
		{"unknown retry condition", &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
			{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
				RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,bogus"}}}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Compile(tt.rc, nil); err == nil {
				t.Fatal("Compile accepted invalid config")
			}
		})
	}
}

func TestGRPCTimeout(t *testing.T) {
	for in, want := range map[string]int64{"100m": 100e6, "5S": 5e9, "1H": 3600e9, "10u": 10e3, "bad": 0, "5x": 0, "": 0} {
		r := request("POST", "h", "/")
		if in != "" {
			r.Header.Add("grpc-timeout", in)
		}
		if got := grpcTimeout(r); int64(got) != want {
			t.Errorf("grpcTimeout(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestBackoffBounded(t *testing.T) {
	p := &RetryPolicy{Base: 25e6, Max: 250e6}
	maxRnd := func(n uint64) uint64 { return n - 1 }
	for n, want := range map[int]int64{1: 25e6, 2: 50e6, 3: 100e6, 4: 200e6, 5: 250e6, 9: 250e6} {
		if got := p.backoff(n, maxRnd); int64(got) != want-1 {
			t.Errorf("backoff(%d) upper bound = %v, want %v", n, got, want)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	tab := testTable(b)
	reqs := []*message.Request{
		request("GET", "shop.example.com", "/api/items?id=1", "user-agent", "bench", "accept", "*/*", "x-canary", "true"),
		request("GET", "shop.example.com:8080", "/products/42", "user-agent", "bench", "accept", "*/*"),
		request("GET", "eu.shop.example.com", "/items/42", "user-agent", "bench"),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if tab.Match(reqs[i%len(reqs)]) == nil {
			b.Fatal("no match")
		}
		i++
	}
}
