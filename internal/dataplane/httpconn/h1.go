package httpconn

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// serverConn is the per-connection state of the HTTP/1.1 server, pooled
// across connections so that a keep-alive request allocates nothing.
type serverConn struct {
	nc     net.Conn
	r      *http1.Reader
	wbuf   []byte
	cw     http1.ChunkedWriter
	req    message.Request
	stream filter.Stream
	body   reqBody
	idle   atomic.Bool
	readDL time.Time // read deadline armed on nc (zero: none)
}

// h2Preface is the HTTP/2 client connection preface (RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (sc *serverConn) serve(ctx context.Context, srv *Server, nc net.Conn, d *filter.Downstream) {
	sc.nc = nc
	sc.readDL = time.Time{}
	sc.r.Reset(nc)
	// Requests on an HTTP/1.1 connection are bounded by deadlines, not by
	// cancellation: a cancelable context would make every upstream attempt
	// register (and allocate) a cancellation callback. A forced close of the
	// listener closes this connection instead.
	reqCtx := context.WithoutCancel(ctx)
	srv.track(sc, true)
	defer srv.track(sc, false)
	defer nc.Close()
	scheme := "http"
	if d.TLS != nil {
		scheme = "https"
	}
	first := true
	for {
		cfg := srv.config()
		if cfg == nil {
			return
		}
		if first {
			sc.armRead(time.Now().Add(cfg.RequestHeadersTimeout), 0)
		} else {
			sc.armRead(time.Now().Add(cfg.IdleTimeout), cfg.IdleTimeout/16)
		}
		if first && d.TLS == nil {
			first = false
			if sc.isH2Preface() {
				sc.armRead(time.Time{}, 0)
				srv.h2.serve(ctx, &prefacedConn{Conn: nc, r: sc.r}, d)
				return
			}
		}
		first = false
		sc.req.Reset()
		sc.idle.Store(true)
		if srv.isDraining() {
			return
		}
		f, err := sc.r.ReadRequest(&sc.req, cfg.Limits)
		sc.idle.Store(false)
		if err != nil {
			var pe *http1.Error
			if errors.As(err, &pe) {
				sc.writeError(pe.Status, pe.Reason)
			}
			return
		}
		if f.Upgrade || f.Chunked || f.ContentLength > 0 {
			// The request reads the socket while it runs (body, tunnel):
			// the idle deadline must not cut it. A bodiless request leaves
			// the deadline armed, saving two timer updates per request.
			sc.armRead(time.Time{}, 0)
		}
		// The connection may have idled across a reload: route the request
		// with the version running now, not the one read before the wait.
		if cfg = srv.config(); cfg == nil {
			return
		}
		sc.req.SetScheme(scheme)
		if !sc.handle(reqCtx, srv, cfg, f, d) {
			return
		}
	}
}

// armRead sets the connection's read deadline to t unless the one already
// armed is within slack of it: keep-alive requests arriving back to back
// then cost no timer update (the idle timeout becomes coarse by slack).
func (sc *serverConn) armRead(t time.Time, slack time.Duration) {
	if slack > 0 && !sc.readDL.IsZero() && !t.IsZero() && t.Sub(sc.readDL) < slack {
		return
	}
	if t.IsZero() && sc.readDL.IsZero() {
		return
	}
	sc.readDL = t
	_ = sc.nc.SetReadDeadline(t)
}

// isH2Preface peeks for the h2c prior-knowledge preface.
func (sc *serverConn) isH2Preface() bool {
	// Every valid HTTP/1 request line is longer than 3 bytes, so this peek
	// never waits for bytes a real HTTP/1 client will not send.
	b, err := sc.r.Peek(4)
	// RFC 9113 3.4 reserves the PRI method for the preface: a connection
	// starting with it is HTTP/2, and the HTTP/2 server answers a malformed
	// preface with GOAWAY(PROTOCOL_ERROR) as the RFC asks.
	return err == nil && string(b) == "PRI "
}

