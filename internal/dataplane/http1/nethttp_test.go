package http1

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startNetHTTP serves h with a real net/http server on 127.0.0.1.
func startNetHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestClientAgainstNetHTTPServer writes requests with AppendRequestHead and
// ChunkedWriter to a net/http server over one keep-alive connection and
// parses its responses with ReadResponse.
func TestClientAgainstNetHTTPServer(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/fixed", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("X-Host", r.Host)
		_, _ = io.WriteString(w, "hello")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "part1-")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("X-Sum", "42")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("X-Transfer", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Trailer", r.Trailer.Get("X-Req-Trailer"))
		w.Header().Set("X-Connection", r.Header.Get("Connection"))
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	addr := startNetHTTP(t, mux)

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	// raw records what the server sent, to see the interim responses that
	// ReadResponse skips.
	var raw strings.Builder
	rd := NewReader(io.TeeReader(nc, &raw), 4096)
	var wbuf []byte
	var cw ChunkedWriter

	type step struct {
		name     string
		req      *message.Request
		body     string
		chunked  bool
		reqTrail string
		status   int
		wantBody string
		noBody   bool
		check    func(t *testing.T, resp *message.Response)
	}
	steps := []step{
		{name: "GET fixed", req: newRequest("GET", "svc.local", "/fixed", 0), status: 200, wantBody: "hello",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "x-host", resp.Header.GetString("x-host"), "svc.local")
			}},
		{name: "HEAD fixed", req: newRequest("HEAD", "svc.local", "/fixed", 0), status: 200, noBody: true,
			check: func(t *testing.T, resp *message.Response) {
				if resp.ContentLength != 5 {
					t.Errorf("HEAD content-length = %d", resp.ContentLength)
				}
			}},
		{name: "chunked response with trailer", req: newRequest("GET", "svc.local", "/stream", 0), status: 200, wantBody: "part1-part2",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "trailer", resp.Trailer.GetString("x-sum"), "42")
			}},
		{name: "chunked request with trailer", req: newRequest("POST", "svc.local", "/echo", -1, "trailer", "X-Req-Trailer"),
			body: strings.Repeat("chunk", 5000), chunked: true, reqTrail: "t1", status: 200, wantBody: strings.Repeat("chunk", 5000),
			check: func(t *testing.T, resp *message.Response) {
				want(t, "x-transfer", resp.Header.GetString("x-transfer"), "chunked")
				want(t, "x-trailer", resp.Header.GetString("x-trailer"), "t1")
			}},
		{name: "content-length request with expect", req: newRequest("PUT", "svc.local", "/echo", 4, "expect", "100-continue"),
			body: "data", status: 200, wantBody: "data",
			check: func(t *testing.T, resp *message.Response) {
				if !strings.Contains(raw.String(), "HTTP/1.1 100 Continue\r\n") {
					t.Errorf("server sent no 100 Continue; the 1xx path was not exercised")
				}
			}},
		{name: "upgrade request header", req: newRequest("POST", "svc.local", "/echo", 0, "upgrade", "foo"), status: 200, wantBody: "",
			check: func(t *testing.T, resp *message.Response) {
				want(t, "x-connection", resp.Header.GetString("x-connection"), "upgrade")
			}},
		{name: "204", req: newRequest("DELETE", "svc.local", "/empty", 0), status: 204, noBody: true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			wbuf = AppendRequestHead(wbuf[:0], s.req, s.chunked)
			if !s.chunked {
				wbuf = append(wbuf, s.body...)
			}
			if _, err := nc.Write(wbuf); err != nil {
				t.Fatal(err)
			}
			if s.chunked {
				cw.Reset(nc)
				for i := 0; i < len(s.body); i += 7000 {
					if _, err := cw.Write([]byte(s.body[i:min(i+7000, len(s.body))])); err != nil {
						t.Fatal(err)
					}
				}
				var tr message.Headers
				tr.Add("x-req-trailer", s.reqTrail)
				if err := cw.Close(&tr); err != nil {
					t.Fatal(err)
				}
			}
			var resp message.Response
			f, err := rd.ReadResponse(&resp, s.req.Method, Limits{})
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if resp.Status != s.status || f.NoBody != s.noBody || f.Close {
				t.Fatalf("status %d framing %+v", resp.Status, f)
			}
			body, err := io.ReadAll(rd.BodyReader(f, &resp.Trailer))
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if string(body) != s.wantBody {
				t.Fatalf("body = %q, want %q", body, s.wantBody)
			}
			if s.check != nil {
				s.check(t, &resp)
			}
		})
	}
}

