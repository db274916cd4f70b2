// Command revproxy is the baseline of bench/run.sh: the standard library's
// httputil.ReverseProxy, configured as a careful user would (a keep-alive
// pool sized for the benchmark's connection count) and nothing more. It
// serves HTTP/1.1 and h2c on one port, like OmniRelay's http listener, and
// forwards each request over the same protocol it arrived on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "revproxy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("revproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:18080", "listen address (HTTP/1.1 and h2c)")
	upstream := fs.String("upstream", "127.0.0.1:18000", "backend host:port")
	idle := fs.Int("idle-conns", 1024, "idle upstream HTTP/1.1 connections kept per host")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	logger.Info("revproxy listening", "addr", ln.Addr().String(), "upstream", *upstream)
	p := newProxy(*upstream, *idle, slog.NewLogLogger(logger.Handler(), slog.LevelWarn))
	if err := p.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

type proxy struct {
	srv    *http.Server
	h1, h2 *http.Transport
}

// Serve serves ln until ctx is done, then closes every connection, upstream
// ones included, and returns ctx.Err().
func (p *proxy) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { p.srv.Close() })
	defer stop()
	err := p.srv.Serve(ln)
	p.h1.CloseIdleConnections()
	p.h2.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func newProxy(upstream string, idleConns int, errLog *log.Logger) *proxy {
	target := &url.URL{Scheme: "http", Host: upstream}
	h1Protos := new(http.Protocols)
	h1Protos.SetHTTP1(true)
	h2Protos := new(http.Protocols)
	h2Protos.SetUnencryptedHTTP2(true)
	// Defaults keep 2 idle connections per host, which under 64 concurrent
	// clients would open and close a connection for most requests; that
	// would benchmark TCP set-up, not the proxy.
	h1 := &http.Transport{
		Protocols:           h1Protos,
		MaxIdleConns:        idleConns,
		MaxIdleConnsPerHost: idleConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	h2 := &http.Transport{Protocols: h2Protos, DisableCompression: true}
	reverse := func(tr http.RoundTripper) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.Out.Host = pr.In.Host },
			Transport: tr,
			ErrorLog:  errLog,
		}
	}
	viaH1, viaH2 := reverse(h1), reverse(h2)
	serverProtos := new(http.Protocols)
	serverProtos.SetHTTP1(true)
	serverProtos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 {
				viaH2.ServeHTTP(w, r)
				return
			}
			viaH1.ServeHTTP(w, r)
		}),
		Protocols:         serverProtos,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	return &proxy{srv: srv, h1: h1, h2: h2}
}
