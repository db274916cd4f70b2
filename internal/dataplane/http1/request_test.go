package http1

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func parseRequest(raw string, lim Limits) (*message.Request, Framing, error) {
	rd := NewReader(strings.NewReader(raw), 4096)
	req := new(message.Request)
	f, err := rd.ReadRequest(req, lim)
	return req, f, err
}

// statusOf returns the *Error status of err, 0 for nil and -1 for other
// errors.
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Status
	}
	return -1
}

func header(req *message.Request, name string) string {
	v, ok := req.Header.Get(name)
	if !ok {
		return "<none>"
	}
	return string(v)
}

func TestReadRequestStrictness(t *testing.T) {
	const host = "Host: example.com\r\n"
	long := strings.Repeat("a", 9000)
	manyHeaders := strings.Repeat("X-A: b\r\n", 101)
	bigHeaders := strings.Repeat("X-Big: "+strings.Repeat("v", 1000)+"\r\n", 70)
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		// Framing.
		{"content-length and transfer-encoding", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"transfer-encoding then content-length", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
		{"duplicate content-length differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"content-length list differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\n", 400},
		{"content-length list empty element", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5,,5\r\n\r\n", 400},
		{"content-length letters", "POST / HTTP/1.1\r\n" + host + "Content-Length: abc\r\n\r\n", 400},
		{"content-length minus", "POST / HTTP/1.1\r\n" + host + "Content-Length: -5\r\n\r\n", 400},
		{"content-length plus", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\n", 400},
		{"content-length hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x10\r\n\r\n", 400},
		{"content-length inner space", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1 2\r\n\r\n", 400},
		{"content-length empty", "POST / HTTP/1.1\r\n" + host + "Content-Length: \r\n\r\n", 400},
		{"content-length overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n", 400},
		{"content-length max int64 ok", "POST / HTTP/1.1\r\n" + host + "Content-Length: 9223372036854775807\r\n\r\n", 0},
		{"transfer-encoding unknown", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: foo\r\n\r\n", 501},
		{"transfer-encoding identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", 501},
		{"transfer-encoding chunked param", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked;x=1\r\n\r\n", 501},
		{"transfer-encoding chunked then gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"transfer-encoding gzip only", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 400},
		{"transfer-encoding gzip then chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"transfer-encoding chunked twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"transfer-encoding empty", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \r\n\r\n", 400},
		{"transfer-encoding vertical tab", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \vchunked\r\n\r\n", 400},
		{"transfer-encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"transfer-encoding mixed case ok", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:  Chunked \r\n\r\n", 0},
		{"CONNECT with body", "CONNECT example.com:443 HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\n", 400},
		// Field syntax.
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X: a\rb\r\n\r\n", 400},
		{"bare LF ends line", "GET / HTTP/1.1\r\n" + host + "X: a\nY: b\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x00b\r\n\r\n", 400},
		{"NUL in name", "GET / HTTP/1.1\r\n" + host + "X\x00: b\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x7fb\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X : b\r\n\r\n", 400},
		{"tab before colon", "GET / HTTP/1.1\r\n" + host + "X\t: b\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": b\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X b\r\n\r\n", 400},
		{"non-token name", "GET / HTTP/1.1\r\n" + host + "X(y): b\r\n\r\n", 400},
		{"non-ASCII name", "GET / HTTP/1.1\r\n" + host + "X\xc3\xa9: b\r\n\r\n", 400},
		{"obs-fold space", "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\n" + host + "X: a\r\n\tb\r\n\r\n", 400},
		{"obs-text value ok", "GET / HTTP/1.1\r\n" + host + "X: caf\xc3\xa9\r\n\r\n", 0},
		{"bare LF after headers", "GET / HTTP/1.1\r\n" + host + "\n", 400},
		// Request line.
		{"missing version", "GET /\r\n" + host + "\r\n", 400},
		{"missing target", "GET HTTP/1.1\r\n" + host + "\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\n" + host + "\r\n", 400},
		{"tab separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\n" + host + "\r\n", 400},
		{"short version", "GET / HTTP/1\r\n" + host + "\r\n", 400},
		{"version 2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", 505},
		{"version 1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", 505},
		{"version 0.9", "GET / HTTP/0.9\r\n" + host + "\r\n", 505},
		{"method not a token", "G(T / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"request line bare LF", "GET / HTTP/1.1\n" + host + "\r\n", 400},
		{"target with control", "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"target with fragment", "GET /a#b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"target non-ASCII", "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"target relative", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"asterisk for GET", "GET * HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute-form ftp", "GET ftp://example.com/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute-form userinfo", "GET http://user@example.com/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute-form empty authority", "GET http:///p HTTP/1.1\r\n" + host + "\r\n", 400},
		{"CONNECT origin-form", "CONNECT /x HTTP/1.1\r\n" + host + "\r\n", 400},
		{"CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" + host + "\r\n", 400},
		// Limits.
		{"request line too long", "GET /" + long + " HTTP/1.1\r\n" + host + "\r\n", 414},
		{"too many headers", "GET / HTTP/1.1\r\n" + host + manyHeaders + "\r\n", 431},
		{"head too large", "GET / HTTP/1.1\r\n" + host + bigHeaders + "\r\n", 431},
		{"too many empty lines", strings.Repeat("\r\n", 5000) + "GET / HTTP/1.1\r\n" + host + "\r\n", 400},
		// Host.
		{"missing host on 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"duplicate host", "GET / HTTP/1.1\r\n" + host + host + "\r\n", 400},
		{"duplicate host on 1.0", "GET / HTTP/1.0\r\n" + host + host + "\r\n", 400},
		{"missing host on 1.0 ok", "GET / HTTP/1.0\r\n\r\n", 0},
		{"host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"duplicate upgrade", "GET / HTTP/1.1\r\n" + host + "Connection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n", 400},
		// Accepted.
		{"leading CRLFs ignored", "\r\n\r\nGET / HTTP/1.1\r\n" + host + "\r\n", 0},
		{"plain GET", "GET /p?q=1 HTTP/1.1\r\n" + host + "\r\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f, err := parseRequest(tt.raw, Limits{})
			if got := statusOf(err); got != tt.status {
				t.Fatalf("status = %d (err %v), want %d", got, err, tt.status)
			}
			if err != nil && !f.Close {
				t.Errorf("Framing.Close = false after an error")
			}
		})
	}
}

func TestReadRequestMapping(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, req *message.Request, f Framing)
	}{
		{
			name: "origin-form with OWS trimmed and names lower-cased",
			raw:  "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8080\r\nX-Trim: \t  v a l \t\r\nAccept:*/*\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "method", string(req.Method), "GET")
				want(t, "path", string(req.Path), "/a/b?c=d")
				want(t, "authority", string(req.Authority), "Example.com:8080")
				want(t, "scheme", string(req.Scheme), "http")
				want(t, "x-trim", header(req, "x-trim"), "v a l")
				want(t, "accept", header(req, "accept"), "*/*")
				want(t, "host field", header(req, "host"), "<none>")
				if !f.NoBody || f.Chunked || f.ContentLength != 0 || f.Close {
					t.Errorf("framing = %+v", f)
				}
				if req.ProtoMajor != 1 || req.ProtoMinor != 1 {
					t.Errorf("proto = %d.%d", req.ProtoMajor, req.ProtoMinor)
				}
			},
		},
		{
			name: "absolute-form overrides host",
			raw:  "GET http://upstream.example/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "authority", string(req.Authority), "upstream.example")
				want(t, "path", string(req.Path), "/p?q")
			},
		},
		{
			name: "absolute-form without path",
			raw:  "GET HTTPS://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "path", string(req.Path), "/")
			},
		},
		{
			name: "absolute-form query only",
			raw:  "GET http://h.example?x=1 HTTP/1.1\r\nHost: h.example\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "path", string(req.Path), "/?x=1")
			},
		},
		{
			name: "OPTIONS asterisk",
			raw:  "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "path", string(req.Path), "*")
			},
		},
		{
			name: "OPTIONS absolute-form without path is asterisk",
			raw:  "OPTIONS http://h:81 HTTP/1.1\r\nHost: h:81\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "path", string(req.Path), "*")
				want(t, "authority", string(req.Authority), "h:81")
			},
		},
		{
			name: "CONNECT authority-form",
			raw:  "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "authority", string(req.Authority), "[::1]:443")
				want(t, "path", string(req.Path), "")
				if !f.NoBody {
					t.Errorf("CONNECT framing = %+v", f)
				}
			},
		},
		{
			name: "hop-by-hop fields removed",
			raw: "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop, Close\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\nX-Hop: 1\r\nTE: gzip\r\nUpgrade: websocket\r\nX-Keep: 2\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				for _, n := range []string{"connection", "keep-alive", "proxy-connection", "x-hop", "te", "upgrade", "close"} {
					want(t, n, header(req, n), "<none>")
				}
				want(t, "x-keep", header(req, "x-keep"), "2")
				if !f.Close || f.Upgrade {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "te trailers kept",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nTE: deflate, Trailers\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "te", header(req, "te"), "trailers")
			},
		},
		{
			name: "upgrade kept with connection upgrade",
			raw:  "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "upgrade", header(req, "upgrade"), "websocket")
				want(t, "connection", header(req, "connection"), "<none>")
				if !f.Upgrade || f.Close {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "upgrade ignored on HTTP/1.0",
			raw:  "GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "upgrade", header(req, "upgrade"), "<none>")
				if f.Upgrade || !f.Close {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "HTTP/1.0 keep-alive",
			raw:  "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				if f.Close {
					t.Errorf("framing = %+v", f)
				}
				if req.ProtoMinor != 0 {
					t.Errorf("minor = %d", req.ProtoMinor)
				}
			},
		},
		{
			name: "expect 100-continue",
			raw:  "PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "expect", header(req, "expect"), "<none>")
				want(t, "content-length", header(req, "content-length"), "10")
				if !f.ExpectContinue || f.NoBody || f.ContentLength != 10 || req.ContentLength != 10 {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "expect without body",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				if f.ExpectContinue {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "content-length list collapses",
			raw:  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "content-length", header(req, "content-length"), "3")
				if n := req.Header.Count("content-length"); n != 1 {
					t.Errorf("content-length fields = %d", n)
				}
				if f.ContentLength != 3 {
					t.Errorf("framing = %+v", f)
				}
			},
		},
		{
			name: "chunked",
			raw:  "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
			check: func(t *testing.T, req *message.Request, f Framing) {
				want(t, "transfer-encoding", header(req, "transfer-encoding"), "<none>")
				if !f.Chunked || f.ContentLength != -1 || f.NoBody || req.ContentLength != -1 {
					t.Errorf("framing = %+v", f)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, f, err := parseRequest(tt.raw, Limits{})
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			tt.check(t, req, f)
		})
	}
}

func want(t *testing.T, what, got, w string) {
	t.Helper()
	if got != w {
		t.Errorf("%s = %q, want %q", what, got, w)
	}
}

func TestReadRequestEOF(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want error
	}{
		{"empty stream", "", io.EOF},
		{"only empty lines", "\r\n\r\n", io.EOF},
		{"cut in request line", "GET / HT", io.ErrUnexpectedEOF},
		{"cut in headers", "GET / HTTP/1.1\r\nHost: h\r\n", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseRequest(tt.raw, Limits{})
			if err != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReadRequestLongLineGrowsBuffer checks that a head line longer than the
// buffer but within the limits is accepted.
func TestReadRequestLongLineGrowsBuffer(t *testing.T) {
	cookie := strings.Repeat("c", 20000)
	raw := "GET / HTTP/1.1\r\nHost: h\r\nCookie: " + cookie + "\r\n\r\n"
	req, _, err := parseRequest(raw, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if header(req, "cookie") != cookie {
		t.Fatal("cookie mangled")
	}
}

// TestPipelined parses several requests sent in one buffer, with bodies
// between them, and checks that each body stays with its request.
func TestPipelined(t *testing.T) {
	raw := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world" +
		"POST /4 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n" +
		"\r\nGET /5 HTTP/1.1\r\nHost: h\r\n\r\n"
	type result struct{ path, body, trailer string }
	wantRes := []result{{"/1", "", ""}, {"/2", "", ""}, {"/3", "hello world", ""}, {"/4", "abc", "1"}, {"/5", "", ""}}
	for _, size := range []int{4096, 5000} {
		// One reader over the whole buffer, and one fed a byte at a time.
		for _, trickle := range []bool{false, true} {
			var src io.Reader = strings.NewReader(raw)
			if trickle {
				src = &oneByteReader{s: raw}
			}
			rd := NewReader(src, size)
			var req message.Request
			for i, w := range wantRes {
				req.Reset()
				f, err := rd.ReadRequest(&req, Limits{})
				if err != nil {
					t.Fatalf("trickle=%v request %d: %v", trickle, i, err)
				}
				body, err := io.ReadAll(rd.BodyReader(f, &req.Trailer))
				if err != nil {
					t.Fatalf("request %d body: %v", i, err)
				}
				got := result{string(req.Path), string(body), req.Trailer.GetString("x-t")}
				if got != w {
					t.Fatalf("trickle=%v request %d = %+v, want %+v", trickle, i, got, w)
				}
			}
			req.Reset()
			if _, err := rd.ReadRequest(&req, Limits{}); err != io.EOF {
				t.Fatalf("after last request: %v, want io.EOF", err)
			}
		}
	}
}

// TestBodyNeverBecomesRequest checks that a request whose body was not read
// cannot make the body parse as the next request.
func TestBodyNeverBecomesRequest(t *testing.T) {
	raw := "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
	rd := NewReader(strings.NewReader(raw), 4096)
	var req message.Request
	if _, err := rd.ReadRequest(&req, Limits{}); err != nil {
		t.Fatal(err)
	}
	req.Reset()
	if _, err := rd.ReadRequest(&req, Limits{}); err != ErrBodyUnread {
		t.Fatalf("err = %v, want ErrBodyUnread", err)
	}
}

type oneByteReader struct{ s string }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(o.s) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = o.s[0]
	o.s = o.s[1:]
	return 1, nil
}

func TestReaderRawAccess(t *testing.T) {
	raw := "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframe-bytes"
	rd := NewReader(strings.NewReader(raw), 4096)
	var req message.Request
	f, err := rd.ReadRequest(&req, Limits{})
	if err != nil || !f.Upgrade {
		t.Fatalf("f=%+v err=%v", f, err)
	}
	if rd.Buffered() != len("frame-bytes") {
		t.Fatalf("Buffered = %d", rd.Buffered())
	}
	p, err := rd.Peek(5)
	if err != nil || string(p) != "frame" {
		t.Fatalf("Peek = %q, %v", p, err)
	}
	if _, err := rd.Peek(1 << 20); err != ErrBufferFull {
		t.Fatalf("big Peek err = %v", err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "frame-bytes" {
		t.Fatalf("Read = %q, %v", rest, err)
	}
}
