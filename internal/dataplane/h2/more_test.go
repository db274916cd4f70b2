package h2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// TestClientTLS: h2 over TLS with ALPN, Client to Server.
func TestClientTLS(t *testing.T) {
	cert := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); ln.Close(); wg.Wait() }()
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
				tc := nc.(*tls.Conn)
				if err := tc.HandshakeContext(ctx); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
					nc.Close()
					return
				}
				srv.ServeConn(ctx, tc, testHandler)
			}()
		}
	}()
	cl := &Client{TLS: &tls.Config{InsecureSkipVerify: true}}
	defer cl.Close()
	res, err := doRequest(t, cl, ln.Addr().String(), "POST", "/echo", strings.NewReader("over tls"), 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.body) != "over tls" {
		t.Fatalf("body %q", res.body)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSmallWindows moves a large body both ways through windows of the
// RFC minimum so that every WINDOW_UPDATE path is taken many times.
func TestSmallWindows(t *testing.T) {
	addr := startServer(t, &Server{StreamWindow: 65535, ConnWindow: 65535}, testHandler)
	cl := &Client{StreamWindow: 65535, ConnWindow: 65535}
	defer cl.Close()
	body := bytes.Repeat([]byte("0123456789abcdef"), 128<<10) // 2 MiB
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := doRequest(t, cl, addr, "POST", "/echo", bytes.NewReader(body), int64(len(body)), nil)
			if err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(res.body, body) {
				t.Errorf("echo mismatch: %d bytes", len(res.body))
			}
		}()
	}
	wg.Wait()
}

// TestLargeHeaders: a head larger than one frame goes out as HEADERS plus
// CONTINUATION frames and is reassembled by both servers; a head over the
// server's limit gets 431.
func TestLargeHeaders(t *testing.T) {
	servers := []struct {
		name string
		addr string
	}{
		{"own server", startServer(t, &Server{MaxHeaderListSize: 128 << 10}, func(st *Stream) {
			var resp message.Response
			resp.Status = 200
			v, _ := st.Request().Header.Get("x-big")
			resp.Header.AddBytes([]byte("x-big-len"), []byte(strings.Repeat("l", len(v)/1000)))
			_ = st.WriteHeaders(&resp, true)
		})},
	}
	big := strings.Repeat("v", 40<<10)
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			cl := &Client{}
			defer cl.Close()
			var req message.Request
			var resp message.Response
			req.SetMethod("GET")
			req.SetScheme("http")
			req.SetAuthority("x")
			req.SetPath("/")
			req.Header.Add("x-big", big)
			if err := cl.RoundTrip(context.Background(), srv.addr, &req, &resp, Deadlines{}); err != nil {
				t.Fatal(err)
			}
			defer resp.Close()
			if v, _ := resp.Header.Get("x-big-len"); resp.Status != 200 || len(v) != 40 {
				t.Fatalf("status %d, x-big-len %d", resp.Status, len(v))
			}
		})
	}
	t.Run("over the limit", func(t *testing.T) {
		addr := startServer(t, &Server{MaxHeaderListSize: 16 << 10}, testHandler)
		cl := &Client{}
		defer cl.Close()
		var req message.Request
		var resp message.Response
		req.SetMethod("GET")
		req.SetScheme("http")
		req.SetAuthority("x")
		req.SetPath("/")
		req.Header.Add("x-big", big)
		if err := cl.RoundTrip(context.Background(), addr, &req, &resp, Deadlines{}); err != nil {
			t.Fatal(err)
		}
		resp.Close()
		if resp.Status != 431 {
			t.Fatalf("status %d, want 431", resp.Status)
		}
	})
}

// abortableBody blocks in Read until Abort, like a downstream body whose
// client is slow; it records whether a Read happened after Abort.
type abortableBody struct {
	mu       sync.Mutex
	aborted  chan struct{}
	blocked  chan struct{} // closed once a Read is blocked
	bonce    sync.Once
	once     sync.Once
	lateRead bool
	first    bool
}

func (b *abortableBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.first {
		b.first = true
		b.mu.Unlock()
		return copy(p, "x"), nil
	}
	select {
	case <-b.aborted:
		b.lateRead = true
	default:
	}
	b.mu.Unlock()
	b.bonce.Do(func() { close(b.blocked) })
	<-b.aborted
	return 0, errors.New("aborted")
}

func (b *abortableBody) Abort() { b.once.Do(func() { close(b.aborted) }) }

// TestBodyFence: after resp.Close returns, the transport no longer reads
// the request body (a blocked Read was interrupted through Abort).
func TestBodyFence(t *testing.T) {
	addr := startServer(t, &Server{}, func(st *Stream) {
		var resp message.Response
		resp.Status = 200
		_ = st.WriteHeaders(&resp, false)
		<-st.Context().Done()
	})
	cl := &Client{}
	defer cl.Close()
	body := &abortableBody{aborted: make(chan struct{}), blocked: make(chan struct{})}
	var req message.Request
	var resp message.Response
	req.SetMethod("POST")
	req.SetScheme("http")
	req.SetAuthority("x")
	req.SetPath("/")
	req.ContentLength = -1
	req.Body = body
	if err := cl.RoundTrip(context.Background(), addr, &req, &resp, Deadlines{}); err != nil {
		t.Fatal(err)
	}
	<-body.blocked // the transport is inside a Read that only Abort ends
	done := make(chan struct{})
	go func() {
		resp.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("resp.Close blocked on the request body")
	}
	select {
	case <-body.aborted:
	default:
		t.Fatal("the blocked body read was not aborted")
	}
	body.mu.Lock()
	late := body.lateRead
	body.mu.Unlock()
	if late {
		t.Fatal("body read after Abort")
	}
}
