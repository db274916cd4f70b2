package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
)

// H1Options configures the HTTP/1.1 pool.
type H1Options struct {
	Dial Dialer
	// TLS, when set, wraps each connection (upstream TLS); ALPN http/1.1.
	TLS *tls.Config
	// MaxIdlePerHost bounds idle connections kept per endpoint (default 256).
	MaxIdlePerHost int
	// IdleTimeout closes connections idle longer than this (default 60s).
	IdleTimeout time.Duration
	// MaxRequestsPerConn closes a connection after that many requests (0 = no limit).
	MaxRequestsPerConn int
	// OnConnect, when set, is asked before dialling (circuit breaker on
	// connections); returning false fails the request with ErrOverflow.
	OnConnect func() bool
	// OnDisconnect is called when a connection counted by OnConnect closes.
	OnDisconnect func()
	Limits       http1.Limits
}

// ErrOverflow is returned when the connection limit forbids a new connection.
var ErrOverflow = errors.New("upstream connection limit reached")

// H1 is an HTTP/1.1 connection pool over all endpoints of one cluster.
type H1 struct {
	opt    H1Options
	pools  atomic.Pointer[map[*endpoint.Endpoint]*hostPool]
	mu     sync.Mutex // serialises pool-map growth only
	closed atomic.Bool
}

var _ Transport = (*H1)(nil)

// NewH1 returns an HTTP/1.1 pool.
func NewH1(opt H1Options) *H1 {
	if opt.MaxIdlePerHost <= 0 {
		opt.MaxIdlePerHost = 256
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 60 * time.Second
	}
	if opt.Dial == nil {
		opt.Dial = NewDialer(5 * time.Second)
	}
	if opt.Limits.MaxHeaderBytes == 0 {
		opt.Limits = http1.DefaultLimits()
	}
	t := &H1{opt: opt}
	m := map[*endpoint.Endpoint]*hostPool{}
	t.pools.Store(&m)
	return t
}

type hostPool struct {
	mu   sync.Mutex
	idle []*h1Conn
}