// handle serves one request and reports whether the connection may serve
// another.
func (sc *serverConn) handle(ctx context.Context, srv *Server, cfg *Config, f http1.Framing, d *filter.Downstream) bool {
	st := &sc.stream
	st.Reset()
	req := &sc.req
	if f.Upgrade && req.Header.HasToken("upgrade", "h2c") {
		// Never forward an upgrade to h2c: an upstream that accepts it would
		// take every later request on this connection past routing and
		// filters ("h2c smuggling"). Envoy drops it too; serve HTTP/1.1.
		req.Header.Del("upgrade")
		req.Header.Del("http2-settings")
		f.Upgrade = false
	}
	if !f.NoBody && (f.Chunked || f.ContentLength > 0) {
		sc.body.reset(sc.r.BodyReader(f, &req.Trailer), f.ExpectContinue, sc.nc)
		req.Body = &sc.body
	} else {
		sc.body.reset(nil, false, nil)
	}
	req.ContentLength = f.ContentLength
	if f.Chunked {
		req.ContentLength = -1
	}
	if prepare(st, req, ctx, d, cfg) {
		cfg.Chain.Run(st)
	}
	resp := st.Resp
	keepAlive := !f.Close && !srv.isDraining()
	var status int
	var werr error
	if f.Upgrade && resp.Status == 101 {
		status = 101
		werr = sc.tunnel(resp)
		keepAlive = false
	} else {
		status = resp.Status
		if req.Body != nil && sc.body.markResponded() {
			// The body failed, or the client still waits for 100 Continue
			// and may send the body anyway: the stream cannot carry on.
			keepAlive = false
		}
		werr = sc.writeResponse(st, resp, req, keepAlive)
	}
	if resp.Close != nil {
		resp.Close()
	}
	// Only now is the transport done with the request body (an HTTP/2
	// upstream streams it on its own goroutine until resp.Close). What is
	// left is drained for the next request; a body too large to drain
	// cheaply ends the connection rather than stalling it.
	if keepAlive && werr == nil && req.Body != nil && !sc.body.drain(256<<10) {
		keepAlive = false
	}
	st.BytesRecv = sc.body.n
	cfg.Chain.Complete(st)
	if cfg.Observe != nil {
		cfg.Observe(st, status, time.Since(st.Start))
	}
	if len(cfg.AccessLogs) > 0 {
		logAccess(cfg.AccessLogs, st, status)
	}
	endTrace(st, status) // telemetry: span and OTLP access record
	return werr == nil && keepAlive
}

