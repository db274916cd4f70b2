package h2

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// Handler serves one stream. It runs on its own goroutine and must finish
// the response (WriteHeaders with endStream, WriteData with endStream or
// WriteTrailers) before returning; whatever it leaves open is ended for it.
// The Stream and everything reachable from it are recycled when it returns.
type Handler func(st *Stream)

// Server serves HTTP/2 connections. The zero value is usable; set fields
// before the first ServeConn.
type Server struct {
	// MaxConcurrentStreams is advertised to clients (default 1000); streams
	// beyond it are refused with REFUSED_STREAM.
	MaxConcurrentStreams uint32
	// StreamWindow is the receive window of each stream (default 1 MiB).
	StreamWindow uint32
	// ConnWindow is the receive window of each connection (default 4 MiB).
	ConnWindow uint32
	// MaxHeaderListSize bounds a request head or trailer block, RFC 7541
	// size (default 64 KiB); larger heads get a 431 response.
	MaxHeaderListSize uint32
	// IdleTimeout closes connections without streams for that long
	// (default 5 minutes).
	IdleTimeout time.Duration
	// Logger receives handler panics (default slog.Default()).
	Logger *slog.Logger

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	draining bool
	streams  sync.Pool
}

// Drain sends GOAWAY to every connection, naming the last stream it will
// process; connections close once their active streams end. New connections
// are told to go away at once. Drain does not wait.
func (s *Server) Drain() {
	s.mu.Lock()
	s.draining = true
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
}

func (s *Server) track(c *serverConn, add bool) (draining bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return s.draining
}

type serverLimits struct {
	maxStreams   uint32
	streamWindow uint32
	connWindow   uint32
	maxHeader    uint32
	idle         time.Duration
}

func (s *Server) limits() serverLimits {
	l := serverLimits{s.MaxConcurrentStreams, s.StreamWindow, s.ConnWindow, s.MaxHeaderListSize, s.IdleTimeout}
	if l.maxStreams == 0 {
		l.maxStreams = 1000
	}
	if l.streamWindow == 0 {
		l.streamWindow = 1 << 20
	}
	if l.streamWindow > http2core.MaxWindow {
		l.streamWindow = http2core.MaxWindow
	}
	if l.connWindow < http2core.DefaultWindow {
		l.connWindow = 4 << 20
	}
	if l.connWindow > http2core.MaxWindow {
		l.connWindow = http2core.MaxWindow
	}
	if l.maxHeader == 0 {
		l.maxHeader = 64 << 10
	}
	if l.idle == 0 {
		l.idle = 5 * time.Minute
	}
	return l
}

// serverConn is one downstream connection. The reader goroutine (serve)
// owns the frame reader, the HPACK decoder and the header sink; everything
// shared with stream goroutines is guarded by connWriter.mu.
type serverConn struct {
	connWriter
	srv *Server
	h   Handler
	ctx context.Context
	lim serverLimits

	rd   *http2core.FrameReader
	dec  *hpack.Decoder
	sink fieldSink

	// Guarded by mu.
	streams    map[uint32]*Stream
	clientIDs  http2core.ClientStreams
	active     int
	closed     bool
	goAwaySent bool
	lastIdle   time.Time
	idleTimer  *time.Timer
	handlers   sync.WaitGroup
	// idleWorkers are stream goroutines waiting for their next stream:
	// reusing them keeps their grown stacks and skips goroutine creation.
	idleWorkers []chan *Stream
}

// ServeConn serves one HTTP/2 connection until it closes, ctx is done or
// the server drains it, and returns once every stream handler has returned.
// The connection must start with the client preface: a caller that has
// already read it (h2c detection) replays it through the conn it passes.
// TLS, if any, is the caller's, with ALPN "h2" negotiated.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, h Handler) {
	c := &serverConn{srv: s, h: h, ctx: ctx, lim: s.limits()}
	c.init(nc)
	c.streams = make(map[uint32]*Stream)
	c.connWin = int64(c.lim.connWindow)
	c.streamWin = int64(c.lim.streamWindow)
	c.recv.Set(c.connWin)
	c.rd = http2core.NewFrameReader(yieldReader{nc}, 32<<10, http2core.BlockLimit(c.lim.maxHeader))
	c.dec = http2core.NewDecoder(c.lim.maxHeader, c.sink.emit)
	draining := s.track(c, true)
	defer s.track(c, false)
	go c.writeLoop()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	c.idleTimer = time.AfterFunc(c.lim.idle, c.onIdle)
	defer c.idleTimer.Stop()
	c.lastIdle = time.Now()

	c.mu.Lock()
	c.buf = http2core.AppendSettings(c.buf,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.lim.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.lim.streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.lim.maxHeader},
	)
	if c.lim.connWindow > http2core.DefaultWindow {
		c.buf = http2core.AppendWindowUpdate(c.buf, 0, c.lim.connWindow-http2core.DefaultWindow)
	}
	c.kick()
	c.mu.Unlock()
	if draining {
		c.drain()
	}

	err := c.readPreface()
	if err == nil {
		err = c.readLoop()
	}
	c.shutdown(err)
}

