package strmatch

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func TestString(t *testing.T) {
	re := func(r string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}}
	}
	tests := []struct {
		name string
		m    *matcherv3.StringMatcher
		in   string
		want bool
	}{
		{"exact", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "abc", true},
		{"exact case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "ABC", false},
		{"exact ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "aBc"}, IgnoreCase: true}, "AbC", true},
		{"prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}}, "abc", true},
		{"prefix longer than input", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "abcd"}}, "abc", false},
		{"prefix ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "AB"}, IgnoreCase: true}, "abc", true},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "bc"}}, "abc", true},
		{"suffix miss", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "b"}}, "abc", false},
		{"suffix ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "BC"}, IgnoreCase: true}, "abc", true},
		{"contains", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "b"}}, "abc", true},
		{"contains miss", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "B"}}, "abc", false},
		{"contains ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "B"}, IgnoreCase: true}, "aBc", true},
		{"contains empty input", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}, IgnoreCase: true}, "", false},
		{"regex full match", re("a.c"), "abc", true},
		{"regex is anchored", re("b"), "abc", false},
		{"regex alternation anchored as a whole", re("a|abc"), "abc", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := CompileString(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Match([]byte(tt.in)); got != tt.want {
				t.Fatalf("Match(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got := s.MatchString(tt.in); got != tt.want {
				t.Fatalf("MatchString(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCompileStringErrors(t *testing.T) {
	tests := []struct {
		name string
		m    *matcherv3.StringMatcher
	}{
		{"nil", nil},
		{"no pattern", &matcherv3.StringMatcher{}},
		{"bad regex", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CompileString(tt.m); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func headers(kv ...string) *message.Headers {
	var h message.Headers
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &h
}

func TestHeader(t *testing.T) {
	str := func(name, exact string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: exact}}}}
	}
	tests := []struct {
		name string
		m    *routev3.HeaderMatcher
		h    *message.Headers
		want bool
	}{
		{"exact match", str("X-A", "1"), headers("x-a", "1"), true},
		{"exact differs", str("x-a", "1"), headers("x-a", "2"), false},
		{"absent", str("x-a", "1"), headers(), false},
		{"absent inverted", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}, headers(), false},
		{"repeated joined with comma", str("x-a", "1,2"), headers("x-a", "1", "x-a", "2"), true},
		{"deprecated exact", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}, headers("x-a", "1"), true},
		{"no specifier is presence", &routev3.HeaderMatcher{Name: "x-a"}, headers("x-a", ""), true},
		{"present false wants absence", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, headers(), true},
		{"present false, header present", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, headers("x-a", "1"), false},
		{"present inverted", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, headers(), true},
		{"inverted exact", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}, headers("x-a", "2"), true},
		{"missing as empty", &routev3.HeaderMatcher{Name: "x-a", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ""}}}}, headers(), true},
		{"prefix", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "ab"}}, headers("x-a", "abc"), true},
		{"suffix", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "bc"}}, headers("x-a", "abc"), true},
		{"contains", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "b"}}, headers("x-a", "abc"), true},
		{"regex", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
			SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "[0-9]+"}}}, headers("x-a", "123"), true},
		{"range in", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: -5, End: 10}}}, headers("x-n", "-5"), true},
		{"range end exclusive", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: 0, End: 10}}}, headers("x-n", "10"), false},
		{"range not a number", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
			RangeMatch: &typev3.Int64Range{Start: 0, End: 10}}}, headers("x-n", "x"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CompileHeader(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(tt.h); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		m    *routev3.HeaderMatcher
	}{
		{"no name", &routev3.HeaderMatcher{}},
		{"pseudo header", &routev3.HeaderMatcher{Name: ":path"}},
		{"empty range", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 3, End: 3}}}},
		{"bad regex", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "["}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CompileHeader(tt.m); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func BenchmarkHeadersMatch(b *testing.B) {
	hs, err := CompileHeaders("headers", []*routev3.HeaderMatcher{
		{Name: "x-env", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "PROD-CLUSTER-EU-WEST-WITH-A-LONG-NAME"}, IgnoreCase: true}}},
		{Name: "x-id", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "[a-f0-9]{8}"}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	h := headers("user-agent", "bench", "x-env", "the-prod-cluster-eu-west-with-a-long-name-1", "x-id", "deadbeef")
	b.ReportAllocs()
	for b.Loop() {
		if !hs.Match(h) {
			b.Fatal("no match")
		}
	}
}