func (sc *serverConn) writeResponse(st *filter.Stream, resp *message.Response, req *message.Request, keepAlive bool) error {
	head := string(req.Method) == "HEAD"
	noBody := head || resp.Status == 204 || resp.Status == 304 || (resp.Status >= 100 && resp.Status < 200)
	cl := resp.ContentLength
	if resp.Body == nil && !head {
		// A HEAD response passes on the length the GET would have had.
		cl = 0
	}
	chunked := !noBody && cl < 0
	if chunked && req.ProtoMinor == 0 && req.ProtoMajor == 1 {
		// HTTP/1.0 has no chunked coding: delimit by close.
		chunked = false
		keepAlive = false
	}
	if noBody && !head {
		cl = 0
	}
	saved := resp.ContentLength
	resp.ContentLength = cl
	sc.wbuf = http1.AppendResponseHead(sc.wbuf[:0], resp, chunked, keepAlive)
	resp.ContentLength = saved
	if noBody || resp.Body == nil {
		_, err := sc.nc.Write(sc.wbuf)
		return err
	}
	// Small bodies of known length go out with the head in one write.
	if cl >= 0 && cl <= int64(cap(sc.wbuf)-len(sc.wbuf)) {
		n := len(sc.wbuf)
		sc.wbuf = sc.wbuf[:n+int(cl)]
		m, err := io.ReadFull(resp.Body, sc.wbuf[n:])
		st.BytesSent = int64(m)
		if err != nil {
			return err
		}
		_, err = sc.nc.Write(sc.wbuf)
		return err
	}
	if _, err := sc.nc.Write(sc.wbuf); err != nil {
		return err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if chunked {
		sc.cw.Reset(sc.nc)
		n, err := copyFlush(&sc.cw, resp.Body, *bp)
		st.BytesSent = n
		if err != nil {
			return err
		}
		return sc.cw.Close(&resp.Trailer)
	}
	var n int64
	var err error
	if cl >= 0 {
		n, err = copyFlush(sc.nc, io.LimitReader(resp.Body, cl), *bp)
		if err == nil && n < cl {
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = copyFlush(sc.nc, resp.Body, *bp)
	}
	st.BytesSent = n
	return err
}

// copyFlush copies without io.Copy's ReaderFrom/WriterTo detours (which
// would allocate their own buffers) and writes each chunk as it arrives so
// streamed responses are not held back.
func copyFlush(w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (sc *serverConn) writeError(status int, reason string) {
	body := reason + "\n"
	b := append(sc.wbuf[:0], "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http1.ReasonPhrase(status)...)
	b = append(b, "\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	sc.wbuf = b
	_ = sc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = sc.nc.Write(b)
}

// tunnel writes the 101 response and then copies bytes both ways between the
// downstream connection and the upgraded upstream stream (WebSocket).
func (sc *serverConn) tunnel(resp *message.Response) error {
	sc.wbuf = http1.AppendResponseHead(sc.wbuf[:0], resp, false, true)
	if _, err := sc.nc.Write(sc.wbuf); err != nil {
		return err
	}
	up, ok := resp.Body.(io.ReadWriter)
	if !ok {
		return errors.New("upgrade: upstream body is not bidirectional")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		_, _ = copyFlush(up, sc.r, buf) // sc.r holds any bytes read ahead
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	_, err := copyFlush(sc.nc, up, buf)
	if tc, ok := sc.nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	<-done
	return err
}

// reqBody wraps the downstream request body: it sends "100 Continue" the
// first time the body is read (so an upstream that rejects early never makes
// the client send the body) and tracks end of body for keep-alive.
//
// An HTTP/2 upstream reads it on its own goroutine while this connection's
// goroutine writes the response, so its state is guarded by mu. mu is not
// held across src.Read: only one goroutine reads src at a time (the
// transport until resp.Close returns, then drain).
type reqBody struct {
	mu        sync.Mutex
	src       io.Reader
	expect    bool
	responded bool // the final response is being written: no 100 Continue now
	nc        net.Conn
	eof       bool
	err       error
	n         int64 // bytes read: the access log's bytes_received
}

var _ upstream.Aborter = (*reqBody)(nil)

// errResponded fails a read of a body the client was never asked to send.
var errResponded = errors.New("request body: final response already sent without 100 Continue")

func (b *reqBody) reset(src io.Reader, expect bool, nc net.Conn) {
	b.mu.Lock()
	b.src, b.expect, b.responded, b.nc, b.eof, b.err, b.n = src, expect, false, nc, false, nil, 0
	b.mu.Unlock()
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.eof {
		b.mu.Unlock()
		return 0, io.EOF
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	if b.expect {
		if b.responded {
			b.err = errResponded
			b.mu.Unlock()
			return 0, errResponded
		}
		b.expect = false
		// Written under mu so that it cannot land inside the final
		// response (markResponded takes mu before that is written).
		if _, err := b.nc.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
			b.err = err
			b.mu.Unlock()
			return 0, err
		}
	}
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.err = err
	}
	b.mu.Unlock()
	return n, err
}

// markResponded is called before the final response is written; it reports
// whether the connection is already unusable: the body failed (bad framing),
// or the client still waits for 100 Continue (it never sent the body).
func (b *reqBody) markResponded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.responded = true
	return b.expect || b.err != nil
}

// Abort implements upstream.Aborter: it interrupts a Read blocked on the
// socket. The body then fails, so the connection is not reused.
func (b *reqBody) Abort() {
	b.mu.Lock()
	nc := b.nc
	b.mu.Unlock()
	if nc != nil {
		_ = nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// drain discards up to limit unread body bytes; it reports whether the body
// ended (the connection can be reused). A client still waiting for 100
// Continue never sent its body: nothing to drain, but the connection must
// close since the client may send it anyway.
func (b *reqBody) drain(limit int64) bool {
	b.mu.Lock()
	unusable := b.expect || b.err != nil
	b.mu.Unlock()
	if unusable {
		return false
	}
	var buf [4096]byte
	var n int64
	for n < limit {
		m, err := b.Read(buf[:])
		n += int64(m)
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// prefacedConn replays bytes already buffered by the HTTP/1 reader (the h2c
// preface) before reading from the socket.
type prefacedConn struct {
	net.Conn
	r *http1.Reader
}

func (c *prefacedConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}
