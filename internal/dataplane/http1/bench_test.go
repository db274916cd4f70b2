package http1

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// loopReader serves msg over and over, like a keep-alive peer sending the
// same message back to back.
type loopReader struct {
	msg []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.msg[l.off:])
		n += c
		l.off = (l.off + c) % len(l.msg)
	}
	return n, nil
}

// benchRequest is a typical browser-ish GET with 8 fields, about 400 bytes.
const benchRequest = "GET /api/v1/users/12345/profile?fields=name,email&lang=en HTTP/1.1\r\n" +
	"Host: api.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: application/json, text/plain, */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.sig\r\n" +
	"X-Request-Id: 7f3c9a2e-1b4d-4c8e-9f0a-2d6e8b1c3a5f\r\n" +
	"Cookie: session=abc123; theme=dark\r\n" +
	"\r\n"

func BenchmarkReadRequest(b *testing.B) {
	rd := NewReader(&loopReader{msg: []byte(benchRequest)}, 16<<10)
	var req message.Request
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		req.Reset()
		f, err := rd.ReadRequest(&req, Limits{})
		if err != nil || !f.NoBody {
			b.Fatalf("f=%+v err=%v", f, err)
		}
	}
}

const benchResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: application/json\r\n" +
	"Content-Length: 64\r\n" +
	"Date: Mon, 01 Sep 2025 10:00:00 GMT\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Request-Id: 7f3c9a2e-1b4d-4c8e-9f0a-2d6e8b1c3a5f\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"\r\n" +
	`{"id":12345,"name":"Ada Lovelace","email":"ada@example.com"}    `

func BenchmarkReadResponse(b *testing.B) {
	rd := NewReader(&loopReader{msg: []byte(benchResponse)}, 16<<10)
	var resp message.Response
	var buf [256]byte
	method := []byte("GET")
	b.SetBytes(int64(len(benchResponse)))
	b.ReportAllocs()
	for b.Loop() {
		resp.Reset()
		f, err := rd.ReadResponse(&resp, method, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		body := rd.BodyReader(f, &resp.Trailer)
		for {
			_, err := body.Read(buf[:])
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkAppendResponseHead(b *testing.B) {
	resp := &message.Response{Status: 200, ContentLength: 1234}
	for _, kv := range [][2]string{
		{"content-type", "application/json"}, {"date", "Mon, 01 Sep 2025 10:00:00 GMT"},
		{"cache-control", "no-cache"}, {"x-request-id", "7f3c9a2e-1b4d-4c8e-9f0a-2d6e8b1c3a5f"},
		{"vary", "Accept-Encoding"}, {"server", "omnirelay"},
	} {
		resp.Header.Add(kv[0], kv[1])
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendResponseHead(dst[:0], resp, false, true)
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkAppendRequestHead(b *testing.B) {
	rd := NewReader(strings.NewReader(benchRequest), 4096)
	var req message.Request
	if _, err := rd.ReadRequest(&req, Limits{}); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendRequestHead(dst[:0], &req, false)
	}
	b.SetBytes(int64(len(dst)))
}

// BenchmarkChunkedBody decodes and encodes a 64 KiB body in 4 KiB chunks
// with a trailer.
func BenchmarkChunkedBody(b *testing.B) {
	payload := []byte(strings.Repeat("x", 4096))
	var wire strings.Builder
	var cw ChunkedWriter
	cw.Reset(&wire)
	for i := 0; i < 16; i++ {
		_, _ = cw.Write(payload)
	}
	var tr message.Headers
	tr.Add("grpc-status", "0")
	_ = cw.Close(&tr)
	body := wire.String()

	b.Run("decode", func(b *testing.B) {
		rd := NewReader(&loopReader{msg: []byte(body)}, 16<<10)
		var trailer message.Headers
		buf := make([]byte, 32<<10)
		b.SetBytes(16 * 4096)
		b.ReportAllocs()
		for b.Loop() {
			trailer.Reset()
			br := rd.BodyReader(Framing{Chunked: true, ContentLength: -1}, &trailer)
			for {
				_, err := br.Read(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		var cw ChunkedWriter
		b.SetBytes(16 * 4096)
		b.ReportAllocs()
		for b.Loop() {
			cw.Reset(io.Discard)
			for i := 0; i < 16; i++ {
				_, _ = cw.Write(payload)
			}
			_ = cw.Close(&tr)
		}
	})
}

// BenchmarkNetHTTPReadRequest is the reference point: the same request
// parsed by net/http.
func BenchmarkNetHTTPReadRequest(b *testing.B) {
	br := bufio.NewReaderSize(&loopReader{msg: []byte(benchRequest)}, 16<<10)
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}
