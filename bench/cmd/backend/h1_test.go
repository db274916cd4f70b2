package main

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadRequestHead(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    requestHead
		wantErr error
	}{
		{
			name: "http11 keep-alive",
			in:   "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			want: requestHead{keepAlive: true},
		},
		{
			name: "http11 connection close",
			in:   "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n",
			want: requestHead{},
		},
		{
			name: "http10 default close",
			in:   "GET / HTTP/1.0\r\n\r\n",
			want: requestHead{},
		},
		{
			name: "http10 keep-alive token in list",
			in:   "GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n",
			want: requestHead{keepAlive: true},
		},
		{
			name: "head with body length",
			in:   "HEAD /x HTTP/1.1\r\ncontent-length:  12 \r\n\r\n",
			want: requestHead{keepAlive: true, head: true, contentLength: 12},
		},
		{
			name: "stats target",
			in:   "GET /_backend/stats HTTP/1.1\r\n\r\n",
			want: requestHead{keepAlive: true, stats: true},
		},
		{
			name: "bare LF and leading empty line",
			in:   "\nGET / HTTP/1.1\nHost: a\n\n",
			want: requestHead{keepAlive: true},
		},
		{
			name: "repeated equal content-length",
			in:   "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
			want: requestHead{keepAlive: true, contentLength: 3},
		},
		{
			name: "chunked",
			in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
			want: requestHead{keepAlive: true, chunked: true},
		},
		{name: "eof before request", in: "", wantErr: io.EOF},
		{name: "eof inside head", in: "GET / HTTP/1.1\r\nHost: a\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "partial line", in: "GET / HTT", wantErr: io.ErrUnexpectedEOF},
		{name: "bad version", in: "GET / HTTP/2.0\r\n\r\n", wantErr: errMalformed},
		{name: "missing target", in: "GET HTTP/1.1\r\n\r\n", wantErr: errMalformed},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", wantErr: errMalformed},
		{name: "negative content-length", in: "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", wantErr: errMalformed},
		{name: "conflicting content-length", in: "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", wantErr: errMalformed},
		{name: "cl and te", in: "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errMalformed},
		{name: "line too long", in: "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\n\r\n", wantErr: errTooLarge},
		{name: "too many headers", in: "GET / HTTP/1.1\r\n" + strings.Repeat("A: b\r\n", maxHeaderLines) + "\r\n", wantErr: errTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got requestHead
			err := readRequestHead(bufio.NewReaderSize(strings.NewReader(tt.in), 4096), &got)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadRequestHeadPipelined(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n"))
	var req requestHead
	for i, wantKeepAlive := range []bool{true, false} {
		if err := readRequestHead(br, &req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if req.keepAlive != wantKeepAlive {
			t.Fatalf("request %d: keepAlive = %v, want %v", i, req.keepAlive, wantKeepAlive)
		}
	}
	if err := readRequestHead(br, &req); !errors.Is(err, io.EOF) {
		t.Fatalf("after last request: err = %v, want io.EOF", err)
	}
}

func FuzzReadRequestHead(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(data)), 512)
		var req requestHead
		for range 4 {
			if err := readRequestHead(br, &req); err != nil {
				return
			}
			if req.contentLength < 0 {
				t.Fatalf("negative content length %d for %q", req.contentLength, data)
			}
			if req.chunked {
				return
			}
			if _, err := br.Discard(int(req.contentLength)); err != nil {
				return
			}
		}
	})
}
