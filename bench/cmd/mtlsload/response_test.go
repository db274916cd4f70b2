package main

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		status    int
		keepAlive bool
		err       error // nil: success; errMalformed or io.ErrUnexpectedEOF
		rest      string
	}{
		{name: "keep-alive", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT", status: 200, keepAlive: true, rest: "NEXT"},
		{name: "bare LF", in: "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", status: 200, keepAlive: true},
		{name: "connection close", in: "HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", status: 503},
		{name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", status: 200, keepAlive: true},
		{name: "HTTP/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", status: 200},
		{name: "204 without length", in: "HTTP/1.1 204 No Content\r\n\r\nNEXT", status: 204, keepAlive: true, rest: "NEXT"},
		{name: "repeated equal length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx", status: 200, keepAlive: true},
		{name: "no length", in: "HTTP/1.1 200 OK\r\n\r\nbody", err: errMalformed},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", err: errMalformed},
		{name: "conflicting length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", err: errMalformed},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", err: errMalformed},
		{name: "huge length", in: "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999\r\n\r\n", err: errMalformed},
		{name: "bad version", in: "HTTP/2 200 OK\r\n\r\n", err: errMalformed},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\n\r\n", err: errMalformed},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", err: errMalformed},
		{name: "truncated head", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", err: io.ErrUnexpectedEOF},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", err: io.ErrUnexpectedEOF},
		{name: "too many headers", in: "HTTP/1.1 200 OK\r\n" + strings.Repeat("a: b\r\n", maxHeaderLines+1) + "\r\n", err: errMalformed},
		{name: "line too long", in: "HTTP/1.1 200 OK\r\nx: " + strings.Repeat("a", 5000) + "\r\n\r\n", err: errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 4096)
			status, keepAlive, err := readResponse(br)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if status != tt.status || keepAlive != tt.keepAlive {
				t.Errorf("got status %d keepAlive %v, want %d %v", status, keepAlive, tt.status, tt.keepAlive)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Errorf("left %q unread, want %q", rest, tt.rest)
			}
		})
	}
}

// FuzzReadResponse: any input gives a response or an error, never a panic
// or a read past what the head announced. Seeds: testdata/fuzz.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(data)), 4096)
		for range 4 {
			status, _, err := readResponse(br)
			if err != nil {
				return
			}
			if status < 100 || status > 599 {
				t.Fatalf("status %d accepted", status)
			}
		}
	})
}
