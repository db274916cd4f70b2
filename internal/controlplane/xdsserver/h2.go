package xdsserver

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// This file is the lean transport: a hand-written gRPC-over-HTTP/2 server
// for the xDS services only, with one goroutine per connection. It exists
// because of memory: grpc-go's server keeps four goroutines per connection
// with one stream (frame reader 4 KB stack, loopy writer 4 KB, keepalive
// 2 KB, and the stream handler, which blocks in Recv more than 2 KB deep and
// so keeps an 8 KB stack) and ~11 KB of heap, ~30 KB per xDS client
// before any xDS state (docs/xds-scale.md has the breakdown). Here the
// connection's reader goroutine decodes each request and handles it in place
// under the stream's lock; responses are framed into a per-connection output
// buffer that is written without blocking, and only a connection whose
// socket is full gets a second, short-lived goroutine to finish the write.
// Idle, a connection holds its socket, its reader (4 KB stack), the HTTP/2
// framer and HPACK decoder, and its streams' xDS state.
//
// What it implements, on the frame writers, settings validation and
// flow-control windows it shares with the data plane (internal/shared/
// http2core): the HTTP/2 connection preface and SETTINGS, HPACK decoding
// (x/net's decoder, through the framer, which also assembles CONTINUATION
// frames within h2MaxHeaderList without a buffer kept per connection), flow
// control both ways, PING, RST_STREAM, GOAWAY, CONTINUATION, up to
// h2MaxStreams concurrent streams, gRPC message
// framing (uncompressed only: a compressed message ends its stream with
// Unimplemented) and status trailers. What it leaves out: server-initiated
// keepalive pings (dead peers are found by TCP keepalive, which Go turns on
// for accepted connections), compression, and every service other than the
// xDS ones. TLS is the listener's business: Serve takes any net.Listener, so
// a tls.Listener whose config offers ALPN "h2" works (the handshake is
// completed before the preface and a client that did not negotiate h2 is
// closed); on a connection that is not a plain socket every write goes
// through the flusher goroutine.

const (
	h2MaxStreams     = 16
	h2StreamWindow   = 1 << 20 // advertised per stream, as ServerOptions does for grpc-go
	h2ConnWindow     = 1 << 20
	h2MaxReadFrame   = 16384 // the HTTP/2 default; never raised, so pooled buffers stay small
	h2MaxMsg         = 16 << 20
	h2MaxHeaderList  = 16 << 10
	h2MaxPending     = 64 << 20 // a stream's queued response bytes; a safety net, as pushes wait for what is queued (conn.pushLocked)
	h2PrefaceTimeout = 10 * time.Second
	h2MaxStatusMsg   = 4 << 10
)

var (
	errConnClosed   = errors.New("xds: connection closed")
	errClientGoAway = errors.New("xds: client sent GOAWAY")
)

// h2route is what a request path maps to.
type h2route struct {
	kind    int // routeSotW, routeDelta or routeFetch
	typeURL string
}

const (
	routeSotW = iota + 1
	routeDelta
	routeFetch
)

// Serve accepts connections on lis and serves the xDS services on them with
// the lean transport, until Stop or an accept error. It is an alternative to
// Register on a grpc.Server: same services, same behaviour, a fraction of the
// memory per connection. It returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.lmu.Lock()
	if s.stopped {
		s.lmu.Unlock()
		_ = lis.Close()
		return nil
	}
	s.listeners[lis] = struct{}{}
	s.lmu.Unlock()
	defer func() {
		s.lmu.Lock()
		delete(s.listeners, lis)
		s.lmu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.lmu.Lock()
			stopped := s.stopped
			s.lmu.Unlock()
			if stopped {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("xds: accept: %w", err)
		}
		backoff = 0
		c := newH2Conn(s, nc)
		s.lmu.Lock()
		if s.stopped {
			s.lmu.Unlock()
			_ = nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.lwg.Add(1)
		s.lmu.Unlock()
		go c.serve()
	}
}

// Stop closes every listener and connection served by Serve and waits for
// their goroutines. Streams end as if their clients had gone.
func (s *Server) Stop() {
	s.lmu.Lock()
	s.stopped = true
	for l := range s.listeners {
		_ = l.Close()
	}
	for c := range s.conns {
		_ = c.nc.Close()
	}
	s.lmu.Unlock()
	s.lwg.Wait()
}

