package http1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func newRequest(method, authority, path string, cl int64, fields ...string) *message.Request {
	req := new(message.Request)
	req.SetMethod(method)
	req.SetAuthority(authority)
	req.SetPath(path)
	req.ContentLength = cl
	for i := 0; i+1 < len(fields); i += 2 {
		req.Header.Add(fields[i], fields[i+1])
	}
	return req
}

func TestAppendRequestHead(t *testing.T) {
	tests := []struct {
		name    string
		req     *message.Request
		chunked bool
		want    string
	}{
		{
			name: "GET without body",
			req:  newRequest("GET", "example.com", "/a?b", 0, "accept", "*/*"),
			want: "GET /a?b HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\n\r\n",
		},
		{
			name: "POST with length",
			req:  newRequest("POST", "h", "/", 5, "content-type", "text/plain"),
			want: "POST / HTTP/1.1\r\nhost: h\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n",
		},
		{
			name: "POST empty",
			req:  newRequest("POST", "h", "/", 0),
			want: "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n",
		},
		{
			name:    "chunked",
			req:     newRequest("PUT", "h", "/u", -1),
			chunked: true,
			want:    "PUT /u HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n",
		},
		{
			name: "framing fields from the message are not forwarded",
			req: newRequest("POST", "h", "/", 3, "content-length", "999", "transfer-encoding", "chunked",
				"host", "evil", "connection", "close", "keep-alive", "1", "proxy-connection", "x"),
			want: "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n",
		},
		{
			name: "upgrade and te trailers",
			req:  newRequest("GET", "h", "/ws", 0, "upgrade", "websocket", "te", "trailers"),
			want: "GET /ws HTTP/1.1\r\nhost: h\r\nconnection: upgrade, te\r\nupgrade: websocket\r\nte: trailers\r\n\r\n",
		},
		{
			name: "CONNECT uses authority as target",
			req:  newRequest("CONNECT", "db:5432", "", 0),
			want: "CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n",
		},
		{
			name: "empty path",
			req:  newRequest("GET", "h", "", 0),
			want: "GET / HTTP/1.1\r\nhost: h\r\n\r\n",
		},
		{
			name: "injection is neutralised",
			req: newRequest("GET", "h\r\nx: y", "/a b\r\nInjected: 1#frag\xff", 0,
				"x-val", "a\r\nInjected: 1", "bad name", "v", ":path", "/x", "", "empty"),
			want: "GET /a%20b%0D%0AInjected:%201%23frag%FF HTTP/1.1\r\nhost: h  x: y\r\nx-val: a  Injected: 1\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendRequestHead(nil, tt.req, tt.chunked))
			if got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestAppendResponseHead(t *testing.T) {
	resp := func(status int, cl int64, fields ...string) *message.Response {
		r := &message.Response{Status: status, ContentLength: cl}
		for i := 0; i+1 < len(fields); i += 2 {
			r.Header.Add(fields[i], fields[i+1])
		}
		return r
	}
	tests := []struct {
		name      string
		resp      *message.Response
		chunked   bool
		keepAlive bool
		want      string
	}{
		{"200 with length", resp(200, 5, "content-type", "text/plain"), false, true,
			"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"},
		{"chunked and close", resp(200, -1), true, false,
			"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"},
		{"unknown length forces close", resp(200, -1), false, true,
			"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"},
		{"204 has no framing", resp(204, 0, "content-length", "0"), false, true,
			"HTTP/1.1 204 No Content\r\n\r\n"},
		{"304 has no framing", resp(304, 0, "etag", `"x"`), false, true,
			"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"},
		{"101 upgrade", resp(101, 0, "upgrade", "websocket", "sec-websocket-accept", "k"), false, true,
			"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"},
		{"upgrade dropped on 200", resp(200, 0, "upgrade", "h2c"), false, true,
			"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"},
		{"unknown status", resp(299, 0), false, true, "HTTP/1.1 299 \r\ncontent-length: 0\r\n\r\n"},
		{"invalid status", resp(42, 0), false, true, "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"},
		{"response keeps host-like fields", resp(200, 0, "host", "h", "transfer-encoding", "gzip"), false, true,
			"HTTP/1.1 200 OK\r\nhost: h\r\ncontent-length: 0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendResponseHead(nil, tt.resp, tt.chunked, tt.keepAlive))
			if got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestRequestRoundTrip serialises requests and parses them back.
func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		req     *message.Request
		chunked bool
	}{
		{"GET", newRequest("GET", "a.example:8443", "/p/q?x=1&y=%20", 0, "accept", "*/*", "x-multi", "1", "x-multi", "2"), false},
		{"POST", newRequest("POST", "a", "/upload", 42, "content-type", "application/json"), false},
		{"chunked", newRequest("PATCH", "a", "/", -1, "x-a", "b"), true},
		{"upgrade", newRequest("GET", "a", "/ws", 0, "upgrade", "websocket", "sec-websocket-key", "abc"), false},
		{"OPTIONS", newRequest("OPTIONS", "a", "*", 0), false},
		{"CONNECT", newRequest("CONNECT", "a:443", "", 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := AppendRequestHead(nil, tt.req, tt.chunked)
			rd := NewReader(bytes.NewReader(wire), 4096)
			var got message.Request
			f, err := rd.ReadRequest(&got, Limits{})
			if err != nil {
				t.Fatalf("parse %q: %v", wire, err)
			}
			want(t, "method", string(got.Method), string(tt.req.Method))
			want(t, "path", string(got.Path), string(tt.req.Path))
			want(t, "authority", string(got.Authority), string(tt.req.Authority))
			if f.Chunked != tt.chunked || (!tt.chunked && got.ContentLength != tt.req.ContentLength) {
				t.Errorf("framing %+v, content-length %d", f, got.ContentLength)
			}
			for i := 0; i < tt.req.Header.Len(); i++ {
				fl := tt.req.Header.At(i)
				if got.Header.Count(string(fl.Name)) != tt.req.Header.Count(string(fl.Name)) {
					t.Errorf("field %s count differs", fl.Name)
				}
			}
			if rd.Buffered() != 0 {
				t.Errorf("%d bytes left over", rd.Buffered())
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	resp := &message.Response{Status: 404, ContentLength: 3}
	resp.Header.Add("content-type", "text/plain")
	resp.Header.Add("set-cookie", "a=1")
	resp.Header.Add("set-cookie", "b=2")
	wire := AppendResponseHead(nil, resp, false, true)
	wire = append(wire, "abc"...)
	rd := NewReader(bytes.NewReader(wire), 4096)
	var got message.Response
	f, err := rd.ReadResponse(&got, []byte("GET"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rd.BodyReader(f, nil))
	if err != nil || string(body) != "abc" || got.Status != 404 || got.Header.Count("set-cookie") != 2 || f.Close {
		t.Fatalf("got %d %q %+v err %v", got.Status, body, f, err)
	}
}

// TestChunkedWriterRoundTrip writes bodies of many sizes through a
// ChunkedWriter and decodes them with the Reader.
func TestChunkedWriterRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog. "), 4000)
	tests := []struct {
		name   string
		writes []int
	}{
		{"none", nil},
		{"empty write", []int{0}},
		{"small", []int{1, 10, 100}},
		{"buffer edge", []int{chunkBufSize - 8, chunkBufSize - 7, chunkBufSize - 6, chunkBufSize}},
		{"large", []int{chunkBufSize + 1, 2*chunkBufSize + 5, 100000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire bytes.Buffer
			var cw ChunkedWriter
			cw.Reset(&wire)
			var want []byte
			off := 0
			for _, n := range tt.writes {
				p := data[off : off+n]
				off += n
				m, err := cw.Write(p)
				if err != nil || m != n {
					t.Fatalf("Write(%d) = %d, %v", n, m, err)
				}
				want = append(want, p...)
			}
			var tr message.Headers
			tr.Add("grpc-status", "0")
			tr.Add("content-length", "1") // not allowed in trailers: dropped
			if err := cw.Close(&tr); err != nil {
				t.Fatal(err)
			}
			got, trailer, err := readChunked(wire.String())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got != string(want) {
				t.Fatalf("body mismatch: %d bytes, want %d", len(got), len(want))
			}
			if trailer.GetString("grpc-status") != "0" || trailer.Has("content-length") {
				t.Fatalf("trailers = %v", trailer)
			}
		})
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("broken pipe")
	}
	f.n--
	return len(p), nil
}

func TestChunkedWriterErrorsAreSticky(t *testing.T) {
	var cw ChunkedWriter
	cw.Reset(&failWriter{n: 1})
	if _, err := cw.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := cw.Write([]byte("b")); err == nil {
		t.Fatal("want error")
	}
	if err := cw.Close(nil); err == nil {
		t.Fatal("want sticky error")
	}
	cw.Reset(io.Discard)
	if _, err := cw.Write([]byte("c")); err != nil {
		t.Fatalf("after Reset: %v", err)
	}
}

func TestReasonPhrase(t *testing.T) {
	for code, phrase := range map[int]string{200: "OK", 404: "Not Found", 431: "Request Header Fields Too Large", 599: ""} {
		if got := ReasonPhrase(code); got != phrase {
			t.Errorf("ReasonPhrase(%d) = %q, want %q", code, got, phrase)
		}
	}
	if !strings.Contains((&Error{Status: 400, Reason: "bad"}).Error(), "400 bad") {
		t.Error("Error() format")
	}
}