func (c *serverConn) readPreface() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.rd.ReadPreface(); err != nil {
		if errors.Is(err, http2core.ErrBadPreface) {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "bad connection preface"}
		}
		return err
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	return nil
}

// shutdown ends the connection: GOAWAY for a connection error, streams
// failed, the buffered frames flushed, the socket closed, and handlers
// waited for.
func (c *serverConn) shutdown(err error) {
	c.mu.Lock()
	var ce http2core.ConnError
	if errors.As(err, &ce) && !c.closing {
		c.buf = http2core.AppendGoAway(c.buf, c.clientIDs.Last(), ce.Code, ce.Reason)
	}
	c.closed = true
	c.closeWrite()
	for _, ch := range c.idleWorkers {
		ch <- nil
	}
	c.idleWorkers = nil
	streams := make([]*Stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	for _, st := range streams {
		c.failStream(st, ErrConnClosed)
	}
	c.mu.Unlock()
	<-c.done
	_ = c.nc.Close()
	c.handlers.Wait()
}

// drain sends GOAWAY naming the last stream this connection will serve.
func (c *serverConn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAwaySent || c.closed {
		return
	}
	c.goAwaySent = true
	c.buf = http2core.AppendGoAway(c.buf, c.clientIDs.Last(), http2.ErrCodeNo, "")
	c.kick()
	if c.active == 0 {
		c.closeLocked()
	}
}

// closeLocked stops reading and writing once buffered frames are out.
func (c *serverConn) closeLocked() {
	c.closeWrite()
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
}

func (c *serverConn) onIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if c.active == 0 {
		if since := time.Since(c.lastIdle); since >= c.lim.idle {
			if !c.goAwaySent {
				c.goAwaySent = true
				c.buf = http2core.AppendGoAway(c.buf, c.clientIDs.Last(), http2.ErrCodeNo, "idle")
			}
			c.closeLocked()
			return
		} else {
			c.idleTimer.Reset(c.lim.idle - since)
			return
		}
	}
	c.idleTimer.Reset(c.lim.idle)
}

func (c *serverConn) readLoop() error {
	for {
		f, hb, err := c.rd.Next()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.streamError(se.StreamID, se.Code)
				continue
			}
			return http2core.ClassifyReadError(err)
		}
		if hb != nil {
			err = c.onHeaderBlock(hb.StreamID, hb.Block, hb.EndStream, hb.SelfDependent)
		} else {
			err = c.processFrame(f)
		}
		if err != nil {
			return err
		}
	}
}

func (c *serverConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.RSTStreamFrame:
		return c.onRSTStream(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			c.buf = http2core.AppendPing(c.buf, true, f.Data)
			c.kick()
			c.mu.Unlock()
		}
		return nil
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
		return nil
	case *http2.GoAwayFrame:
		// The client will open no more streams; the ones it has finish.
		return nil
	case *http2.PushPromiseFrame:
		return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "PUSH_PROMISE from client"}
	}
	return nil // unknown frame types are ignored (RFC 9113 4.1)
}

