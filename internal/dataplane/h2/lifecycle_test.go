package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// TestServerSeesClientReset: a client that cancels mid-request resets the
// stream and the handler's context ends.
func TestServerSeesClientReset(t *testing.T) {
	done := make(chan error, 1)
	h := func(st *Stream) {
		var resp message.Response
		resp.Status = 200
		_ = st.WriteHeaders(&resp, false)
		select {
		case <-st.Context().Done():
			done <- st.Context().Err()
		case <-time.After(10 * time.Second):
			done <- errors.New("handler context not cancelled")
		}
	}
	addr := startServer(t, &Server{}, h)
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	res.Body.Close()
	if err := <-done; !errors.Is(err, ErrReset) && err == nil {
		t.Fatalf("handler saw %v", err)
	}
}

func TestClientSeesServerReset(t *testing.T) {
	tests := []struct {
		name string
		code http2.ErrCode
		head bool // reset after sending the response head
		want error
	}{
		{name: "refused before head", code: http2.ErrCodeRefusedStream, want: ErrRefused},
		{name: "cancel before head", code: http2.ErrCodeCancel, want: ErrReset},
		{name: "internal after head", code: http2.ErrCodeInternal, head: true, want: ErrReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &Server{}, func(st *Stream) {
				if tt.head {
					var resp message.Response
					resp.Status = 200
					_ = st.WriteHeaders(&resp, false)
					_ = st.WriteData([]byte("partial"), false)
				}
				st.Reset(tt.code)
			})
			cl := &Client{}
			defer cl.Close()
			_, err := doRequest(t, cl, addr, "GET", "/", nil, 0, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDrain: GOAWAY lets the in-flight stream finish, and the client moves
// new requests to a fresh connection.
func TestDrain(t *testing.T) {
	srv := &Server{}
	release := make(chan struct{})
	var conns atomic.Int32
	addr := startServer(t, srv, func(st *Stream) {
		if string(st.Request().Path) == "/slow" {
			<-release
		}
		testHandler(st)
	})
	cl := &Client{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		conns.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	defer cl.Close()
	if _, err := doRequest(t, cl, addr, "GET", "/hello", nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		res, err := doRequest(t, cl, addr, "GET", "/slow", nil, 0, nil)
		if err == nil && res.status != 200 {
			err = errors.New("bad status")
		}
		slow <- err
	}()
	waitFor(t, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for c := range srv.conns {
			c.mu.Lock()
			n := c.active
			c.mu.Unlock()
			if n == 1 {
				return true
			}
		}
		return false
	})
	srv.mu.Lock()
	srv.draining = false // drain the existing connection only
	srv.mu.Unlock()
	for c := range snapshotConns(srv) {
		c.drain()
	}
	// The client must notice GOAWAY and dial again for new requests.
	waitFor(t, func() bool {
		p := cl.pool(addr)
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.conns) == 0
	})
	if _, err := doRequest(t, cl, addr, "GET", "/hello", nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("in-flight stream: %v", err)
	}
}

func snapshotConns(srv *Server) map[*serverConn]struct{} {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	m := make(map[*serverConn]struct{}, len(srv.conns))
	for c := range srv.conns {
		m[c] = struct{}{}
	}
	return m
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPeerDiesMidStream: the upstream connection drops while the response
// body streams; the reader sees ErrReset, not a clean EOF.
func TestPeerDiesMidStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		// Half an HTTP/2 server: settings, a response head, some data, gone.
		fr := http2.NewFramer(nc, nc)
		buf := make([]byte, len(http2core.ClientPreface))
		_, _ = io.ReadFull(nc, buf)
		_ = fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if hf, ok := f.(*http2.HeadersFrame); ok {
				var hb []byte
				enc := newHpackEncoder()
				hb = enc.fieldString(hb, ":status", []byte("200"))
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: hb, EndHeaders: true})
				_ = fr.WriteData(hf.StreamID, false, []byte(strings.Repeat("d", 100)))
				nc.Close()
				return
			}
		}
	}()
	cl := &Client{}
	defer cl.Close()
	_, err = doRequest(t, cl, ln.Addr().String(), "GET", "/", nil, 0, nil)
	if !errors.Is(err, ErrReset) {
		t.Fatalf("err = %v, want ErrReset", err)
	}
}

// TestHeadTimeout: a server that never answers makes RoundTrip fail with
// ErrTimeout at the head deadline, and the stream is reset.
func TestHeadTimeout(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	addr := startServer(t, &Server{}, func(st *Stream) {
		select {
		case <-block:
		case <-st.Context().Done():
		}
	})
	cl := &Client{}
	defer cl.Close()
	var req message.Request
	var resp message.Response
	req.SetMethod("GET")
	req.SetScheme("http")
	req.SetAuthority("x")
	req.SetPath("/")
	start := time.Now()
	err := cl.RoundTrip(context.Background(), addr, &req, &resp, Deadlines{Head: time.Now().Add(100 * time.Millisecond)})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

// TestEarlyResponse: the server answers without reading the upload and
// ends the request with RST_STREAM(NO_ERROR) (RFC 9113 8.1), as gRPC
// servers do; the client still reads the whole response, and resp.Close
// returns although the body reader never ends.
func TestEarlyResponse(t *testing.T) {
	addr := startServer(t, &Server{}, func(st *Stream) {
		var resp message.Response
		resp.Status = 200
		resp.ContentLength = 4
		if st.WriteHeaders(&resp, false) == nil {
			_ = st.WriteData([]byte("done"), true)
		}
	})
	cl := &Client{}
	defer cl.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("first chunk")) }()
	res, err := doRequest(t, cl, addr, "POST", "/upload", pr, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.body) != "done" {
		t.Fatalf("body %q", res.body)
	}
}
