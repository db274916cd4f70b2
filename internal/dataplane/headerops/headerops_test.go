package headerops

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func stream() *filter.Stream {
	s := &filter.Stream{Req: &message.Request{}, Resp: &message.Response{}}
	s.Req.SetMethod("POST")
	s.Req.SetScheme("https")
	s.Req.SetAuthority("api.example.com")
	s.Req.SetPath("/v1/items?x=1")
	s.Req.ProtoMajor, s.Req.ProtoMinor = 2, 0
	s.Req.Header.Add("x-id", "abc123")
	s.Req.Header.Add("x-alt", "alt")
	s.Resp.Header.Add("server", "up")
	s.Downstream.RemoteAddr = netip.MustParseAddrPort("[2001:db8::1]:443")
	s.Downstream.LocalAddr = netip.MustParseAddrPort("10.0.0.1:8080")
	s.Start = time.Date(2025, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	return s
}

func TestParseAndRender(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		literal bool
	}{
		{"literal", "hello", "hello", true},
		{"empty", "", "", true},
		{"escaped percent only", "100%%", "100%", true},
		{"request header", "id=%REQ(X-Id)%", "id=abc123", false},
		{"fallback", "%REQ(x-none?x-alt)%", "alt", false},
		{"first wins over fallback", "%REQ(x-id?x-alt)%", "abc123", false},
		{"truncation", "%REQ(x-id):3%", "abc", false},
		{"missing header empty", "<%REQ(x-none)%>", "<>", false},
		{"response header", "%RESP(server)%", "up", false},
		{"pseudo headers", "%REQ(:method)% %REQ(:scheme)%://%REQ(host)%%REQ(:path)%", "POST https://api.example.com/v1/items?x=1", false},
		{"remote v6 address", "%DOWNSTREAM_REMOTE_ADDRESS%", "[2001:db8::1]:443", false},
		{"remote without port", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "2001:db8::1", false},
		{"local address", "%DOWNSTREAM_LOCAL_ADDRESS%/%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.1:8080/10.0.0.1", false},
		{"start time", "%START_TIME%", "2025-01-02T03:04:05.006Z", false},
		{"protocol", "%PROTOCOL%", "HTTP/2", false},
		{"server name without tls", "[%REQUESTED_SERVER_NAME%]", "[]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ParseValue(tt.in)
			if err != nil {
				t.Fatalf("ParseValue(%q): %v", tt.in, err)
			}
			if v.IsLiteral() != tt.literal {
				t.Fatalf("IsLiteral = %v, want %v", v.IsLiteral(), tt.literal)
			}
			if got := string(v.AppendTo(nil, stream())); got != tt.want {
				t.Fatalf("rendered %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"lone percent", "50%", "unterminated"},
		{"unknown command", "%UPSTREAM_HOST%", "not supported"},
		{"custom start time format", "%START_TIME(%s)%", "takes no arguments"},
		{"unclosed paren", "%REQ(x%", "unterminated"},
		{"args on a no-arg command", "%PROTOCOL(x)%", "takes no arguments"},
		{"empty header", "%REQ()%", "header name required"},
		{"empty fallback", "%REQ(a?)%", "empty header name"},
		{"bad truncation", "%REQ(a):x%", "truncation"},
		{"zero truncation", "%REQ(a):0%", "truncation"},
		{"junk after paren", "%REQ(a)x%", "unexpected"},
		{"unknown pseudo", "%REQ(:protocol)%", "unknown pseudo-header"},
		{"response pseudo", "%RESP(:status)%", "response pseudo-headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseValue(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseValue(%q) error = %v, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

func opt(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

func TestOptions(t *testing.T) {
	legacyOverwrite := opt("x-a", "new", 0)
	legacyOverwrite.Append = wrapperspb.Bool(false)
	legacyAppend := opt("x-a", "new", 0)
	legacyAppend.Append = wrapperspb.Bool(true)
	raw := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-raw", RawValue: []byte("r\xffw")}}
	tests := []struct {
		name   string
		opts   []*corev3.HeaderValueOption
		header string
		want   []string
	}{
		{"legacy append false overwrites", []*corev3.HeaderValueOption{legacyOverwrite}, "x-a", []string{"new"}},
		{"legacy append true appends", []*corev3.HeaderValueOption{legacyAppend}, "x-a", []string{"old", "new"}},
		{"raw value", []*corev3.HeaderValueOption{raw}, "x-raw", []string{"r\xffw"}},
		{"formatted overwrite", []*corev3.HeaderValueOption{opt("x-a", "%REQ(x-id)%",
			corev3.HeaderValueOption_OVERWRITE_IF_EXISTS)}, "x-a", []string{"abc123"}},
		{"formatted add if absent skips", []*corev3.HeaderValueOption{opt("x-a", "%REQ(x-id)%",
			corev3.HeaderValueOption_ADD_IF_ABSENT)}, "x-a", []string{"old"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := CompileOptions("opts", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			s := stream()
			s.Req.Header.Add("x-a", "old")
			l.Apply(&s.Req.Header, s)
			var got []string
			for i := 0; i < s.Req.Header.Len(); i++ {
				if f := s.Req.Header.At(i); string(f.Name) == tt.header {
					got = append(got, string(f.Value))
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	both := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "a", RawValue: []byte("b")}}
	tests := []struct {
		name string
		opts []*corev3.HeaderValueOption
		muts []*mutationv3.HeaderMutation
		want string
	}{
		{"value and raw value", []*corev3.HeaderValueOption{both}, nil, "opts[0]: header: only one"},
		{"missing header", []*corev3.HeaderValueOption{{}}, nil, "opts[0]: header: required"},
		{"bad name char", []*corev3.HeaderValueOption{opt("x y", "1", 0)}, nil, "invalid character"},
		{"crlf in value", []*corev3.HeaderValueOption{opt("x", "a\r\nb: c", 0)}, nil, "invalid byte"},
		{"pseudo", []*corev3.HeaderValueOption{opt(":authority", "x", 0)}, nil, "may not be modified"},
		{"mutation without action", nil, []*mutationv3.HeaderMutation{{}}, "muts[0]: action"},
		{"remove empty", nil, []*mutationv3.HeaderMutation{{Action: &mutationv3.HeaderMutation_Remove{}}}, "muts[0]: remove"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.opts != nil {
				_, err = CompileOptions("opts", tt.opts)
			} else {
				_, err = CompileMutations("muts", tt.muts)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func FuzzParseValue(f *testing.F) {
	f.Add("literal")
	f.Fuzz(func(t *testing.T, in string) {
		v, err := ParseValue(in)
		if err != nil {
			return
		}
		out := string(v.AppendTo(nil, stream()))
		if !strings.Contains(in, "%") && out != in {
			t.Fatalf("literal %q rendered as %q", in, out)
		}
		if v.IsLiteral() && out != strings.ReplaceAll(in, "%%", "%") {
			t.Fatalf("literal-only %q rendered as %q", in, out)
		}
	})
}

func BenchmarkApplyFormatted(b *testing.B) {
	l, err := CompileOptions("opts", []*corev3.HeaderValueOption{
		opt("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		opt("x-trace", "%REQ(x-id)%-%START_TIME%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		opt("x-static", "v", corev3.HeaderValueOption_ADD_IF_ABSENT),
	})
	if err != nil {
		b.Fatal(err)
	}
	s := stream()
	b.ReportAllocs()
	for b.Loop() {
		s.Resp.Header.Reset()
		l.Apply(&s.Resp.Header, s)
	}
}
