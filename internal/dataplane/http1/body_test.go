package http1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// readChunked decodes body as a chunked request body.
func readChunked(body string) (string, *message.Headers, error) {
	raw := "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
	rd := NewReader(strings.NewReader(raw), 4096)
	var req message.Request
	f, err := rd.ReadRequest(&req, Limits{})
	if err != nil {
		return "", nil, err
	}
	b, err := io.ReadAll(rd.BodyReader(f, &req.Trailer))
	return string(b), &req.Trailer, err
}

func TestChunkedBody(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		want     string
		trailers map[string]string
		status   int   // expected *Error status, 0 when none
		err      error // expected other error
	}{
		{name: "simple", body: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", want: "hello world"},
		{name: "upper-case hex and leading zeros", body: "000A\r\n0123456789\r\n0\r\n\r\n", want: "0123456789"},
		{name: "extensions", body: "5;name=value;flag\r\nhello\r\n5 ; q=\"quoted\"\r\nthere\r\n0;last\r\n\r\n", want: "hellothere"},
		{name: "trailers", body: "2\r\nok\r\n0\r\nX-Checksum: abc\r\nGrpc-Status:  0 \r\n\r\n", want: "ok",
			trailers: map[string]string{"x-checksum": "abc", "grpc-status": "0"}},
		{name: "forbidden trailers dropped", body: "0\r\nContent-Length: 5\r\nHost: evil\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n", want: "",
			trailers: map[string]string{"x-ok": "1", "content-length": "", "host": "", "transfer-encoding": ""}},
		{name: "non-hex size", body: "zz\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "0x prefix", body: "0x5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "empty size", body: "\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "extension without size", body: ";x\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "negative size", body: "-5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "size overflow", body: "10000000000000000\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "missing CRLF after data", body: "5\r\nhelloX\r\n0\r\n\r\n", status: 400},
		{name: "LF only after data", body: "5\r\nhello\n0\r\n\r\n", status: 400},
		{name: "bare LF size line", body: "5\nhello\r\n0\r\n\r\n", status: 400},
		{name: "bare CR in extension", body: "5;a\rb\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "NUL in extension", body: "5;a\x00\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "trailing space without extension", body: "5 \r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "space inside size", body: "5 5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "chunk line too long", body: "5;" + strings.Repeat("x", 5000) + "\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "obs-fold in trailer", body: "0\r\nX: a\r\n b\r\n\r\n", status: 400},
		{name: "invalid trailer name", body: "0\r\nX Y: a\r\n\r\n", status: 400},
		{name: "cut in data", body: "5\r\nhel", err: io.ErrUnexpectedEOF},
		{name: "cut before last chunk", body: "5\r\nhello\r\n", err: io.ErrUnexpectedEOF},
		{name: "cut in trailers", body: "0\r\nX: 1\r\n", err: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, tr, err := readChunked(tt.body)
			switch {
			case tt.status != 0:
				if s := statusOf(err); s != tt.status {
					t.Fatalf("err = %v, want status %d", err, tt.status)
				}
				return
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			case err != nil:
				t.Fatalf("unexpected error %v", err)
			}
			if got != tt.want {
				t.Fatalf("body = %q, want %q", got, tt.want)
			}
			for k, v := range tt.trailers {
				if g := tr.GetString(k); g != v {
					t.Errorf("trailer %s = %q, want %q", k, g, v)
				}
			}
		})
	}
}

// TestChunkOverheadLimited checks the defence against bodies made of tiny
// chunks with long extensions.
func TestChunkOverheadLimited(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 2000; i++ {
		b.WriteString("1;" + strings.Repeat("e", 100) + "\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	if _, _, err := readChunked(b.String()); statusOf(err) != 400 {
		t.Fatalf("err = %v, want 400", err)
	}
	// Many tiny chunks without extensions are fine (streamed events).
	b.Reset()
	for i := 0; i < 5000; i++ {
		b.WriteString("1\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	got, _, err := readChunked(b.String())
	if err != nil || len(got) != 5000 {
		t.Fatalf("len=%d err=%v", len(got), err)
	}
}

func TestContentLengthBody(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want string
		err  error
	}{
		{"exact", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "hello", nil},
		{"short", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello", "hello", io.ErrUnexpectedEOF},
		{"extra bytes stay buffered", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhello", "he", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := NewReader(strings.NewReader(tt.raw), 4096)
			var req message.Request
			f, err := rd.ReadRequest(&req, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rd.BodyReader(f, nil))
			if !errors.Is(err, tt.err) && !(tt.err == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if string(got) != tt.want {
				t.Fatalf("body = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLargeBodyReadsDirect checks bodies larger than the buffer, read with
// buffers larger and smaller than the Reader's.
func TestLargeBodyReadsDirect(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	head := "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 320000\r\n\r\n"
	for _, bufSize := range []int{100, 4096, 65536} {
		rd := NewReader(io.MultiReader(strings.NewReader(head), bytes.NewReader(body)), 4096)
		var req message.Request
		f, err := rd.ReadRequest(&req, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		br := rd.BodyReader(f, nil)
		var got []byte
		buf := make([]byte, bufSize)
		for {
			n, err := br.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("buf %d: body mismatch (len %d)", bufSize, len(got))
		}
	}
}