// TestServerForNetHTTPClient serves responses written with
// AppendResponseHead and ChunkedWriter to a net/http client, and parses its
// requests with ReadRequest.
func TestServerForNetHTTPClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				serveTestConn(nc)
			}()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()

	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "http://" + ln.Addr().String()

	reused := 0
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused++
		}
	}}
	tests := []struct {
		name     string
		method   string
		path     string
		body     io.Reader
		wantBody string
		check    func(t *testing.T, resp *http.Response)
	}{
		{name: "length", method: "GET", path: "/len", wantBody: "hello",
			check: func(t *testing.T, resp *http.Response) {
				if resp.ContentLength != 5 || resp.Header.Get("X-Method") != "GET" {
					t.Errorf("content-length %d, x-method %q", resp.ContentLength, resp.Header.Get("X-Method"))
				}
			}},
		{name: "chunked with trailers", method: "GET", path: "/chunked", wantBody: "first second",
			check: func(t *testing.T, resp *http.Response) {
				if len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Trailer") != "yes" {
					t.Errorf("transfer-encoding %v trailer %v", resp.TransferEncoding, resp.Trailer)
				}
			}},
		{name: "HEAD", method: "HEAD", path: "/len", wantBody: "",
			check: func(t *testing.T, resp *http.Response) {
				if resp.ContentLength != 5 {
					t.Errorf("HEAD content-length %d", resp.ContentLength)
				}
			}},
		{name: "POST length", method: "POST", path: "/echo", body: strings.NewReader("posted"), wantBody: "posted"},
		{name: "POST chunked", method: "POST", path: "/echo", body: io.MultiReader(strings.NewReader("stream"), strings.NewReader("ed")), wantBody: "streamed"},
		{name: "length again", method: "GET", path: "/len", wantBody: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tt.wantBody {
				t.Fatalf("body = %q, want %q", body, tt.wantBody)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
		})
	}
	if reused < len(tests)-1 {
		t.Errorf("connection reused %d times, want %d", reused, len(tests)-1)
	}
}

// serveTestConn is a minimal server on top of the codec.
func serveTestConn(nc net.Conn) {
	rd := NewReader(nc, 4096)
	var req message.Request
	var resp message.Response
	var wbuf []byte
	var cw ChunkedWriter
	for {
		req.Reset()
		resp.Reset()
		f, err := rd.ReadRequest(&req, Limits{})
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				resp.Status = pe.Status
				_, _ = nc.Write(AppendResponseHead(wbuf[:0], &resp, false, false))
			}
			return
		}
		body, err := io.ReadAll(rd.BodyReader(f, &req.Trailer))
		if err != nil {
			return
		}
		resp.Header.Add("x-method", string(req.Method))
		switch string(req.Path) {
		case "/len":
			resp.Status, resp.ContentLength = 200, 5
			wbuf = AppendResponseHead(wbuf[:0], &resp, false, !f.Close)
			if string(req.Method) != "HEAD" {
				wbuf = append(wbuf, "hello"...)
			}
			_, err = nc.Write(wbuf)
		case "/chunked":
			resp.Status, resp.ContentLength = 200, -1
			resp.Header.Add("trailer", "X-Trailer")
			if _, err = nc.Write(AppendResponseHead(wbuf[:0], &resp, true, !f.Close)); err != nil {
				return
			}
			cw.Reset(nc)
			_, _ = cw.Write([]byte("first "))
			_, _ = cw.Write([]byte("second"))
			var tr message.Headers
			tr.Add("x-trailer", "yes")
			err = cw.Close(&tr)
		case "/echo":
			resp.Status, resp.ContentLength = 200, int64(len(body))
			wbuf = append(AppendResponseHead(wbuf[:0], &resp, false, !f.Close), body...)
			_, err = nc.Write(wbuf)
		default:
			resp.Status = 404
			_, err = nc.Write(AppendResponseHead(wbuf[:0], &resp, false, !f.Close))
		}
		if err != nil || f.Close {
			return
		}
	}
}

// TestSmugglingAttemptClosesConnection sends a request with both
// Content-Length and Transfer-Encoding followed by a smuggled request over a
// real socket: the codec answers 400 once and the connection ends, so the
// smuggled request is never parsed.
func TestSmugglingAttemptClosesConnection(t *testing.T) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		serveTestConn(server)
	}()
	defer func() {
		client.Close()
		<-done
	}()
	payload := "POST /len HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /len HTTP/1.1\r\nHost: h\r\n\r\n"
	go func() { _, _ = client.Write([]byte(payload)) }()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 400 ") || strings.Count(string(got), "HTTP/1.1") != 1 {
		t.Fatalf("response = %q, want a single 400", got)
	}
}
