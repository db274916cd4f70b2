package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestProxiesEachProtocolAsItArrived checks the baseline does what the
// benchmark table claims: h1 in, h1 out; h2c in, h2c out.
func TestProxiesEachProtocolAsItArrived(t *testing.T) {
	backendProtos := new(http.Protocols)
	backendProtos.SetHTTP1(true)
	backendProtos.SetUnencryptedHTTP2(true)
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Proto", r.Proto)
		w.Header().Set("X-Upstream-Host", r.Host)
		io.WriteString(w, "hello")
	}))
	backend.Config.Protocols = backendProtos
	backend.Start()
	defer backend.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(backend.Listener.Addr().String(), 8, log.New(io.Discard, "", 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	}()

	tests := []struct {
		name      string
		h2c       bool
		wantProto string
	}{
		{name: "http1", wantProto: "HTTP/1.1"},
		{name: "h2c", h2c: true, wantProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			protos := new(http.Protocols)
			protos.SetHTTP1(!tt.h2c)
			protos.SetUnencryptedHTTP2(tt.h2c)
			tr := &http.Transport{Protocols: protos}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + ln.Addr().String() + "/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "hello" || resp.Proto != tt.wantProto {
				t.Fatalf("status %d body %q downstream proto %s", resp.StatusCode, body, resp.Proto)
			}
			if got := resp.Header.Get("X-Upstream-Proto"); got != tt.wantProto {
				t.Fatalf("upstream saw %s, want %s", got, tt.wantProto)
			}
			if got := resp.Header.Get("X-Upstream-Host"); got != ln.Addr().String() {
				t.Fatalf("upstream Host %q, want the downstream one %q", got, ln.Addr().String())
			}
		})
	}
}