// h2conn is one client connection. The reader goroutine (serve) owns the
// fields above wmu; wmu guards the output side.
type h2conn struct {
	s  *Server
	nc net.Conn
	rc syscall.RawConn // nil when nc is not a socket (TLS, pipes): writes then always go through the flusher
	fr *http2.Framer

	streams []*h2stream             // open streams, at most h2MaxStreams
	recvWin http2core.RecvWindow    // the connection's receive window
	ids     http2core.ClientStreams // the stream ids the client has opened

	wmu      sync.Mutex
	flushing bool                   // the flusher goroutine owns the socket's write side
	out      []byte                 // frames not yet written
	werr     error                  // the connection's first write error, or errConnClosed
	sendWin  http2core.SendWindow   // connection-level send window granted by the client
	settings http2core.PeerSettings // the client's initial stream window and max frame size
	blocked  []*h2stream
}

func newH2Conn(s *Server, nc net.Conn) *h2conn {
	c := &h2conn{s: s, nc: nc, settings: http2core.DefaultPeerSettings()}
	c.sendWin.Set(http2core.DefaultWindow)
	c.recvWin.Set(h2ConnWindow)
	if sc, ok := nc.(syscall.Conn); ok {
		if _, plain := nc.(*net.TCPConn); plain {
			if rc, err := sc.SyscallConn(); err == nil {
				c.rc = rc
			}
		}
	}
	// Reads are unbuffered: an xDS stream carries a few small requests per
	// update, so a read buffer per idle connection would cost more memory
	// than the extra read calls cost CPU. DATA payloads are read by serve into
	// pooled buffers; the framer reads only the small control frames.
	c.fr = http2.NewFramer(io.Discard, nc)
	c.fr.SetMaxReadFrameSize(h2MaxReadFrame) // = http2core.DefaultMaxFrameSize
	c.fr.MaxHeaderListSize = h2MaxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetReuseFrames()
	return c
}

// handshake completes TLS before the preface, within the preface's time
// limit, and holds the client to ALPN h2: gRPC requires it, and a client
// that offers no ALPN at all is not a gRPC client (Go's TLS server accepts
// one, so the check is ours).
func (c *h2conn) handshake(tc *tls.Conn) error {
	_ = tc.SetDeadline(time.Now().Add(h2PrefaceTimeout))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("xds: TLS handshake with %s: %w", tc.RemoteAddr(), err)
	}
	_ = tc.SetDeadline(time.Time{})
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return fmt.Errorf("xds: TLS client %s did not negotiate ALPN h2 (got %q)", tc.RemoteAddr(), p)
	}
	return nil
}

// peer is the connection's Peer, for Authorize.
func (c *h2conn) peer() Peer {
	p := Peer{Addr: c.nc.RemoteAddr()}
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		p.TLS = &cs
	}
	return p
}

func (c *h2conn) serve() {
	defer c.s.lwg.Done()
	err := c.run()
	c.teardown(err)
}

