// Package listener owns listening sockets and what happens to a connection
// before HTTP: filter-chain selection by SNI (peeking the ClientHello), TLS
// termination with a certificate per SNI, TLS passthrough and TCP proxying.
// A Listener keeps its socket across config versions: a new version is
// published with Update and applies to the next accepted connection (and,
// for HTTP, to the next request on existing connections).
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/httpconn"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
)

// Config is one immutable version of a listener.
type Config struct {
	Name    string
	Address string
	// Chains are tried by SNI: exact names, then "*.suffix" wildcards, then
	// the chain without server names (the default).
	Chains []*Chain
	// InspectTLS is set when some chain matches on server names or
	// transport protocol, so the ClientHello must be peeked before a chain
	// is chosen.
	InspectTLS bool
	// Metrics counts connections and handshake failures (nil: not counted).
	Metrics *Metrics
}

// Chain is a compiled filter chain.
type Chain struct {
	// Key identifies the chain across versions (its name or index).
	Key         string
	ServerNames []string
	// TLS terminates TLS with this config when set.
	TLS *tls.Config
	// TransportProtocol is "tls" (only connections that start with a TLS
	// ClientHello), "raw_buffer" (only those that do not) or "" (both): a
	// PERMISSIVE mTLS listener has one chain of each on one port.
	TransportProtocol string
	HTTP              *httpconn.Config
	TCP               *TCPProxy
	// Authorize, when set, decides whether a connection may use the chain
	// (L4 RBAC, internal/dataplane/netrbac). It runs after the TLS
	// handshake and before any byte is read; a refused connection is closed.
	Authorize func(src, dst net.Addr, sni, peerIdentity string) bool
	// Network, when set, filters the bytes a TCP chain proxies (extension
	// network filters, netfilter.go); it runs after Authorize.
	Network NetworkFilter
}

func (c *Config) chainFor(sni string, hasTLS bool) *Chain {
	var def, wild *Chain
	wildLen := -1
	sni = strings.ToLower(sni)
	for _, ch := range c.Chains {
		switch ch.TransportProtocol {
		case "tls":
			if !hasTLS {
				continue
			}
		case "raw_buffer":
			if hasTLS {
				continue
			}
		}
		if len(ch.ServerNames) == 0 {
			if def == nil {
				def = ch
			}
			continue
		}
		if !hasTLS {
			continue
		}
		for _, n := range ch.ServerNames {
			if n == sni {
				return ch
			}
			if strings.HasPrefix(n, "*") && strings.HasSuffix(sni, n[1:]) && len(n) > wildLen {
				wild, wildLen = ch, len(n)
			}
		}
	}
	if wild != nil {
		return wild
	}
	return def
}

// httpConfig returns the HTTP config of the chain with key, or nil when this
// version has no such chain or it no longer serves HTTP.
func (c *Config) httpConfig(key string) *httpconn.Config {
	for _, ch := range c.Chains {
		if ch.Key == key {
			return ch.HTTP
		}
	}
	return nil
}

// Listener is a bound socket serving successive config versions.
type Listener struct {
	name string
	addr string
	ln   net.Listener
	cfg  atomic.Pointer[Config]
	log  *slog.Logger

	mu      sync.Mutex
	servers map[string]*httpconn.Server // per chain key, carried across versions
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	closing atomic.Bool
	ctx     context.Context
	cancel  context.CancelFunc
}

// Listen binds cfg.Address. Serve must be called to accept connections.
func Listen(cfg *Config, log *slog.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{name: cfg.Name, addr: cfg.Address, ln: ln, log: log,
		servers: map[string]*httpconn.Server{}, conns: map[net.Conn]struct{}{}, ctx: ctx, cancel: cancel}
	l.cfg.Store(cfg)
	return l, nil
}

// Addr returns the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Update publishes a new version: to the next accepted connection, and, for
// HTTP chains, to the next request of every open connection through its
// chain's server. The address must not change (a new address is a new
// Listener).
func (l *Listener) Update(cfg *Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg.Store(cfg)
	for key, s := range l.servers {
		s.Publish(cfg.httpConfig(key))
	}
}

