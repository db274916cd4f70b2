package forwarded

import (
	"net/netip"
	"regexp"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func req(hdr ...string) *message.Request {
	r := &message.Request{}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestApply(t *testing.T) {
	edge := Options{UseRemoteAddress: true, GenerateRequestID: true}
	edge1 := Options{UseRemoteAddress: true, TrustedHops: 1, GenerateRequestID: true}
	inner := Options{GenerateRequestID: true}
	inner1 := Options{TrustedHops: 1, GenerateRequestID: true}
	pub := netip.MustParseAddr("203.0.113.7")
	lan := netip.MustParseAddr("10.0.0.5")
	tests := []struct {
		name       string
		o          Options
		remote     netip.Addr
		tls        bool
		in         []string
		wantClient string
		external   bool
		wantXFF    string
		wantXFP    string
		wantExt    string // "" means absent
		keepReqID  bool
	}{
		{name: "edge appends the peer, it is the client", o: edge, remote: pub, in: []string{"x-forwarded-for", "1.2.3.4"},
			wantClient: "203.0.113.7", external: true, wantXFF: "1.2.3.4, 203.0.113.7", wantXFP: "http", wantExt: "203.0.113.7"},
		{name: "edge without xff", o: edge, remote: pub, tls: true, wantClient: "203.0.113.7", external: true,
			wantXFF: "203.0.113.7", wantXFP: "https", wantExt: "203.0.113.7"},
		{name: "edge overwrites an untrusted proto", o: edge, remote: pub, in: []string{"x-forwarded-proto", "https"},
			wantClient: "203.0.113.7", external: true, wantXFF: "203.0.113.7", wantXFP: "http", wantExt: "203.0.113.7"},
		{name: "edge behind one trusted LB: client is the LB's entry", o: edge1, remote: lan,
			in:         []string{"x-forwarded-for", "6.6.6.6, 198.51.100.9", "x-forwarded-proto", "https"},
			wantClient: "198.51.100.9", external: true, wantXFF: "6.6.6.6, 198.51.100.9, 10.0.0.5", wantXFP: "https", wantExt: "198.51.100.9"},
		{name: "internal peer keeps its request id", o: edge, remote: lan, in: []string{"x-request-id", "abc"},
			wantClient: "10.0.0.5", wantXFF: "10.0.0.5", wantXFP: "http", keepReqID: true},
		{name: "external request id replaced", o: edge, remote: pub, in: []string{"x-request-id", "abc"},
			wantClient: "203.0.113.7", external: true, wantXFF: "203.0.113.7", wantXFP: "http", wantExt: "203.0.113.7"},
		{name: "external request id preserved when asked", o: Options{UseRemoteAddress: true, GenerateRequestID: true, PreserveExternalRequestID: true},
			remote: pub, in: []string{"x-request-id", "abc"}, wantClient: "203.0.113.7", external: true, wantXFF: "203.0.113.7",
			wantXFP: "http", wantExt: "203.0.113.7", keepReqID: true},
		{name: "spoofed external address header dropped", o: edge, remote: lan, in: []string{"x-envoy-external-address", "1.1.1.1"},
			wantClient: "10.0.0.5", wantXFF: "10.0.0.5", wantXFP: "http"},
		{name: "skip append", o: Options{UseRemoteAddress: true, SkipXFFAppend: true}, remote: pub, in: []string{"x-forwarded-for", "1.2.3.4"},
			wantClient: "203.0.113.7", external: true, wantXFF: "1.2.3.4", wantXFP: "http", wantExt: "203.0.113.7"},
		{name: "inner hop: client is the last xff entry", o: inner, remote: lan, in: []string{"x-forwarded-for", "6.6.6.6, 203.0.113.7"},
			wantClient: "203.0.113.7", wantXFF: "6.6.6.6, 203.0.113.7", wantXFP: "http"},
		{name: "inner hop with a trusted hop", o: inner1, remote: lan, in: []string{"x-forwarded-for", "203.0.113.7, 10.1.1.1", "x-forwarded-proto", "https"},
			wantClient: "203.0.113.7", wantXFF: "203.0.113.7, 10.1.1.1", wantXFP: "https"},
		{name: "inner hop without xff: the peer", o: inner, remote: lan, wantClient: "10.0.0.5", wantXFP: "http"},
		{name: "garbage entry is not trusted", o: inner, remote: lan, in: []string{"x-forwarded-for", "1.2.3.4, not-an-ip"},
			wantClient: "10.0.0.5", wantXFF: "1.2.3.4, not-an-ip", wantXFP: "http"},
		{name: "fewer entries than trusted hops: the peer", o: inner1, remote: lan, in: []string{"x-forwarded-for", "1.2.3.4"},
			wantClient: "10.0.0.5", wantXFF: "1.2.3.4", wantXFP: "http"},
		{name: "entries with ports and v6", o: inner1, remote: lan, in: []string{"x-forwarded-for", "[2001:db8::1]:443, 10.1.1.1:80"},
			wantClient: "2001:db8::1", wantXFF: "[2001:db8::1]:443, 10.1.1.1:80", wantXFP: "http"},
		{name: "several xff fields are one list", o: edge1, remote: lan, in: []string{"x-forwarded-for", "1.1.1.1", "x-forwarded-for", "198.51.100.9"},
			wantClient: "198.51.100.9", external: true, wantXFF: "1.1.1.1, 198.51.100.9, 10.0.0.5", wantXFP: "http", wantExt: "198.51.100.9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.in...)
			c := Apply(r, tc.remote, tc.tls, &tc.o)
			if c.Addr.String() != tc.wantClient || c.External != tc.external {
				t.Errorf("client %v external %v, want %s %v", c.Addr, c.External, tc.wantClient, tc.external)
			}
			if got := r.Header.GetString("x-forwarded-for"); got != tc.wantXFF {
				t.Errorf("x-forwarded-for %q, want %q", got, tc.wantXFF)
			}
			if n := r.Header.Count("x-forwarded-for"); tc.wantXFF != "" && n != 1 {
				t.Errorf("%d x-forwarded-for fields, want 1", n)
			}
			if got := r.Header.GetString("x-forwarded-proto"); got != tc.wantXFP {
				t.Errorf("x-forwarded-proto %q, want %q", got, tc.wantXFP)
			}
			if got := r.Header.GetString("x-envoy-external-address"); got != tc.wantExt {
				t.Errorf("x-envoy-external-address %q, want %q", got, tc.wantExt)
			}
			id := r.Header.GetString("x-request-id")
			if tc.keepReqID {
				if id != "abc" {
					t.Errorf("x-request-id %q, want the caller's abc", id)
				}
			} else if tc.o.GenerateRequestID && !uuidRE.MatchString(id) {
				t.Errorf("x-request-id %q is not a generated UUID v4", id)
			}
		})
	}
}

func TestRequestIDsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		var b [36]byte
		id := string(NewRequestID(&b))
		if seen[id] || !uuidRE.MatchString(id) {
			t.Fatalf("request id %q repeated or malformed", id)
		}
		seen[id] = true
	}
}

func BenchmarkApply(b *testing.B) {
	o := Options{UseRemoteAddress: true, TrustedHops: 1, GenerateRequestID: true}
	remote := netip.MustParseAddr("10.0.0.5")
	r := &message.Request{}
	b.ReportAllocs()
	for b.Loop() {
		r.Header.Reset()
		r.Header.Add("x-forwarded-for", "203.0.113.7, 198.51.100.9")
		Apply(r, remote, false, &o)
	}
}

func FuzzFromRight(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "1.2.3.4, 5.6.7.8", "[::1]:80,x", ",,,", " 10.0.0.1 "} {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, v string, n uint8) {
		a, ok := fromRight([]byte(v), int(n%8)+1)
		if ok && !a.IsValid() {
			t.Fatalf("fromRight(%q) ok with an invalid address", v)
		}
	})
}