func (c *serverConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	data := f.Data()
	flen := int64(f.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recv.Take(flen) {
		return http2core.ConnError{Code: http2.ErrCodeFlowControl, Reason: "connection window exceeded"}
	}
	st := c.streams[id]
	if st == nil || st.recvClosed {
		if st == nil && c.clientIDs.Idle(id) {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "DATA on idle stream"}
		}
		c.creditConn(flen)
		c.streamErrorLocked(id, http2.ErrCodeStreamClosed)
		return nil
	}
	switch c.receive(&st.streamIO, data, flen) {
	case recvFlowError:
		c.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	case recvLengthError:
		c.resetLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	if f.StreamEnded() {
		c.endRecv(st)
	}
	st.wakeRecv()
	return nil
}

// endRecv handles END_STREAM from the client; mu held.
func (c *serverConn) endRecv(st *Stream) {
	if st.declLen >= 0 && st.gotLen != st.declLen {
		c.resetLocked(st, http2.ErrCodeProtocol)
		return
	}
	st.recvClosed, st.ended = true, true
	c.maybeRemove(st)
}

func (c *serverConn) onHeaderBlock(id uint32, block []byte, endStream, badDep bool) error {
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		defer c.mu.Unlock()
		return c.onTrailers(st, block, endStream)
	}
	if err := c.clientIDs.Open(id); err != nil {
		c.mu.Unlock()
		return err
	}
	ignore := c.goAwaySent || c.closed
	refuse := uint32(c.active) >= c.lim.maxStreams
	c.mu.Unlock()

	if ignore {
		return c.decode(sinkDiscard, nil, nil, block)
	}
	st := c.srv.getStream()
	st.req.Reset()
	if err := c.decode(sinkRequest, &st.req, &st.req.Header, block); err != nil {
		c.srv.putStream(st)
		return err
	}
	switch {
	case refuse:
		c.srv.putStream(st)
		c.streamError(id, http2.ErrCodeRefusedStream)
		return nil
	case badDep || !c.sink.checkRequest():
		c.srv.putStream(st)
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	case endStream && c.sink.contentLength > 0:
		c.srv.putStream(st)
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	}
	h := c.h
	if c.sink.tooLarge {
		h = headerTooLarge
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.srv.putStream(st)
		return nil
	}
	st.open(c, id, c.sink.contentLength, endStream)
	c.streams[id] = st
	c.active++
	c.handlers.Add(1)
	c.mu.Unlock()
	st.h = h
	c.dispatch(st)
	return nil
}

// onTrailers handles a second header block on an open stream; mu held.
func (c *serverConn) onTrailers(st *Stream, block []byte, endStream bool) error {
	if st.recvClosed {
		if err := c.decode(sinkDiscard, nil, nil, block); err != nil {
			return err
		}
		c.streamErrorLocked(st.id, http2.ErrCodeStreamClosed)
		return nil
	}
	if err := c.decode(sinkTrailer, nil, &st.req.Trailer, block); err != nil {
		return err
	}
	if !endStream || c.sink.malformed || c.sink.tooLarge {
		st.req.Trailer.Reset()
		c.resetLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	c.endRecv(st)
	st.wakeRecv()
	return nil
}

// decode runs the HPACK decoder over a complete header block.
func (c *serverConn) decode(mode sinkMode, req *message.Request, hdr *message.Headers, block []byte) error {
	c.sink.start(mode, req, hdr, c.lim.maxHeader)
	return http2core.DecodeBlock(c.dec, block)
}

func (c *serverConn) onRSTStream(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil {
		if c.clientIDs.Idle(f.StreamID) {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "RST_STREAM on idle stream"}
		}
		return nil
	}
	c.closeStream(st, peerResetError(f.ErrCode))
	return nil
}

func (c *serverConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if !c.windowUpdate(nil, inc) {
			return http2core.ConnError{Code: http2.ErrCodeFlowControl, Reason: "connection window overflow"}
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if c.clientIDs.Idle(f.StreamID) {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "WINDOW_UPDATE on idle stream"}
		}
		return nil
	}
	if !c.windowUpdate(&st.streamIO, inc) {
		c.resetLocked(st, http2.ErrCodeFlowControl)
	}
	return nil
}