// Config returns the current version.
func (l *Listener) Config() *Config { return l.cfg.Load() }

// Serve accepts connections until Close or Drain.
func (l *Listener) Serve() {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.closing.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off as net/http does.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				l.log.Warn("accept failed; retrying", "listener", l.name, "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			l.log.Error("accept failed; listener stops", "listener", l.name, "error", err)
			return
		}
		delay = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		l.mu.Lock()
		if l.closing.Load() {
			// Accepted just before Drain or Close closed the socket: Drain
			// may already wait on wg, which must not grow from zero then.
			// Drain and Close take mu after setting closing, so this check
			// and their Wait are ordered.
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handle(c)
	}
}

func isTemporary(err error) bool {
	return strings.Contains(err.Error(), "too many open files")
}

func (l *Listener) handle(c net.Conn) {
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.wg.Done()
		_ = c.Close()
	}()
	cfg := l.cfg.Load()
	var sni string
	var conn net.Conn = c
	var hasTLS bool
	if cfg.InspectTLS {
		hello, replay, err := peekClientHello(c, 10*time.Second)
		if err == nil {
			sni, hasTLS = hello.ServerName, true
		}
		conn = &replayConn{Conn: c, prefix: replay}
	}
	ch := cfg.chainFor(sni, hasTLS)
	if ch == nil {
		l.log.Debug("no filter chain matches; closing", "listener", l.name, "sni", sni)
		return
	}
	d := filter.DownstreamOf(l.name, c)
	if ch.TLS != nil {
		tc := tls.Server(conn, ch.TLS)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.HandshakeContext(l.ctx); err != nil {
			// The peer saw only an alert; the reason goes to the metric and
			// the debug log.
			reason := secrets.ReasonOf(err)
			cfg.Metrics.handshakeError(l.name, reason)
			l.log.Debug("tls handshake failed", "listener", l.name, "remote", c.RemoteAddr().String(), "reason", reason, "error", err)
			return
		}
		_ = c.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		d.TLS = &st
		d.PeerIdentity = secrets.PeerIdentity(&st)
		conn = tc
	}
	cfg.Metrics.connection(l.name, ch.TLS != nil)
	if ch.Authorize != nil {
		if sni == "" && d.TLS != nil {
			sni = d.TLS.ServerName
		}
		if !ch.Authorize(c.RemoteAddr(), c.LocalAddr(), sni, d.PeerIdentity) {
			l.log.Debug("connection refused by rbac", "listener", l.name, "remote", c.RemoteAddr().String())
			return
		}
	}
	d.SNI = sni
	switch {
	case ch.HTTP != nil:
		l.httpServer(ch.Key).ServeConn(l.ctx, conn, d)
	case ch.TCP != nil:
		ch.TCP.Serve(l.ctx, conn, &d, ch.Network)
	}
}

// httpServer returns the HTTP server of a chain, once per connection. The
// server is carried across versions (Update publishes each version's config
// to it) so that route and filter changes apply to the next request of
// existing keep-alive connections.
func (l *Listener) httpServer(key string) *httpconn.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.servers[key]; s != nil {
		return s
	}
	s := httpconn.NewServer(l.cfg.Load().httpConfig(key))
	l.servers[key] = s
	return s
}

// Drain stops accepting, asks connections to finish and waits for them up to
// ctx's deadline, then closes what is left.
func (l *Listener) Drain(ctx context.Context) error {
	l.closing.Store(true)
	_ = l.ln.Close()
	l.mu.Lock()
	for _, s := range l.servers {
		s.Drain()
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		l.cancel()
		return nil
	case <-ctx.Done():
		// Closing a connection does not interrupt its handler while it
		// waits on an upstream (HTTP/1.1 requests carry no cancellation:
		// see httpconn), so waiting for handlers here would outlast ctx by
		// the route timeout, or forever without one. They end on their own
		// when the upstream answers or times out; Wait still sees them.
		l.Close()
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection now.
func (l *Listener) Close() {
	l.closing.Store(true)
	_ = l.ln.Close()
	l.cancel()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
}

// Wait blocks until every connection handler has returned.
func (l *Listener) Wait() { l.wg.Wait() }
