package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func okServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 128))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRunKV(t *testing.T) {
	srv := okServer(t)
	var out, errOut bytes.Buffer
	args := []string{"-url", srv.URL + "/", "-rate", "500", "-duration", "400ms", "-warmup", "100ms", "-conns", "2", "-format", "kv"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("run: %v (stderr %q)", err, errOut.String())
	}
	kv := map[string]string{}
	for _, f := range strings.Fields(out.String()) {
		k, v, _ := strings.Cut(f, "=")
		kv[k] = v
	}
	tests := []struct {
		name, key, want string
	}{
		{"all recorded requests sent", "sent", "200"},
		{"all succeeded", "ok", "200"},
		{"no errors", "errors", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if kv[tt.key] != tt.want {
				t.Fatalf("%s = %q, want %q (output %q)", tt.key, kv[tt.key], tt.want, out.String())
			}
		})
	}
	t.Run("percentiles ordered", func(t *testing.T) {
		var prev float64
		for _, k := range []string{"p50_us", "p90_us", "p99_us", "p999_us", "max_us"} {
			v, err := strconv.ParseFloat(kv[k], 64)
			if err != nil || v <= 0 || v < prev {
				t.Fatalf("%s = %q after %v: want positive and non-decreasing", k, kv[k], prev)
			}
			prev = v
		}
	})
}

// TestStallIsChargedToQueuedRequests is the point of the tool: one 100ms
// stall with one connection must show up in every request scheduled during
// it, not only in the one that hit it (which is what a closed-loop client
// like wrk reports).
func TestStallIsChargedToQueuedRequests(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 100 {
			<-time.After(100 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	addr, req, err := buildRequest(srv.URL+"/", "GET")
	if err != nil {
		t.Fatal(err)
	}
	res, err := runLoad(context.Background(), loadConfig{
		addr: addr, request: req, rate: 1000, duration: time.Second, conns: 1, timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ok != 1000 || res.errs != 0 {
		t.Fatalf("ok %d errors %d (first %v), want 1000 and 0", res.ok, res.errs, res.firstErr)
	}
	// About 100 requests were scheduled during the stall, with latencies
	// spread from 100ms down to 0: the 95th percentile must be well into it.
	if p95 := res.hist.quantile(0.95); p95 < 20*time.Millisecond {
		t.Fatalf("p95 = %v, want >= 20ms: the stall was not charged to queued requests", p95)
	}
}

func TestRunLoadErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	_, req, _ := buildRequest("http://"+closedAddr+"/", "GET")

	t.Run("refused connections are counted", func(t *testing.T) {
		res, err := runLoad(context.Background(), loadConfig{
			addr: closedAddr, request: req, rate: 200, duration: 100 * time.Millisecond, conns: 2, timeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.errs != res.sent || res.ok != 0 || res.firstErr == nil {
			t.Fatalf("errs %d ok %d of %d (first %v): want all failed", res.errs, res.ok, res.sent, res.firstErr)
		}
	})
	t.Run("run fails without successes", func(t *testing.T) {
		err := run(context.Background(), []string{"-url", "http://" + closedAddr + "/", "-duration", "50ms", "-warmup", "0s"}, io.Discard, io.Discard)
		if err == nil {
			t.Fatal("run succeeded against a closed port")
		}
	})
	t.Run("cancel stops the run", func(t *testing.T) {
		srv := okServer(t)
		addr, req, _ := buildRequest(srv.URL+"/", "GET")
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := runLoad(ctx, loadConfig{addr: addr, request: req, rate: 100, duration: time.Minute, conns: 1, timeout: time.Second})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("returned after %v", d)
		}
	})
}

func TestValidateAndBuildRequest(t *testing.T) {
	good := loadConfig{rate: 1, duration: time.Second, conns: 1, timeout: time.Second}
	tests := []struct {
		name   string
		mutate func(*loadConfig)
		url    string
		method string
		ok     bool
	}{
		{name: "valid", mutate: func(*loadConfig) {}, url: "http://127.0.0.1:1/x?y=1", method: "GET", ok: true},
		{name: "zero rate", mutate: func(c *loadConfig) { c.rate = 0 }, url: "http://127.0.0.1:1/", method: "GET"},
		{name: "rate too high", mutate: func(c *loadConfig) { c.rate = 1e7 }, url: "http://127.0.0.1:1/", method: "GET"},
		{name: "negative spin", mutate: func(c *loadConfig) { c.spin = -1 }, url: "http://127.0.0.1:1/", method: "GET"},
		{name: "no conns", mutate: func(c *loadConfig) { c.conns = 0 }, url: "http://127.0.0.1:1/", method: "GET"},
		{name: "negative warmup", mutate: func(c *loadConfig) { c.warmup = -1 }, url: "http://127.0.0.1:1/", method: "GET"},
		{name: "https", mutate: func(*loadConfig) {}, url: "https://127.0.0.1:1/", method: "GET"},
		{name: "bad method", mutate: func(*loadConfig) {}, url: "http://127.0.0.1:1/", method: "G T"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			_, _, err := buildRequest(tt.url, tt.method)
			if err == nil {
				err = cfg.validate()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	addr, req, err := buildRequest("http://example.test/p?q=1", "HEAD")
	if err != nil || addr != "example.test:80" || string(req) != "HEAD /p?q=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: omnirelay-rateload\r\n\r\n" {
		t.Fatalf("buildRequest = %q, %q, %v", addr, req, err)
	}
}
