// Package demo owns `omnirelay demo`: sample backends on loopback and the
// example config, so that one command shows routing, weighted splits, health
// checks and the admin endpoint working.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/omnirelay/omnirelay/examples"
	"github.com/omnirelay/omnirelay/internal/dataplane/app"
)

// Backend is one of the demo's sample services.
type Backend struct{ Name, Addr string }

// Backends returns the demo's sample services at the addresses
// examples/demo.yaml names.
func Backends() []Backend {
	return []Backend{
		{"shop-v1-a", "127.0.0.1:9001"},
		{"shop-v1-b", "127.0.0.1:9002"},
		{"shop-v2", "127.0.0.1:9003"},
	}
}

// StartBackends starts the sample backends (HTTP/1.1 and h2c). Each answers
// with its name, echoes the path and serves /healthz.
func StartBackends(backends []Backend) (stop func(), err error) {
	var servers []*http.Server
	stop = func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}
	for _, b := range backends {
		ln, err := net.Listen("tcp", b.Addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("demo backend %s: %w", b.Name, err)
		}
		name := b.Name
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-backend", name)
			fmt.Fprintf(w, "hello from %s: %s %s (%s)\n", name, r.Method, r.URL.RequestURI(), r.Proto)
		})
		s := &http.Server{Handler: h2c.NewHandler(mux, &http2.Server{}), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { _ = s.Serve(ln) }()
	}
	return stop, nil
}

// Run starts the backends and the proxy on the embedded demo config and runs
// until a signal.
func Run(log *slog.Logger) error {
	stop, err := StartBackends(Backends())
	if err != nil {
		return err
	}
	defer stop()
	data, err := examples.FS.ReadFile("demo.yaml")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "omnirelay-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, `OmniRelay demo running. Try:
  curl -s localhost:8080/                                   # 80/20 split between shop-v1 and shop-v2
  curl -s -H 'x-canary: true' localhost:8080/api/items      # canary route to shop-v2
  curl -s --http2-prior-knowledge localhost:8080/           # h2c
  curl -s localhost:9901/clusters                           # endpoints, health, ejections
  curl -s localhost:9901/metrics | grep omnirelay_          # Prometheus metrics
  edit %s and watch it reload (bad edits are rejected and logged)
Ctrl-C drains and stops.
`, path)
	err = app.RunUntilSignal(app.Options{ConfigPath: path, Log: log, DrainTimeout: 5 * time.Second})
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}