func (c *serverConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.peer.Apply(f, func(s http2.Setting, delta int64) error {
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.enc.setMaxSize(s.Val)
		case http2.SettingInitialWindowSize:
			return growSendWindows(c.streams, delta)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.buf = http2core.AppendSettingsAck(c.buf)
	c.kick()
	return nil
}

// streamError sends RST_STREAM for id and closes the stream if it is open.
func (c *serverConn) streamError(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	c.streamErrorLocked(id, code)
	c.mu.Unlock()
}

func (c *serverConn) streamErrorLocked(id uint32, code http2.ErrCode) {
	if st := c.streams[id]; st != nil {
		c.resetLocked(st, code)
		return
	}
	if c.closing {
		return
	}
	c.buf = http2core.AppendRSTStream(c.buf, id, code)
	c.kick()
}

// resetLocked sends RST_STREAM and closes st; mu held.
func (c *serverConn) resetLocked(st *Stream, code http2.ErrCode) {
	if !c.closing {
		c.buf = http2core.AppendRSTStream(c.buf, st.id, code)
		c.kick()
	}
	c.closeStream(st, localResetError(code))
}

// failStream closes st because the connection died; mu held.
func (c *serverConn) failStream(st *Stream, err error) { c.closeStream(st, err) }

// closeStream moves st to closed with err and wakes everyone waiting on it;
// mu held. The handler still owns the Stream until it returns.
func (c *serverConn) closeStream(st *Stream, err error) {
	if st.err == nil {
		st.err = err
	}
	st.recvClosed, st.sendClosed = true, true
	// A reset request is never complete, even if END_STREAM had arrived:
	// its unread bytes are dropped and reads fail.
	st.ended = false
	c.remove(st)
	c.dropBuffered(&st.streamIO)
	st.wakeRecv()
	st.wakeSend()
	// Lock order: conn mu, then the context's own lock, then (through a
	// forwarding client stream) the upstream connection's mu.
	st.ctx.cancel(err)
}

// maybeRemove drops st from the table once both directions are closed.
func (c *serverConn) maybeRemove(st *Stream) {
	if st.recvClosed && st.sendClosed {
		c.remove(st)
	}
}

func (c *serverConn) remove(st *Stream) {
	if !st.inTable {
		return
	}
	st.inTable = false
	delete(c.streams, st.id)
}

// dispatch hands st to an idle stream goroutine, or starts one.
func (c *serverConn) dispatch(st *Stream) {
	c.mu.Lock()
	if n := len(c.idleWorkers); n > 0 {
		ch := c.idleWorkers[n-1]
		c.idleWorkers[n-1] = nil
		c.idleWorkers = c.idleWorkers[:n-1]
		c.mu.Unlock()
		ch <- st
		return
	}
	c.mu.Unlock()
	go c.worker(st)
}

// maxIdleWorkers bounds the stream goroutines a connection keeps parked.
const maxIdleWorkers = 128

func (c *serverConn) worker(st *Stream) {
	var ch chan *Stream
	for {
		c.runStream(st, st.h)
		c.mu.Lock()
		if c.closed || len(c.idleWorkers) >= maxIdleWorkers {
			c.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan *Stream, 1)
		}
		c.idleWorkers = append(c.idleWorkers, ch)
		c.mu.Unlock()
		if st = <-ch; st == nil {
			return
		}
	}
}

func (c *serverConn) runStream(st *Stream, h Handler) {
	defer c.handlers.Done()
	defer func() {
		if r := recover(); r != nil {
			lg := c.srv.Logger
			if lg == nil {
				lg = slog.Default()
			}
			lg.Error("h2: handler panic", "stream", st.id, "panic", r)
			c.mu.Lock()
			if st.err == nil {
				c.resetLocked(st, http2.ErrCodeInternal)
			}
			c.mu.Unlock()
			c.finish(st)
		}
	}()
	h(st)
	c.finish(st)
}

// finish ends whatever the handler left open and recycles the stream.
func (c *serverConn) finish(st *Stream) {
	c.mu.Lock()
	if st.err == nil && !c.closing {
		if !st.headersSent {
			st.headersSent = true
			c.hblock = c.enc.begin(c.hblock[:0])
			c.hblock = c.enc.fieldString(c.hblock, ":status", status500)
			c.appendHeaders(st.id, true, c.hblock)
			st.sendClosed = true
		} else if !st.sendClosed {
			c.buf = http2core.AppendData(c.buf, st.id, nil, true)
			st.sendClosed = true
		}
		if !st.recvClosed {
			// RFC 9113 8.1: the response is complete; stop the upload.
			c.buf = http2core.AppendRSTStream(c.buf, st.id, http2.ErrCodeNo)
			st.recvClosed = true
		}
		c.kick()
	}
	c.remove(st)
	// Buffered data nobody read still counts against the connection window.
	c.dropBuffered(&st.streamIO)
	st.abortReadLocked()
	c.active--
	if c.active == 0 {
		c.lastIdle = time.Now()
		if c.goAwaySent {
			c.closeLocked()
		}
	}
	c.mu.Unlock()
	st.ctx.cancel(context.Canceled)
	c.srv.putStream(st)
}

var status500 = []byte("500")

func headerTooLarge(st *Stream) {
	var resp message.Response
	resp.Status = 431
	_ = st.WriteHeaders(&resp, true)
}
