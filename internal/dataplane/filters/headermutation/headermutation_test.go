package headermutation

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

type act = corev3.HeaderValueOption_HeaderAppendAction

func add(name, value string, a act) *mutationv3.HeaderMutation {
	return &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: a,
	}}}
}

func del(name string) *mutationv3.HeaderMutation {
	return &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Remove{Remove: name}}
}

func delPrefix(prefix string) *mutationv3.HeaderMutation {
	return &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_RemoveOnMatch_{
		RemoveOnMatch: &mutationv3.HeaderMutation_RemoveOnMatch{KeyMatcher: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}}}}
}

func build(t *testing.T, req, resp []*mutationv3.HeaderMutation) filter.Filter {
	t.Helper()
	f, err := Factory{}.Build(filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
		RequestMutations: req, ResponseMutations: resp}}), &filter.Env{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return f
}

func TestRequestMutations(t *testing.T) {
	const (
		appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
		overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		overwriteIf    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
	)
	tests := []struct {
		name   string
		muts   []*mutationv3.HeaderMutation
		in     []string // request header pairs
		header string
		want   []string
	}{
		{"append to existing", []*mutationv3.HeaderMutation{add("x-a", "2", appendOrAdd)}, []string{"x-a", "1"}, "x-a", []string{"1", "2"}},
		{"append when absent adds", []*mutationv3.HeaderMutation{add("X-A", "2", appendOrAdd)}, nil, "x-a", []string{"2"}},
		{"add if absent, present", []*mutationv3.HeaderMutation{add("x-a", "2", addIfAbsent)}, []string{"x-a", "1"}, "x-a", []string{"1"}},
		{"add if absent, absent", []*mutationv3.HeaderMutation{add("x-a", "2", addIfAbsent)}, nil, "x-a", []string{"2"}},
		{"overwrite or add, present", []*mutationv3.HeaderMutation{add("x-a", "9", overwriteOrAdd)}, []string{"x-a", "1", "x-a", "2"}, "x-a", []string{"9"}},
		{"overwrite or add, absent", []*mutationv3.HeaderMutation{add("x-a", "9", overwriteOrAdd)}, nil, "x-a", []string{"9"}},
		{"overwrite if exists, present", []*mutationv3.HeaderMutation{add("x-a", "9", overwriteIf)}, []string{"x-a", "1"}, "x-a", []string{"9"}},
		{"overwrite if exists, absent", []*mutationv3.HeaderMutation{add("x-a", "9", overwriteIf)}, nil, "x-a", nil},
		{"remove", []*mutationv3.HeaderMutation{del("X-A")}, []string{"x-a", "1", "x-b", "2", "x-a", "3"}, "x-a", nil},
		{"remove on match", []*mutationv3.HeaderMutation{delPrefix("x-internal-")}, []string{"x-internal-a", "1", "x-internal-b", "2"}, "x-internal-b", nil},
		{"order: remove then add", []*mutationv3.HeaderMutation{del("x-a"), add("x-a", "new", appendOrAdd)}, []string{"x-a", "old"}, "x-a", []string{"new"}},
		{"formatter REQ", []*mutationv3.HeaderMutation{add("x-copy", "id=%REQ(x-id)%", appendOrAdd)}, []string{"x-id", "abc"}, "x-copy", []string{"id=abc"}},
		{"formatter REQ fallback", []*mutationv3.HeaderMutation{add("x-copy", "%REQ(x-id?x-alt)%", appendOrAdd)}, []string{"x-alt", "alt"}, "x-copy", []string{"alt"}},
		{"formatter REQ truncated", []*mutationv3.HeaderMutation{add("x-copy", "%REQ(x-id):3%", appendOrAdd)}, []string{"x-id", "abcdef"}, "x-copy", []string{"abc"}},
		{"formatter missing header is empty", []*mutationv3.HeaderMutation{add("x-copy", "[%REQ(x-none)%]", appendOrAdd)}, nil, "x-copy", []string{"[]"}},
		{"formatter authority and path", []*mutationv3.HeaderMutation{add("x-where", "%REQ(:authority)%%REQ(:path)%", appendOrAdd)}, nil, "x-where", []string{"example.com/p"}},
		{"escaped percent", []*mutationv3.HeaderMutation{add("x-pct", "50%%", appendOrAdd)}, nil, "x-pct", []string{"50%"}},
		{"remote address", []*mutationv3.HeaderMutation{add("x-peer", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_REMOTE_ADDRESS%", overwriteOrAdd)}, nil, "x-peer", []string{"10.1.2.3|10.1.2.3:4567"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			term := &filtertest.Terminal{}
			var got []string
			term.OnServe = func(s *filter.Stream) { got = filtertest.Values(&s.Req.Header, tt.header) }
			chain := filter.NewChain(term, build(t, tt.muts, nil))
			s := filtertest.NewStream("GET", "/p", tt.in...)
			s.Downstream.RemoteAddr = netip.MustParseAddrPort("10.1.2.3:4567")
			chain.Run(s)
			if term.Calls() != 1 {
				t.Fatalf("terminal calls = %d, want 1", term.Calls())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestResponseMutations(t *testing.T) {
	f := build(t, nil, []*mutationv3.HeaderMutation{
		del("server"),
		add("x-request-id", "%REQ(x-request-id)%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-status-copy", "%RESP(x-upstream)%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-start", "%START_TIME%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
	})
	term := &filtertest.Terminal{Header: [][2]string{{"server", "upstream"}, {"x-upstream", "u1"}}}
	s := filtertest.NewStream("GET", "/", "x-request-id", "r-1")
	s.Start = time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.FixedZone("X", 3600))
	filter.NewChain(term, f).Run(s)
	h := &s.Resp.Header
	tests := []struct {
		name, header string
		want         []string
	}{
		{"server removed", "server", nil},
		{"request id copied", "x-request-id", []string{"r-1"}},
		{"response header copied", "x-status-copy", []string{"u1"}},
		{"start time in UTC with millis", "x-start", []string{"2024-05-06T06:08:09.123Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := filtertest.Values(h, tt.header); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestPerRouteOverride(t *testing.T) {
	base := build(t, []*mutationv3.HeaderMutation{add("x-who", "listener", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
		[]*mutationv3.HeaderMutation{add("x-resp", "listener", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)})
	over, err := Factory{}.BuildOverride(filtertest.Any(t, &hmv3.HeaderMutationPerRoute{Mutations: &hmv3.Mutations{
		RequestMutations:  []*mutationv3.HeaderMutation{add("x-who", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
		ResponseMutations: []*mutationv3.HeaderMutation{add("x-resp", "route", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)},
	}}), base, &filter.Env{})
	if err != nil {
		t.Fatalf("BuildOverride: %v", err)
	}
	tests := []struct {
		name     string
		route    *filter.Route
		wantReq  []string
		wantResp []string
	}{
		{"no route uses listener config", nil, []string{"listener"}, []string{"listener"}},
		{"route without override", &filter.Route{}, []string{"listener"}, []string{"listener"}},
		{"route override runs after listener", &filter.Route{Overrides: []filter.Filter{over}}, []string{"route"}, []string{"listener", "route"}},
		{"route disables filter", &filter.Route{Overrides: []filter.Filter{filter.Disabled}}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotReq []string
			term := &filtertest.Terminal{OnServe: func(s *filter.Stream) { gotReq = filtertest.Values(&s.Req.Header, "x-who") }}
			s := filtertest.NewStream("GET", "/")
			s.Route = tt.route
			filter.NewChain(term, base).Run(s)
			if !reflect.DeepEqual(gotReq, tt.wantReq) {
				t.Errorf("request x-who = %q, want %q", gotReq, tt.wantReq)
			}
			if got := filtertest.Values(&s.Resp.Header, "x-resp"); !reflect.DeepEqual(got, tt.wantResp) {
				t.Errorf("response x-resp = %q, want %q", got, tt.wantResp)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	kv := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	appendOf := func(o *corev3.HeaderValueOption) *mutationv3.HeaderMutation {
		return &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Append{Append: o}}
	}
	both := kv("x-a", "1")
	both.Append = wrapperspb.Bool(false)
	both.AppendAction = corev3.HeaderValueOption_ADD_IF_ABSENT
	tests := []struct {
		name string
		cfg  *anypb.Any
		want string
	}{
		{"wrong type", filtertest.Any(t, durationpb.New(time.Second)), "typed_config"},
		{"missing config", nil, "typed_config: missing"},
		{"unknown formatter", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			RequestMutations: []*mutationv3.HeaderMutation{appendOf(kv("x-a", "%UPSTREAM_HOST%"))}}}),
			"request_mutations[0]: append: header.value"},
		{"unterminated formatter", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			ResponseMutations: []*mutationv3.HeaderMutation{del("x-b"), appendOf(kv("x-a", "50%"))}}}),
			"response_mutations[1]: append: header.value"},
		{"pseudo header", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			RequestMutations: []*mutationv3.HeaderMutation{del(":path")}}}),
			"request_mutations[0]: remove"},
		{"host header", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			RequestMutations: []*mutationv3.HeaderMutation{appendOf(kv("Host", "x"))}}}),
			"header.key"},
		{"append and append_action", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			RequestMutations: []*mutationv3.HeaderMutation{appendOf(both)}}}),
			"append and append_action"},
		{"query parameter mutations", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			QueryParameterMutations: []*corev3.KeyValueMutation{{Remove: "a"}}}}),
			"query_parameter_mutations"},
		{"trailers", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			ResponseTrailersMutations: []*mutationv3.HeaderMutation{del("x")}}}),
			"response_trailers_mutations"},
		{"invalid regex", filtertest.Any(t, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
			RequestMutations: []*mutationv3.HeaderMutation{{Action: &mutationv3.HeaderMutation_RemoveOnMatch_{
				RemoveOnMatch: &mutationv3.HeaderMutation_RemoveOnMatch{KeyMatcher: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}}}}),
			"remove_on_match.key_matcher: safe_regex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Factory{}.Build(tt.cfg, &filter.Env{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := (Factory{}).BuildOverride(filtertest.Any(t, &hmv3.HeaderMutation{}), nil, &filter.Env{}); err == nil {
		t.Fatal("BuildOverride accepted a HeaderMutation instead of HeaderMutationPerRoute")
	}
}

func BenchmarkMutations(b *testing.B) {
	f, err := Factory{}.Build(filtertest.Any(b, &hmv3.HeaderMutation{Mutations: &hmv3.Mutations{
		RequestMutations: []*mutationv3.HeaderMutation{
			del("x-internal"),
			add("x-env", "prod", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			add("x-forwarded-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		},
		ResponseMutations: []*mutationv3.HeaderMutation{
			del("server"),
			add("x-request-id", "%REQ(x-request-id)%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		},
	}}), &filter.Env{})
	if err != nil {
		b.Fatal(err)
	}
	s := filtertest.NewStream("GET", "/")
	s.Downstream.RemoteAddr = netip.MustParseAddrPort("10.1.2.3:4567")
	term := &filtertest.Terminal{Header: [][2]string{{"server", "x"}}}
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/", "x-internal", "1", "x-request-id", "abc")
		s.Downstream.RemoteAddr = netip.MustParseAddrPort("10.1.2.3:4567")
		if f.OnRequest(s) != filter.Continue {
			b.Fatal("stopped")
		}
		_ = term.Serve(s)
		f.OnResponse(s)
	}
}
