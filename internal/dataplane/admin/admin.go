// Package admin owns the data plane's admin endpoint (loopback by default):
// readiness and liveness, Prometheus metrics, the running config as xDS JSON,
// cluster and listener state, and a drain trigger. It is not on the request
// path, so it is plain net/http.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
)

// Server is the admin HTTP server.
type Server struct {
	rt       *runtime.Runtime
	log      *slog.Logger
	srv      *http.Server
	ln       net.Listener
	draining atomic.Bool
	wg       sync.WaitGroup // Start's goroutine
	// OnDrain is called by POST /drain (the process begins a graceful stop).
	OnDrain func()
	// ReadyDetail, when set and non-empty, qualifies a ready proxy's /ready
	// body: "ready (DETAIL): version ..." (e.g. "last-known-good; control
	// plane unreachable"). The status stays 200: the proxy serves.
	ReadyDetail func() string
}

// Listen binds the admin address.
func Listen(addr string, rt *runtime.Runtime, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{rt: rt, log: log, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(rt.Stats().Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /clusters", s.clusters)
	mux.HandleFunc("GET /listeners", s.listeners)
	mux.HandleFunc("POST /drain", s.drain)
	// Profiles on demand: the admin listener is loopback by default.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Start serves on a goroutine of the server's until Shutdown, which waits
// for it; an error other than the shutdown is logged.
func (s *Server) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.Serve(); err != nil {
			s.log.Error("admin server stopped", "error", err)
		}
	}()
}

// Shutdown stops the admin server: the listener closes (also when it never
// served), requests in flight get until ctx ends, and the goroutine of
// Start has returned.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	_ = s.ln.Close() // already closed when Serve ran
	s.wg.Wait()
	return err
}

// SetDraining marks the proxy not ready (load balancers stop sending).
func (s *Server) SetDraining() { s.draining.Store(true) }

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	v := s.rt.Current()
	switch {
	case s.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case v == nil:
		http.Error(w, "no config applied yet", http.StatusServiceUnavailable)
	default:
		msg := "ready: version " + v.ID + " from " + v.Source
		if s.ReadyDetail != nil {
			if d := s.ReadyDetail(); d != "" {
				msg = "ready (" + d + "): version " + v.ID + " from " + v.Source
			}
		}
		_, _ = w.Write([]byte(msg + "\n"))
	}
}

func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	v := s.rt.Current()
	if v == nil {
		http.Error(w, "no config applied yet", http.StatusServiceUnavailable)
		return
	}
	b, err := v.Resources.MarshalJSON()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("content-type", "application/json")
	_, _ = w.Write(b)
}

type clusterJSON struct {
	Name      string                 `json:"name"`
	Protocol  string                 `json:"protocol"`
	Endpoints []cluster.HealthStatus `json:"endpoints"`
}

func (s *Server) clusters(w http.ResponseWriter, _ *http.Request) {
	v := s.rt.Current()
	out := []clusterJSON{}
	if v != nil {
		for _, c := range v.Clusters.All() {
			p := "auto"
			switch c.Protocol {
			case cluster.ProtocolHTTP1:
				p = "http1"
			case cluster.ProtocolHTTP2:
				p = "http2"
			}
			out = append(out, clusterJSON{Name: c.Name, Protocol: p, Endpoints: c.Status()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, map[string]any{"clusters": out})
}

func (s *Server) listeners(w http.ResponseWriter, _ *http.Request) {
	type lj struct {
		Name    string `json:"name"`
		Address string `json:"address"`
	}
	out := []lj{}
	if v := s.rt.Current(); v != nil {
		for name, lc := range v.Listeners {
			addr := lc.Address
			if l := s.rt.Listener(name); l != nil {
				addr = l.Addr().String()
			}
			out = append(out, lj{Name: name, Address: addr})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, map[string]any{"listeners": out})
}

func (s *Server) drain(w http.ResponseWriter, _ *http.Request) {
	s.SetDraining()
	if s.OnDrain != nil {
		go s.OnDrain()
	}
	_, _ = w.Write([]byte("draining\n"))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("content-type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