func (c *h2conn) run() error {
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := c.handshake(tc); err != nil {
			// Debug: port scanners and misconfigured clients would flood a
			// higher level; the client sees the reason itself.
			c.s.log.Debug("xds connection refused", "error", err)
			return err
		}
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(h2PrefaceTimeout))
	if err := http2core.ReadPreface(c.nc); err != nil {
		return fmt.Errorf("xds: reading the client preface: %w", err)
	}
	c.wmu.Lock()
	c.out = appendSettings(c.out)
	c.out = http2core.AppendWindowUpdate(c.out, 0, h2ConnWindow-http2core.DefaultWindow)
	c.flushLocked()
	c.wmu.Unlock()

	first := true
	for {
		fh, err := c.fr.ReadFrameHeader()
		if errors.Is(err, http2.ErrFrameTooLarge) {
			return http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if err != nil {
			return err
		}
		if first {
			if fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck) {
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
			first = false
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		if fh.Type == http2.FrameData {
			err = c.readData(fh)
		} else {
			var f http2.Frame
			if f, err = c.fr.ReadFrameForHeader(fh); err == nil {
				err = c.handleFrame(f)
			} else if se, ok := errors.AsType[http2.StreamError](err); ok {
				c.resetStream(se.StreamID, se.Code)
				err = nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// teardown ends every stream and closes the socket. A protocol error is
// reported to the client with GOAWAY first, best effort.
func (c *h2conn) teardown(err error) {
	c.wmu.Lock()
	if code, ok := http2core.ConnErrorCode(err); ok && c.werr == nil {
		c.out = http2core.AppendGoAway(c.out, c.ids.Last(), code, "")
		c.flushLocked()
	}
	if c.werr == nil {
		c.werr = errConnClosed
	}
	for _, st := range c.streams {
		st.done = true
	}
	c.wmu.Unlock()
	for _, st := range c.streams {
		st.end()
	}
	c.streams = nil
	_ = c.nc.Close()
	c.s.lmu.Lock()
	delete(c.s.conns, c)
	c.s.lmu.Unlock()
}

func (c *h2conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.applySettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.wmu.Lock()
		c.out = http2core.AppendPing(c.out, true, f.Data)
		c.flushLocked()
		c.wmu.Unlock()
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f.StreamID, f.Increment)
	case *http2.RSTStreamFrame:
		if st := c.stream(f.StreamID); st != nil {
			c.wmu.Lock()
			st.done = true
			c.wmu.Unlock()
			c.remove(st)
			st.end()
		}
	case *http2.GoAwayFrame:
		return errClientGoAway
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// PRIORITY and unknown frame types are ignored, as RFC 9113 asks.
	return nil
}

func (c *h2conn) applySettings(f *http2.SettingsFrame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.settings.Apply(f, func(s http2.Setting, delta int64) error {
		if s.ID != http2.SettingInitialWindowSize {
			return nil
		}
		// The difference applies to every open stream's send window (RFC
		// 9113 §6.9.2).
		for _, st := range c.streams {
			if !st.sendWin.Grow(delta) {
				return http2core.ErrStreamWindowOverflow
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.out = http2core.AppendSettingsAck(c.out)
	c.writeBlockedLocked()
	c.flushLocked()
	return nil
}

func (c *h2conn) windowUpdate(id, inc uint32) error {
	if id == 0 {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if !c.sendWin.Grow(int64(inc)) {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.writeBlockedLocked()
		c.flushLocked()
		return nil
	}
	st := c.stream(id)
	if st == nil {
		return nil
	}
	c.wmu.Lock()
	ok := st.sendWin.Grow(int64(inc))
	if ok {
		c.writeDataLocked(st)
		c.flushLocked()
	}
	c.wmu.Unlock()
	if !ok {
		// A stream window past 2^31-1 (RFC 9113 §6.9.1).
		c.resetStream(id, http2.ErrCodeFlowControl)
	}
	return nil
}

func (c *h2conn) stream(id uint32) *h2stream {
	for _, st := range c.streams {
		if st.id == id {
			return st
		}
	}
	return nil
}

func (c *h2conn) remove(st *h2stream) {
	for i, s := range c.streams {
		if s == st {
			c.streams[i] = c.streams[len(c.streams)-1]
			c.streams[len(c.streams)-1] = nil
			c.streams = c.streams[:len(c.streams)-1]
			break
		}
	}
	if len(c.streams) == 0 {
		c.streams = nil
	}
}

// resetStream refuses or aborts a stream on a stream-level error.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode) {
	if st := c.stream(id); st != nil {
		c.wmu.Lock()
		st.done = true
		c.wmu.Unlock()
		c.remove(st)
		st.end()
	}
	c.wmu.Lock()
	c.out = http2core.AppendRSTStream(c.out, id, code)
	c.flushLocked()
	c.wmu.Unlock()
}

// headers opens a stream, or for an open one takes trailers, which end the
// client's side.
func (c *h2conn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if st := c.stream(id); st != nil {
		if !f.StreamEnded() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		st.halfClose()
		return nil
	}
	if err := c.ids.Open(id); err != nil {
		return err
	}
	if f.Truncated {
		c.resetStream(id, http2.ErrCodeRefusedStream) // header list over h2MaxHeaderList
		return nil
	}
	c.sweep()
	if len(c.streams) >= h2MaxStreams {
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	st := &h2stream{c: c, id: id}
	st.recvWin.Set(h2StreamWindow)
	c.wmu.Lock()
	st.sendWin.Set(c.settings.InitialWindow)
	c.wmu.Unlock()
	c.streams = append(c.streams, st)

	path, ok := "", false
	if f.PseudoValue("method") == "POST" {
		path = f.PseudoValue("path")
		ct := ""
		for _, hf := range f.RegularFields() {
			if hf.Name == "content-type" {
				ct = hf.Value
			}
		}
		// application/grpc, optionally followed by +codec or ;parameters.
		rest, grpc := strings.CutPrefix(ct, "application/grpc")
		ok = grpc && (rest == "" || rest[0] == '+' || rest[0] == ';')
	}
	switch {
	case !ok:
		st.finish(status.Error(codes.Internal, "xds: not a gRPC request"))
	default:
		rt, known := routeOf(path)
		if !known {
			st.finish(status.Errorf(codes.Unimplemented, "unknown method %s", path))
		} else {
			st.route = rt
		}
	}
	if f.StreamEnded() {
		st.halfClose()
	}
	return nil
}

// sweep forgets streams already finished from the output side (by a push
// that failed) whose clients have not said anything since.
func (c *h2conn) sweep() {
	c.wmu.Lock()
	var done []*h2stream
	for _, st := range c.streams {
		if st.done && len(st.pending) == 0 {
			done = append(done, st)
		}
	}
	c.wmu.Unlock()
	for _, st := range done {
		c.remove(st)
	}
}

func (c *h2conn) readData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	bp := c.s.frameBufs.Get().(*[]byte)
	defer c.s.frameBufs.Put(bp)
	payload := (*bp)[:fh.Length]
	if _, err := io.ReadFull(c.nc, payload); err != nil {
		return err
	}
	data := payload
	if fh.Flags.Has(http2.FlagDataPadded) {
		if len(payload) == 0 || int(payload[0]) >= len(payload) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		data = payload[1 : len(payload)-int(payload[0])]
	}
	// Everything received is credited back at once: requests are consumed
	// as they arrive, and the 16 MB message limit bounds a stream's buffer.
	// Returning half the window at a time keeps WINDOW_UPDATEs rare.
	if !c.recvWin.Take(int64(fh.Length)) {
		return http2core.ConnError{Code: http2.ErrCodeFlowControl, Reason: "connection window exceeded"}
	}
	if inc := c.recvWin.Credit(int64(fh.Length), h2ConnWindow/2); inc > 0 {
		c.wmu.Lock()
		c.out = http2core.AppendWindowUpdate(c.out, 0, inc)
		c.flushLocked()
		c.wmu.Unlock()
	}
	st := c.stream(fh.StreamID)
	if st == nil {
		if c.ids.Idle(fh.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol) // DATA on an idle stream
		}
		return nil // a stream we already closed: its data is dropped
	}
	if st.recvDone {
		c.resetStream(st.id, http2.ErrCodeStreamClosed)
		return nil
	}
	if !st.recvWin.Take(int64(fh.Length)) {
		c.resetStream(st.id, http2.ErrCodeFlowControl)
		return nil
	}
	if !fh.Flags.Has(http2.FlagDataEndStream) {
		if inc := st.recvWin.Credit(int64(fh.Length), h2StreamWindow/2); inc > 0 {
			c.wmu.Lock()
			c.out = http2core.AppendWindowUpdate(c.out, st.id, inc)
			c.flushLocked()
			c.wmu.Unlock()
		}
	}
	st.receive(data)
	if fh.Flags.Has(http2.FlagDataEndStream) {
		st.halfClose()
	}
	return nil
}

// flushLocked writes out what it can without blocking; the rest is left to
// the flusher goroutine, so that neither the reader nor a notifying batch
// ever waits on a client that stopped reading.
func (c *h2conn) flushLocked() {
	if c.flushing || len(c.out) == 0 || c.werr != nil {
		return
	}
	if c.rc != nil {
		n := c.tryWrite(c.out)
		if c.werr != nil {
			_ = c.nc.Close()
			return
		}
		if n == len(c.out) {
			c.out = nil
			return
		}
		c.out = c.out[n:]
	}
	c.flushing = true
	c.s.lwg.Add(1) // the reader still counts, so Stop's Wait has not returned
	go c.flusher()
}

func (c *h2conn) tryWrite(b []byte) int {
	var (
		n    int
		werr error
	)
	err := c.rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true // never wait for the socket: the flusher does
	})
	switch {
	case err != nil:
		c.werr = err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return 0
	case werr != nil:
		c.werr = werr
	}
	return max(n, 0)
}

func (c *h2conn) flusher() {
	defer c.s.lwg.Done()
	c.wmu.Lock()
	for len(c.out) > 0 && c.werr == nil {
		b := c.out
		c.out = nil
		c.wmu.Unlock()
		_, err := c.nc.Write(b)
		c.wmu.Lock()
		if err != nil && c.werr == nil {
			c.werr = err
		}
	}
	c.flushing = false
	failed := c.werr != nil
	c.wmu.Unlock()
	if failed {
		_ = c.nc.Close() // the reader sees the error and tears the connection down
	}
}

// writeBlockedLocked retries the streams that wait for window.
func (c *h2conn) writeBlockedLocked() {
	blocked := c.blocked
	c.blocked = nil
	for _, st := range blocked {
		st.blocked = false
		c.writeDataLocked(st)
	}
}

// writeDataLocked frames as much of st's pending messages as both windows
// allow, then its trailers once nothing is pending.
func (c *h2conn) writeDataLocked(st *h2stream) {
	for len(st.pending) > 0 {
		n := min(int64(len(st.pending)), st.sendWin.Avail(), c.sendWin.Avail(), int64(c.settings.MaxFrameSize))
		if n <= 0 {
			if !st.blocked {
				st.blocked = true
				c.blocked = append(c.blocked, st)
			}
			return
		}
		c.out = http2core.AppendData(c.out, st.id, st.pending[:n], false)
		st.pending = st.pending[n:]
		st.sendWin.Consume(n)
		c.sendWin.Consume(n)
	}
	st.pending = nil
	if st.wantPush && !st.done {
		// A push skipped while this was pending (conn.pushLocked): run it now,
		// off this lock and off the caller, which may hold the stream's lock.
		st.wantPush = false
		go st.xc.notify()
	}
	if st.trailers != nil {
		c.out = append(c.out, st.trailers...)
		st.trailers = nil
	}
}

// h2stream is one gRPC call. The reader goroutine owns route, msg, recvWin,
// recvDone and the handler fields; c.wmu guards the rest.
type h2stream struct {
	c     *h2conn
	id    uint32
	route h2route

	msg     []byte               // a request being reassembled
	recvWin http2core.RecvWindow // the stream's receive window

	xc    *conn // the xDS stream state, once the first request came
	sotw  *sotwConn
	delta *deltaConn
	fetch []byte // a unary call's request, handled at the client's END_STREAM

	sendWin     http2core.SendWindow
	pending     []byte // response bytes waiting for window
	trailers    []byte // the status, written once pending drains
	headersSent bool
	blocked     bool // listed in c.blocked
	wantPush    bool // a push was skipped because of pending bytes
	done        bool // status sent or stream reset: nothing more is written
	recvDone    bool // the client ended its side
}

// receive splits data into gRPC messages and handles each one.
func (st *h2stream) receive(data []byte) {
	if st.isDone() {
		return
	}
	st.msg = append(st.msg, data...)
	for len(st.msg) >= 5 {
		n := binary.BigEndian.Uint32(st.msg[1:5])
		if n > h2MaxMsg {
			st.fail(status.Errorf(codes.ResourceExhausted, "xds: request of %d bytes is over the %d byte limit", n, h2MaxMsg))
			return
		}
		if len(st.msg) < 5+int(n) {
			break
		}
		if st.msg[0] != 0 {
			st.fail(status.Error(codes.Unimplemented, "xds: compressed requests are not supported"))
			return
		}
		if err := st.handle(st.msg[5 : 5+n]); err != nil {
			st.fail(err)
			return
		}
		st.msg = st.msg[5+n:]
	}
	if len(st.msg) == 0 {
		st.msg = nil // an idle stream keeps no buffer
	}
}

func (st *h2stream) isDone() bool {
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	return st.done
}
