package otelx

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no endpoint", Config{Insecure: true}, "endpoint is required"},
		{"bad protocol", Config{Endpoint: "x:1", Protocol: "udp", Insecure: true}, `protocol "udp"`},
		{"bad temporality", Config{Endpoint: "x:1", Temporality: "weekly", Insecure: true}, `temporality "weekly"`},
		{"tls", Config{Endpoint: "x:1"}, "TLS to the collector is not supported"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestShutdownWithCollectorDown: providers for a collector nobody listens
// on build (exporters connect lazily) and shut down within their timeout,
// leaving no goroutine behind.
func TestShutdownWithCollectorDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, proto := range []Protocol{GRPC, HTTP} {
		p, err := New(context.Background(), Config{Endpoint: "127.0.0.1:1", Protocol: proto, Insecure: true,
			Timeout: 200 * time.Millisecond, Traces: true, Metrics: true, Logs: true})
		if err != nil {
			t.Fatal(err)
		}
		if p.SpanExporter == nil || p.TracerProvider == nil || p.MeterProvider == nil || p.LoggerProvider == nil {
			t.Fatalf("%s: providers missing: %+v", proto, p)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_ = p.Shutdown(ctx) // the final flush fails: nobody listens
		cancel()
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("%s: shutdown took %v", proto, el)
		}
	}
}
