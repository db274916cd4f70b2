package h2

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// startServer serves h on a fresh 127.0.0.1 listener and stops (waiting for
// every connection) at the end of the test.
func startServer(t testing.TB, srv *Server, h Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(ctx, nc, h)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// testHandler answers /hello with a fixed body, echoes the body (and the
// trailers, plus one of its own) of anything else.
func testHandler(st *Stream) {
	req := st.Request()
	var resp message.Response
	resp.Status = 200
	if string(req.PathOnly()) == "/hello" || req.Body == nil {
		body := []byte("hello world, this is h2\n")
		resp.ContentLength = int64(len(body))
		resp.Header.Add("content-type", "text/plain")
		if err := st.WriteHeaders(&resp, false); err != nil {
			return
		}
		_ = st.WriteData(body, true)
		return
	}
	resp.ContentLength = -1
	resp.Header.Add("content-type", "application/octet-stream")
	if err := st.WriteHeaders(&resp, false); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			if werr := st.WriteData(buf[:n], false); werr != nil {
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	var tr message.Headers
	for i := 0; i < req.Trailer.Len(); i++ {
		f := req.Trailer.At(i)
		tr.AddBytes(f.Name, f.Value)
	}
	tr.Add("x-echo-done", "1")
	_ = st.WriteTrailers(&tr)
}

// h2cTransport is Go's HTTP/2 client speaking h2c with prior knowledge.
func h2cTransport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

var _ http.RoundTripper = (*http2.Transport)(nil)
