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
		name          string
		in            string
		head          bool
		wantStatus    int
		wantKeepAlive bool
		wantErr       error
		// wantRest is what must be left unread: the next response.
		wantRest string
	}{
		{
			name:       "content-length keep-alive",
			in:         "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT",
			wantStatus: 200, wantKeepAlive: true, wantRest: "NEXT",
		},
		{
			name:       "chunked with extension and trailer",
			in:         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\nNEXT",
			wantStatus: 200, wantKeepAlive: true, wantRest: "NEXT",
		},
		{
			name:       "chunked overrides content-length",
			in:         "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nNEXT",
			wantStatus: 200, wantKeepAlive: true, wantRest: "NEXT",
		},
		{
			name:       "head ignores content-length",
			in:         "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nNEXT",
			head:       true,
			wantStatus: 200, wantKeepAlive: true, wantRest: "NEXT",
		},
		{
			name:       "interim response skipped",
			in:         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nNEXT",
			wantStatus: 204, wantKeepAlive: true, wantRest: "NEXT",
		},
		{
			name:       "connection close",
			in:         "HTTP/1.1 503 Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
			wantStatus: 503,
		},
		{
			name:       "http10 body until close",
			in:         "HTTP/1.0 200 OK\r\n\r\nall of it",
			wantStatus: 200,
		},
		{
			name:       "bare LF",
			in:         "HTTP/1.1 404 Not Found\nContent-Length: 1\n\nxNEXT",
			wantStatus: 404, wantKeepAlive: true, wantRest: "NEXT",
		},
		{name: "eof before status", in: "", wantErr: io.EOF},
		{name: "short body", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", wantErr: io.ErrUnexpectedEOF},
		{name: "truncated head", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "bad version", in: "HTTP/2 200\r\n\r\n", wantErr: errMalformed},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: errMalformed},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: errMalformed},
		{name: "chunk without CRLF", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", wantErr: errMalformed},
		{name: "conflicting content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", wantErr: errMalformed},
		{name: "switching protocols", in: "HTTP/1.1 101 Switching Protocols\r\n\r\n", wantErr: errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			status, keepAlive, err := readResponse(br, tt.head)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if status != tt.wantStatus || keepAlive != tt.wantKeepAlive {
				t.Fatalf("got status %d keepAlive %v, want %d %v", status, keepAlive, tt.wantStatus, tt.wantKeepAlive)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.wantRest {
				t.Fatalf("left %q unread, want %q", rest, tt.wantRest)
			}
		})
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		br := bufio.NewReaderSize(strings.NewReader(string(data)), 256)
		for range 4 {
			status, keepAlive, err := readResponse(br, head)
			if err != nil {
				return
			}
			if status < 100 || status > 599 {
				t.Fatalf("status %d accepted from %q", status, data)
			}
			if !keepAlive {
				return
			}
		}
	})
}
