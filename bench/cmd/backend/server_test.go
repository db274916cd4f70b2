package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer serves impl on a fresh 127.0.0.1 port and stops it, checking
// that Serve returns, when the test ends.
func startServer(t testing.TB, impl string, bodySize int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	serve := newServer(bodySize, log).Serve
	if impl == "nethttp" {
		serve = newNetHTTPServer(bodySize, log).Serve
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return ln.Addr().String()
}

func TestServeProtocols(t *testing.T) {
	for _, impl := range []string{"fast", "nethttp"} {
		for _, proto := range []string{"http1", "h2c"} {
			t.Run(impl+"/"+proto, func(t *testing.T) {
				addr := startServer(t, impl, 128)
				protos := new(http.Protocols)
				if proto == "h2c" {
					protos.SetUnencryptedHTTP2(true)
				} else {
					protos.SetHTTP1(true)
				}
				tr := &http.Transport{Protocols: protos}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
				wantMajor := map[string]int{"http1": 1, "h2c": 2}[proto]
				for i := range 3 {
					resp, err := client.Get("http://" + addr + "/")
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatalf("request %d: body: %v", i, err)
					}
					if resp.StatusCode != http.StatusOK || len(body) != 128 || resp.ProtoMajor != wantMajor {
						t.Fatalf("request %d: status %d, %d bytes, proto %s", i, resp.StatusCode, len(body), resp.Proto)
					}
				}
				resp, err := client.Get("http://" + addr + statsPath)
				if err != nil {
					t.Fatal(err)
				}
				stats, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := map[int]string{1: "h1_requests=3 h2_requests=0\n", 2: "h1_requests=0 h2_requests=3\n"}[wantMajor]
				if string(stats) != want {
					t.Fatalf("stats %q, want %q", stats, want)
				}
			})
		}
	}
}

func TestServeRawHTTP1(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// want is the sequence of status lines; after the last one the
		// server must close the connection.
		want []string
	}{
		{
			name: "pipelined then close",
			in:   "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHEAD / HTTP/1.1\r\nConnection: close\r\n\r\n",
			want: []string{"HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"},
		},
		{name: "http10 closes", in: "GET / HTTP/1.0\r\n\r\n", want: []string{"HTTP/1.1 200 OK"}},
		{name: "malformed", in: "GET / HTTP/9\r\n\r\n", want: []string{"HTTP/1.1 400 Bad Request"}},
		{name: "chunked rejected", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", want: []string{"HTTP/1.1 501 Not Implemented"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", startServer(t, "fast", 16))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tt.in); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			for i, want := range tt.want {
				resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tt.in)[0]})
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				if got := resp.Proto + " " + resp.Status; got != want {
					t.Fatalf("response %d: %q, want %q", i, got, want)
				}
			}
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after last response: read %d bytes, err %v; want EOF", n, err)
			}
		})
	}
}

func BenchmarkServeHTTP1(b *testing.B) {
	c, err := net.Dial("tcp", startServer(b, "fast", 128))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n")
	br := bufio.NewReader(c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}
