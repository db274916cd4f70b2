package http1

import (
	"io"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		raw     string
		status  int // response status wanted
		errCode int // *Error status wanted, 0 when none
		framing Framing
		body    string
		check   func(t *testing.T, resp *message.Response)
	}{
		{
			name: "content-length", method: "GET",
			raw:    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
			status: 200, framing: Framing{ContentLength: 5}, body: "hello",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "content-type", resp.Header.GetString("content-type"), "text/plain")
			},
		},
		{
			name: "chunked with trailers", method: "GET",
			raw:    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: done\r\n\r\n",
			status: 200, framing: Framing{ContentLength: -1, Chunked: true}, body: "abc",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "trailer x-t", resp.Trailer.GetString("x-t"), "done")
			},
		},
		{
			name: "100 continue skipped", method: "POST",
			raw:    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
			status: 201, framing: Framing{ContentLength: 2}, body: "ok",
		},
		{
			name: "several 1xx with fields skipped", method: "GET",
			raw: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, framing: Framing{NoBody: false},
			check: func(t *testing.T, resp *message.Response) {
				want(t, "link", resp.Header.GetString("link"), "")
			},
		},
		{
			name: "101 switching protocols", method: "GET",
			raw:    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\nraw",
			status: 101, framing: Framing{Upgrade: true, NoBody: true, Close: true},
			check: func(t *testing.T, resp *message.Response) {
				want(t, "upgrade", resp.Header.GetString("upgrade"), "websocket")
				want(t, "connection", resp.Header.GetString("connection"), "")
			},
		},
		{
			name: "upgrade dropped on 200", method: "GET",
			raw:    "HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
			status: 200, framing: Framing{},
			check: func(t *testing.T, resp *message.Response) {
				want(t, "upgrade", resp.Header.GetString("upgrade"), "")
			},
		},
		{
			name: "HEAD keeps advertised length", method: "HEAD",
			raw:    "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
			status: 200, framing: Framing{ContentLength: 1234, NoBody: true},
		},
		{
			name: "HEAD chunked", method: "HEAD",
			raw:    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, framing: Framing{NoBody: true},
		},
		{
			name: "204", method: "DELETE",
			raw:    "HTTP/1.1 204 No Content\r\n\r\n",
			status: 204, framing: Framing{NoBody: true},
		},
		{
			name: "304", method: "GET",
			raw:    "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
			status: 304, framing: Framing{NoBody: true},
		},
		{
			name: "CONNECT 200 is a tunnel", method: "CONNECT",
			raw:    "HTTP/1.1 200 Connection Established\r\n\r\n",
			status: 200, framing: Framing{NoBody: true, Close: true},
		},
		{
			name: "read until close", method: "GET",
			raw:    "HTTP/1.1 200 OK\r\n\r\nstream until EOF",
			status: 200, framing: Framing{ContentLength: -1, Close: true}, body: "stream until EOF",
		},
		{
			name: "HTTP/1.0 without keep-alive closes", method: "GET",
			raw:    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, framing: Framing{ContentLength: 2, Close: true}, body: "ok",
		},
		{
			name: "HTTP/1.0 keep-alive", method: "GET",
			raw:    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
			status: 200, framing: Framing{ContentLength: 2}, body: "ok",
		},
		{
			name: "connection close", method: "GET",
			raw:    "HTTP/1.1 200 OK\r\nConnection: close, X-H\r\nX-H: 1\r\nContent-Length: 2\r\n\r\nok",
			status: 200, framing: Framing{ContentLength: 2, Close: true}, body: "ok",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "x-h", resp.Header.GetString("x-h"), "")
			},
		},
		{
			name: "status line without reason", method: "GET",
			raw:    "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
			status: 200, framing: Framing{},
		},
		{name: "content-length and transfer-encoding", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", errCode: 502},
		{name: "conflicting content-length", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", errCode: 502},
		{name: "unknown transfer-coding", method: "GET", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", errCode: 502},
		{name: "transfer-encoding on 1.0", method: "GET", raw: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", errCode: 502},
		{name: "bad version", method: "GET", raw: "HTTP/2.0 200 OK\r\n\r\n", errCode: 502},
		{name: "bad status", method: "GET", raw: "HTTP/1.1 2x0 OK\r\n\r\n", errCode: 502},
		{name: "status below 100", method: "GET", raw: "HTTP/1.1 099 Odd\r\n\r\n", errCode: 502},
		{name: "missing space after status", method: "GET", raw: "HTTP/1.1 200OK\r\n\r\n", errCode: 502},
		{name: "control in reason", method: "GET", raw: "HTTP/1.1 200 O\x00K\r\n\r\n", errCode: 502},
		{name: "bare LF", method: "GET", raw: "HTTP/1.1 200 OK\nContent-Length: 0\n\n", errCode: 502},
		{name: "obs-fold", method: "GET", raw: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", errCode: 502},
		{name: "too many interim", method: "GET", raw: strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 20) + "HTTP/1.1 200 OK\r\n\r\n", errCode: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := NewReader(strings.NewReader(tt.raw), 4096)
			var resp message.Response
			f, err := rd.ReadResponse(&resp, []byte(tt.method), Limits{})
			if tt.errCode != 0 {
				if s := statusOf(err); s != tt.errCode || !f.Close {
					t.Fatalf("err = %v (framing %+v), want status %d", err, f, tt.errCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if resp.Status != tt.status {
				t.Errorf("status = %d, want %d", resp.Status, tt.status)
			}
			if f != tt.framing {
				t.Errorf("framing = %+v, want %+v", f, tt.framing)
			}
			if f.NoBody || f.Upgrade {
				if tt.check != nil {
					tt.check(t, &resp)
				}
				return
			}
			body, err := io.ReadAll(rd.BodyReader(f, &resp.Trailer))
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if string(body) != tt.body {
				t.Errorf("body = %q, want %q", body, tt.body)
			}
			if tt.check != nil {
				tt.check(t, &resp)
			}
		})
	}
}

func TestReadResponseEOF(t *testing.T) {
	rd := NewReader(strings.NewReader(""), 4096)
	var resp message.Response
	if _, err := rd.ReadResponse(&resp, []byte("GET"), Limits{}); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	rd.Reset(strings.NewReader("HTTP/1.1 100 Continue\r\n\r\n"))
	if _, err := rd.ReadResponse(&resp, []byte("GET"), Limits{}); err != io.ErrUnexpectedEOF {
		t.Fatalf("after interim: %v", err)
	}
}
