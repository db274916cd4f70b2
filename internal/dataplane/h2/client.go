package h2

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
)

// Deadlines bound one exchange; zero values mean no bound. They are plain
// times rather than context deadlines because a context per request costs
// allocations on the hot path.
type Deadlines struct {
	// Head bounds sending the request and receiving the response head.
	Head time.Time
	// Total bounds the whole exchange, response body included.
	Total time.Time
}

// Client multiplexes requests over pooled HTTP/2 connections, one pool per
// address: a connection takes new streams until the server's
// MAX_CONCURRENT_STREAMS, then another is opened; a connection that got
// GOAWAY takes no new streams and closes when its streams end. Set fields
// before the first RoundTrip.
type Client struct {
	// Dial opens a connection (default: net.Dialer with a 5s timeout).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// TLS selects h2 over TLS with ALPN "h2"; nil means h2c with prior
	// knowledge.
	TLS *tls.Config
	// StreamWindow and ConnWindow are the receive windows (defaults 1 MiB
	// and 4 MiB).
	StreamWindow uint32
	ConnWindow   uint32
	// MaxHeaderListSize bounds a response head or trailer (default 64 KiB).
	MaxHeaderListSize uint32

	pools   sync.Map // addr -> *pool
	streams sync.Pool
	bufs    sync.Pool
	mu      sync.Mutex
	closed  bool
}

// pool holds the connections to one address.
type pool struct {
	cl   *Client
	addr string

	mu       sync.Mutex
	conns    []*clientConn
	dialing  bool
	dialDone chan struct{}
	dialErr  error
}

func (c *Client) pool(addr string) *pool {
	if p, ok := c.pools.Load(addr); ok {
		return p.(*pool)
	}
	p, _ := c.pools.LoadOrStore(addr, &pool{cl: c, addr: addr})
	return p.(*pool)
}

// get returns a connection with a stream slot reserved for the caller. One
// dial at a time per address: callers arriving meanwhile wait for it rather
// than each opening their own connection on a cold start.
func (p *pool) get(ctx context.Context) (*clientConn, error) {
	for {
		p.mu.Lock()
		for _, cc := range p.conns {
			if cc.reserve() {
				p.mu.Unlock()
				return cc, nil
			}
		}
		if p.dialing {
			ch := p.dialDone
			p.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			p.mu.Lock()
			err := p.dialErr
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		}
		p.dialing = true
		p.dialDone = make(chan struct{})
		p.mu.Unlock()
		// The dial serves every waiter, not just this caller: it is not
		// cancelled with this caller's context.
		cc, err := p.cl.dial(context.WithoutCancel(ctx), p)
		p.mu.Lock()
		p.dialing = false
		p.dialErr = err
		close(p.dialDone)
		reserved := false
		if err == nil {
			p.conns = append(p.conns, cc)
			reserved = cc.reserve()
		}
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if reserved {
			return cc, nil
		}
	}
}

// remove drops a connection that takes no new streams.
func (p *pool) remove(cc *clientConn) {
	p.mu.Lock()
	for i, c := range p.conns {
		if c == cc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			p.conns[len(p.conns):cap(p.conns)][0] = nil
			break
		}
	}
	p.mu.Unlock()
}

func (c *Client) dial(ctx context.Context, p *pool) (*clientConn, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%w: %s: client closed", ErrConnect, p.addr)
	}
	dial := c.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrConnect, addr, err)
			}
			return nc, nil
		}
	}
	nc, err := dial(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if c.TLS != nil {
		cfg := c.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tc, err := secrets.HandshakeClient(hctx, nc, cfg, func(ctx context.Context) (net.Conn, error) { return dial(ctx, p.addr) })
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tls: %v", ErrConnect, p.addr, err)
		}
		if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
			nc.Close()
			return nil, fmt.Errorf("%w: %s: server did not negotiate h2 (ALPN %q)", ErrConnect, p.addr, proto)
		}
		nc = tc
	}
	return newClientConn(c, p, nc), nil
}

// CloseIdle closes connections that have no active streams.
func (c *Client) CloseIdle() {
	c.pools.Range(func(_, v any) bool {
		p := v.(*pool)
		p.mu.Lock()
		conns := append([]*clientConn(nil), p.conns...)
		p.mu.Unlock()
		for _, cc := range conns {
			cc.closeIfIdle()
		}
		return true
	})
}

// Close stops dialling and closes idle connections; busy ones close when
// their streams end.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.pools.Range(func(_, v any) bool {
		p := v.(*pool)
		p.mu.Lock()
		conns := append([]*clientConn(nil), p.conns...)
		p.mu.Unlock()
		for _, cc := range conns {
			cc.shutdownWhenIdle()
		}
		return true
	})
}

func (c *Client) getBuf() *[]byte {
	if v := c.bufs.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 16<<10)
	return &b
}
