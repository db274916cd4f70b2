package http1

import (
	"io"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// TestSteadyStateAllocatesNothing guards the package's main promise: once a
// connection's Reader, message and buffers are warm, a keep-alive exchange
// allocates nothing.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	const post = "POST /submit HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
	rd := NewReader(&loopReader{msg: []byte(benchRequest + post)}, 16<<10)
	var req message.Request
	var resp message.Response
	resp.Status = 200
	resp.ContentLength = 5
	resp.Header.Add("content-type", "text/plain")
	var cw ChunkedWriter
	cw.Reset(io.Discard)
	dst := make([]byte, 0, 4096)
	buf := make([]byte, 1024)
	exchange := func() {
		for i := 0; i < 2; i++ {
			req.Reset()
			f, err := rd.ReadRequest(&req, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			body := rd.BodyReader(f, &req.Trailer)
			for {
				if _, err := body.Read(buf); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			dst = AppendRequestHead(dst[:0], &req, f.Chunked)
			dst = AppendResponseHead(dst[:0], &resp, false, true)
			_, _ = cw.Write(buf[:100])
			_ = cw.Close(&req.Trailer)
		}
	}
	exchange()
	if n := testing.AllocsPerRun(200, exchange); n != 0 {
		t.Fatalf("%v allocations per exchange, want 0", n)
	}
}