func (t *H1) hostPool(ep *endpoint.Endpoint) *hostPool {
	if hp := (*t.pools.Load())[ep]; hp != nil {
		return hp
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.pools.Load()
	if hp := old[ep]; hp != nil {
		return hp
	}
	// Copy-on-write: new endpoints are rare (config changes), lookups are not.
	m := make(map[*endpoint.Endpoint]*hostPool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	hp := &hostPool{}
	m[ep] = hp
	t.pools.Store(&m)
	return hp
}

func (hp *hostPool) get(now time.Time, idleTimeout time.Duration) *h1Conn {
	for {
		hp.mu.Lock()
		n := len(hp.idle)
		if n == 0 {
			hp.mu.Unlock()
			return nil
		}
		c := hp.idle[n-1]
		hp.idle[n-1] = nil
		hp.idle = hp.idle[:n-1]
		hp.mu.Unlock()
		if now.Sub(c.idleSince) < idleTimeout {
			return c
		}
		c.close()
	}
}

func (hp *hostPool) put(c *h1Conn, max int) bool {
	hp.mu.Lock()
	if len(hp.idle) >= max {
		hp.mu.Unlock()
		return false
	}
	hp.idle = append(hp.idle, c)
	hp.mu.Unlock()
	return true
}

// CloseIdle implements Transport.
func (t *H1) CloseIdle() {
	for _, hp := range *t.pools.Load() {
		hp.mu.Lock()
		idle := hp.idle
		hp.idle = nil
		hp.mu.Unlock()
		for _, c := range idle {
			c.close()
		}
	}
}

// Close closes idle connections and stops pooling: connections in use close
// when released.
func (t *H1) Close() {
	t.closed.Store(true)
	t.CloseIdle()
}

// RoundTrip implements Transport.
func (t *H1) RoundTrip(ctx context.Context, ep *endpoint.Endpoint, req *message.Request, resp *message.Response, dl Deadlines) error {
	hp := t.hostPool(ep)
	for attempt := 0; ; attempt++ {
		c := hp.get(time.Now(), t.opt.IdleTimeout)
		reused := c != nil
		if c == nil {
			var err error
			if c, err = t.dial(ctx, ep, hp); err != nil {
				return err
			}
		}
		err := c.roundTrip(ctx, req, resp, dl)
		if err == nil {
			return nil
		}
		c.close()
		// A pooled connection the upstream closed while idle fails before any
		// response byte: resend on a fresh connection when nothing of the
		// request body was consumed, as net/http does.
		var se *staleError
		if reused && attempt == 0 && errors.As(err, &se) && (req.Body == nil || req.ContentLength == 0) &&
			(!se.sent || replayable(req.Method)) {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return err
	}
}

func (t *H1) dial(ctx context.Context, ep *endpoint.Endpoint, hp *hostPool) (*h1Conn, error) {
	if t.opt.OnConnect != nil && !t.opt.OnConnect() {
		return nil, ErrOverflow
	}
	nc, err := t.opt.Dial(ctx, ep.Address)
	if err != nil {
		if t.opt.OnDisconnect != nil {
			t.opt.OnDisconnect()
		}
		return nil, err
	}
	if t.opt.TLS != nil {
		redial := func(ctx context.Context) (net.Conn, error) { return t.opt.Dial(ctx, ep.Address) }
		tc, err := secrets.HandshakeClient(ctx, nc, t.opt.TLS, redial)
		if err != nil {
			if t.opt.OnDisconnect != nil {
				t.opt.OnDisconnect()
			}
			return nil, fmt.Errorf("%w: %s: tls: %v", ErrConnect, ep.Address, err)
		}
		nc = tc
	}
	c := &h1Conn{nc: nc, t: t, hp: hp, r: http1.NewReader(nc, 16<<10), wbuf: make([]byte, 0, 4096)}
	c.body.c = c
	c.closeFn = c.release
	c.raw = newRawWriter(nc)
	return c, nil
}

// staleError marks a failure that happened before the upstream sent any byte
// of a response on a reused connection. sent says the request was written:
// the upstream may have acted on it, so only methods that are safe to repeat
// are resent (net/http's rule).
type staleError struct {
	err  error
	sent bool
}

func replayable(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

type h1Conn struct {
	nc        net.Conn
	t         *H1
	hp        *hostPool
	r         *http1.Reader
	wbuf      []byte
	cw        http1.ChunkedWriter
	body      h1Body
	reqBody   bodyReader
	closeFn   func()
	idleSince time.Time
	requests  int
	reusable  bool
	stopCtx   func() bool
	closed    bool
	// raw writes whole requests on plain TCP connections (nil otherwise).
	raw *rawWriter
}

// writeRequest writes a request that is complete in b.
func (c *h1Conn) writeRequest(b []byte) error {
	if c.raw != nil && c.r.Buffered() == 0 {
		return c.raw.writeAndAwait(c.nc, b)
	}
	_, err := c.nc.Write(b)
	return err
}

func (c *h1Conn) roundTrip(ctx context.Context, req *message.Request, resp *message.Response, dl Deadlines) error {
	c.requests++
	_ = c.nc.SetDeadline(dl.Head)
	c.stopCtx = nil
	if ctx.Done() != nil {
		nc := c.nc
		c.stopCtx = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	}
	chunked := req.Body != nil && req.ContentLength < 0
	c.wbuf = http1.AppendRequestHead(c.wbuf[:0], req, chunked)
	if req.Body != nil && req.ContentLength > 0 && req.ContentLength <= 8<<10 {
		// Small bodies go out with the head in one write.
		n := len(c.wbuf)
		c.wbuf = growLen(c.wbuf, int(req.ContentLength))
		if _, err := io.ReadFull(req.Body, c.wbuf[n:]); err != nil {
			c.stop()
			return fmt.Errorf("%w: %w", ErrRequestBody, err)
		}
		if err := c.writeRequest(c.wbuf); err != nil {
			c.stop()
			return c.writeErr(err)
		}
	} else if req.Body == nil || req.ContentLength == 0 {
		if err := c.writeRequest(c.wbuf); err != nil {
			c.stop()
			return c.writeErr(err)
		}
	} else {
		if _, err := c.nc.Write(c.wbuf); err != nil {
			c.stop()
			return c.writeErr(err)
		}
		if err := c.writeBody(req, chunked); err != nil {
			c.stop()
			return err
		}
	}
	f, err := c.r.ReadResponse(resp, req.Method, c.t.opt.Limits)
	if err != nil {
		c.stop()
		// A passed deadline is a timeout, not a stale connection: resending
		// would only fail again, and the caller counts timeouts apart.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: reading response: %w", ErrTimeout, err)
		}
		if c.requests > 1 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)) && c.r.Buffered() == 0 {
			return &staleError{err: fmt.Errorf("%w: %v", ErrReset, err), sent: true}
		}
		return fmt.Errorf("%w: reading response: %v", ErrReset, err)
	}
	if dl.Total != dl.Head {
		_ = c.nc.SetDeadline(dl.Total)
	}
	c.reusable = !f.Close && (c.t.opt.MaxRequestsPerConn == 0 || c.requests < c.t.opt.MaxRequestsPerConn)
	resp.ContentLength = f.ContentLength
	resp.Close = c.closeFn
	switch {
	case resp.Status == 101:
		c.reusable = false
		c.body.upgraded = true
		c.body.src = nil
		resp.Body = &c.body
	case f.NoBody || f.ContentLength == 0:
		// A HEAD (or 304) response keeps the length it advertised: the
		// downstream writer repeats it without a body (RFC 9110 9.3.2).
		resp.ContentLength = f.ContentLength
		resp.Body = nil
		c.body.done = true
	default:
		c.body.src = c.r.BodyReader(f, &resp.Trailer)
		c.body.done = false
		c.body.upgraded = false
		resp.Body = &c.body
	}
	return nil
}

func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, len(b)+n+1024)
	copy(nb, b)
	return nb
}

