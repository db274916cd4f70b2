// Command backend is the origin server behind every proxy in bench/run.sh: it
// answers any request with a fixed-size body over HTTP/1.1 keep-alive and over
// h2c (HTTP/2 with prior knowledge) on the same port.
//
// The HTTP/1.1 side is hand-written rather than net/http because the backend
// shares one core with the load generator: every microsecond it spends per
// request is taken from the load generator and lowers the ceiling all proxies
// are measured against. It is deliberately minimal (no chunked request
// bodies, no Upgrade) since its only clients are the proxies under test. h2c
// connections are recognised by their preface and handed to net/http's
// HTTP/2 server; -impl=nethttp serves both protocols with net/http, to
// cross-check the fast path.
//
// GET /_backend/stats returns the number of requests served over HTTP/1.1 and
// over HTTP/2, which run.sh uses to check which protocol each proxy really
// spoke upstream.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:18000", "listen address")
	bodySize := fs.Int("body", 128, "response body size in bytes")
	impl := fs.String("impl", "fast", "HTTP/1.1 implementation: fast (hand-written) or nethttp")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bodySize < 0 {
		return fmt.Errorf("-body %d: must not be negative", *bodySize)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("backend listening", "addr", ln.Addr().String(), "impl", *impl, "body", *bodySize)

	var serve func(context.Context, net.Listener) error
	switch *impl {
	case "fast":
		serve = newServer(*bodySize, log).Serve
	case "nethttp":
		serve = newNetHTTPServer(*bodySize, log).Serve
	default:
		ln.Close()
		return fmt.Errorf("-impl %q: want fast or nethttp", *impl)
	}
	if err := serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}
