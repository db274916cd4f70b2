// Package httpconn owns the HTTP connection manager: it serves downstream
// HTTP/1.1 (hand-written codec, package http1), h2c and HTTP/2 over TLS
// (hand-written, package h2) on accepted connections, turns each
// request into a filter.Stream, runs the listener's filter chain (which
// asks the router for the route) and writes the response back.
//
// Each request reads the Config published last (Server.Publish) once, when
// its head has arrived: a config swap applies to the next request, on
// kept-alive connections too, while in-flight ones finish on the version
// they started with.
package httpconn

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/forwarded"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/pathnorm"
	"github.com/omnirelay/omnirelay/internal/dataplane/telemetry"
)

// Config is one immutable version of a listener's HTTP settings.
type Config struct {
	// Chain runs the listener's filters and ends in the router, which
	// matches each request's route.
	Chain *filter.Chain
	// Limits bound request heads (HTTP/1.1) and header lists (HTTP/2).
	Limits http1.Limits
	// IdleTimeout closes keep-alive connections idle that long (default 5m).
	IdleTimeout time.Duration
	// RequestHeadersTimeout bounds reading a request head (default 30s).
	RequestHeadersTimeout time.Duration
	// AccessLogs each receive one JSON record per request.
	AccessLogs []*slog.Logger
	// Observe, when set, is called after each stream completes (metrics).
	Observe func(s *filter.Stream, status int, d time.Duration)
	// ServerName is sent as the "server" response header when set.
	ServerName string
	// Tracer, when set, starts a span per request (telemetry package).
	Tracer *telemetry.Tracer
	// Paths normalizes request paths before routing (normalize_path,
	// merge_slashes, path_with_escaped_slashes_action).
	Paths pathnorm.Options
	// Forwarded applies x-forwarded-for, x-forwarded-proto,
	// x-envoy-external-address and x-request-id (use_remote_address,
	// xff_num_trusted_hops, ...).
	Forwarded forwarded.Options
}

// Init finishes a Config after its fields are set; call it before use.
func (cfg *Config) Init() *Config {
	if t := cfg.Tracer; t != nil && cfg.Chain != nil {
		cfg.Chain.OnRouted(func(st *filter.Stream) { startTrace(st, t) }) // telemetry
	}
	if cfg.Limits.MaxHeaderBytes == 0 {
		cfg.Limits = http1.DefaultLimits()
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.RequestHeadersTimeout == 0 {
		cfg.RequestHeadersTimeout = 30 * time.Second
	}
	return cfg
}

// Server serves HTTP on connections handed to it by a listener, each request
// with the version published last. The listener looks its Server up once
// per connection; a request then costs one atomic load to find its version.
type Server struct {
	cfg atomic.Pointer[Config]
	h2  *h2Handler

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*serverConn]struct{}
}

// NewServer returns a server serving cfg (nil: none yet, connections close).
func NewServer(cfg *Config) *Server {
	s := &Server{conns: map[*serverConn]struct{}{}}
	s.cfg.Store(cfg)
	s.h2 = newH2Handler(s)
	return s
}

// Publish makes cfg the version that the next request on every connection,
// kept-alive ones included, is served with; requests in flight finish on the
// version they started with. nil withdraws the server's config: connections
// close instead of serving their next request.
func (s *Server) Publish(cfg *Config) { s.cfg.Store(cfg) }

// config returns the version published last.
func (s *Server) config() *Config { return s.cfg.Load() }

// Drain asks every connection to finish: HTTP/1.1 connections close after
// their current request (idle ones at once), HTTP/2 connections get GOAWAY
// and close when their streams end. It does not wait.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.h2.drain()
	s.mu.Lock()
	for sc := range s.conns {
		if sc.idle.Load() {
			_ = sc.nc.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
}

func (s *Server) track(sc *serverConn, add bool) {
	s.mu.Lock()
	if add {
		s.conns[sc] = struct{}{}
	} else {
		delete(s.conns, sc)
	}
	s.mu.Unlock()
}

// ServeConn serves one connection until it closes or ctx is done. For TLS
// connections the handshake must be complete; the negotiated ALPN protocol
// picks HTTP/2 or HTTP/1.1. Plain connections starting with the HTTP/2
// connection preface are served as h2c (prior knowledge).
// d is what the listener learnt about the connection; every stream of the
// connection carries a copy.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, d filter.Downstream) {
	if d.TLS != nil && d.TLS.NegotiatedProtocol == "h2" {
		s.h2.serve(ctx, c, &d)
		return
	}
	sc := getServerConn()
	defer putServerConn(sc)
	sc.serve(ctx, s, c, &d)
}

var serverConnPool = sync.Pool{New: func() any {
	sc := &serverConn{r: http1.NewReader(nil, 16<<10), wbuf: make([]byte, 0, 16<<10)}
	return sc
}}

func getServerConn() *serverConn { return serverConnPool.Get().(*serverConn) }

func putServerConn(sc *serverConn) {
	sc.r.Reset(nil)
	sc.nc = nil
	sc.stream.Reset()
	sc.req.Reset()
	serverConnPool.Put(sc)
}

func (s *Server) isDraining() bool { return s.draining.Load() }

// prepare fills the stream fields common to both protocols, applies the
// listener's forwarding-header rules and normalizes the path; the chain then
// matches the route. It returns false, with st.Resp set, for a request that
// is answered here: a path refused (400) or to be redirected with its
// escaped slashes decoded (307).
func prepare(st *filter.Stream, req *message.Request, ctx context.Context, d *filter.Downstream, cfg *Config) bool {
	st.Ctx = ctx
	st.Req = req
	st.Start = time.Now()
	st.Downstream = *d
	st.Client = forwarded.Apply(req, d.RemoteAddr.Addr(), d.TLS != nil, &cfg.Forwarded).Addr
	if len(req.Path) == 0 || req.Path[0] != '/' {
		return true // CONNECT authority or OPTIONS *
	}
	path, query := req.Path, []byte(nil)
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i:]
	}
	out, res := pathnorm.Path(st.PathBuf(), path, cfg.Paths)
	switch res {
	case pathnorm.Reject:
		st.Reply(400, "invalid request path\n")
		st.ResponseFlags = "DPE" // Envoy's downstream protocol error
		return false
	case pathnorm.Redirect:
		r := st.LocalResponse()
		r.Status = 307
		loc := append(append(st.PathBuf()[:0:0], out...), query...)
		r.Header.AddBytes([]byte("location"), loc)
		st.Resp = r
		return false
	}
	if len(out) != len(path) || (len(out) > 0 && &out[0] != &path[0]) {
		// Normalized into the stream's buffer: the request's path is now
		// the buffer, with the query put back.
		req.Path = st.SetPathBuf(append(out, query...))
	}
	return true
}