func (c *h1Conn) writeErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: writing request: %w", ErrTimeout, err)
	}
	if c.requests > 1 {
		return &staleError{err: fmt.Errorf("%w: writing request: %v", ErrReset, err)}
	}
	return fmt.Errorf("%w: writing request: %v", ErrReset, err)
}

func (c *h1Conn) writeBody(req *message.Request, chunked bool) error {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	// reqBody tells a failure to read the downstream body from a failure to
	// write upstream; it lives in the pooled conn so it costs no allocation.
	c.reqBody = bodyReader{r: req.Body}
	defer func() { c.reqBody = bodyReader{} }()
	if chunked {
		c.cw.Reset(c.nc)
		if _, err := io.CopyBuffer(onlyWriter{&c.cw}, &c.reqBody, *bp); err != nil {
			return c.bodyErr(err)
		}
		if err := c.cw.Close(&req.Trailer); err != nil {
			return fmt.Errorf("%w: finishing request body: %v", ErrReset, err)
		}
		return nil
	}
	n, err := io.CopyBuffer(onlyWriter{c.nc}, io.LimitReader(&c.reqBody, req.ContentLength), *bp)
	if err == nil && n < req.ContentLength {
		// The body ended before its content-length: the client's fault.
		return fmt.Errorf("%w: %w", ErrRequestBody, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return c.bodyErr(err)
	}
	return nil
}

func (c *h1Conn) bodyErr(err error) error {
	if c.reqBody.err != nil {
		return fmt.Errorf("%w: %w", ErrRequestBody, c.reqBody.err)
	}
	return fmt.Errorf("%w: streaming request body: %v", ErrReset, err)
}

// bodyReader records the error of reading the downstream request body. It
// has only Read, so io.CopyBuffer takes no ReaderFrom/WriterTo detour.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (c *h1Conn) stop() {
	if c.stopCtx != nil {
		c.stopCtx()
		c.stopCtx = nil
	}
}

// release is resp.Close: the connection goes back to the pool only when its
// response body was read to the end and framing allows reuse.
func (c *h1Conn) release() {
	c.stop()
	if c.closed {
		return
	}
	if !c.reusable || !c.body.done || c.t.closed.Load() || c.r.Buffered() > 0 {
		c.close()
		return
	}
	// The deadlines stay armed while idle: nothing reads an idle pooled
	// connection, and the next round trip sets its own before any I/O.
	c.idleSince = time.Now()
	if !c.hp.put(c, c.t.opt.MaxIdlePerHost) {
		c.close()
	}
}

func (c *h1Conn) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.stop()
	_ = c.nc.Close()
	if c.t.opt.OnDisconnect != nil {
		c.t.opt.OnDisconnect()
	}
}

// h1Body is the response body handed to the router; it notices the end of
// the body so that release can pool the connection. After a 101 it is the
// raw upgraded stream in both directions.
type h1Body struct {
	c        *h1Conn
	src      io.Reader
	done     bool
	upgraded bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.upgraded {
		return b.c.r.Read(p)
	}
	if b.done {
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.done = true
	}
	return n, err
}

// Write is used only for upgraded connections (WebSocket tunnelling).
func (b *h1Body) Write(p []byte) (int, error) {
	if !b.upgraded {
		return 0, errors.New("upstream: write to a non-upgraded response body")
	}
	return b.c.nc.Write(p)
}

// CloseWrite half-closes an upgraded tunnel.
func (b *h1Body) CloseWrite() error {
	if cw, ok := b.c.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type onlyWriter struct{ io.Writer }

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}
