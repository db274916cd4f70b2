package h2

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

var benchBody = make([]byte, 128)

// respPool keeps test handlers' responses out of the allocation counts:
// the connection manager pools its own the same way.
var respPool = sync.Pool{New: func() any { return new(message.Response) }}

func smallHandler(st *Stream) {
	resp := respPool.Get().(*message.Response)
	defer respPool.Put(resp)
	resp.Reset()
	resp.Status = 200
	resp.ContentLength = int64(len(benchBody))
	resp.Header.Add("content-type", "application/octet-stream")
	if st.WriteHeaders(resp, false) == nil {
		_ = st.WriteData(benchBody, true)
	}
}

func benchRoundTrips(b *testing.B, cl *Client, addr string) {
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var req message.Request
		var resp message.Response
		buf := make([]byte, 512)
		for pb.Next() {
			req.Reset()
			resp.Reset()
			req.SetMethod("GET")
			req.SetScheme("http")
			req.SetAuthority("bench.local")
			req.SetPath("/")
			req.Header.Add("user-agent", "bench")
			if err := cl.RoundTrip(context.Background(), addr, &req, &resp, Deadlines{}); err != nil {
				b.Error(err)
				return
			}
			for resp.Body != nil {
				if _, err := resp.Body.Read(buf); err != nil {
					if err != io.EOF {
						b.Error(err)
					}
					break
				}
			}
			resp.Close()
		}
	})
}

// BenchmarkClientServer: Client -> Server on loopback, 128-byte responses.
func BenchmarkClientServer(b *testing.B) {
	addr := startServer(b, &Server{}, smallHandler)
	cl := &Client{}
	defer cl.Close()
	benchRoundTrips(b, cl, addr)
}

// BenchmarkProxy: Client -> Server+proxyHandler -> Client -> Server, the
// h2c->h2c proxy path; allocations counted over all four ends.
func BenchmarkProxy(b *testing.B) {
	backend := startServer(b, &Server{}, smallHandler)
	up := &Client{}
	defer up.Close()
	proxy := startServer(b, &Server{}, proxyHandler(up, backend))
	cl := &Client{}
	defer cl.Close()
	benchRoundTrips(b, cl, proxy)
}
