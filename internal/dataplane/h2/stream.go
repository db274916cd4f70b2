package h2

import (
	"context"
	"errors"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Stream is one request/response exchange on a server connection, handed to
// the Handler. Its methods may be called from the handler's goroutine and
// from goroutines the handler waits for; it is recycled when the handler
// returns, so nothing may keep it (or its request) after that.
type Stream struct {
	c    *serverConn
	h    Handler
	req  message.Request
	body streamBody
	ctx  streamCtx

	// Guarded by c.mu.
	streamIO
	headersSent bool
}

// streamBody is the request body reader.
type streamBody struct{ st *Stream }

func (s *Server) getStream() *Stream {
	if v := s.streams.Get(); v != nil {
		return v.(*Stream)
	}
	st := &Stream{}
	st.body.st = st
	return st
}

func (s *Server) putStream(st *Stream) {
	st.req.Reset()
	st.c = nil
	st.err = nil
	s.streams.Put(st)
}

// open initialises a decoded stream; mu held.
func (st *Stream) open(c *serverConn, id uint32, declLen int64, endStream bool) {
	st.c = c
	st.initIO(id, c.streamWin, c.peer.InitialWindow, declLen, endStream, false)
	st.headersSent = false
	st.ctx.reset(c.ctx)
	r := &st.req
	r.ProtoMajor, r.ProtoMinor = 2, 0
	if endStream {
		r.ContentLength = 0
		r.Body = nil
	} else {
		r.ContentLength = declLen
		r.Body = &st.body
	}
}

// ID returns the stream identifier.
func (st *Stream) ID() uint32 { return st.id }

// Request returns the request. Pseudo-headers are in Method, Scheme,
// Authority and Path; Header holds the regular fields (lower-case);
// ContentLength is -1 when the client sent no content-length; Body is nil
// when the request has none. Trailer is complete once Body returned io.EOF.
func (st *Stream) Request() *message.Request { return &st.req }

// Context is done when the client resets the stream, when the connection
// dies, and when the handler has returned.
func (st *Stream) Context() context.Context { return &st.ctx }

// Read reads the request body. The windows are reopened as the handler
// consumes, so a handler that stops reading stops the client. The last
// bytes come with io.EOF when the end of the stream is already known.
func (b *streamBody) Read(p []byte) (int, error) {
	return b.st.c.read(&b.st.streamIO, p, nil)
}

// Abort makes a Read in progress and every later one fail at once: a
// transport that forwards this body and is done with it stops its copy
// (upstream.Aborter).
func (b *streamBody) Abort() {
	c := b.st.c
	c.mu.Lock()
	b.st.abortReadLocked()
	c.mu.Unlock()
}

// abortReadLocked makes pending and future reads fail; mu held.
func (st *Stream) abortReadLocked() {
	c := st.c
	if !st.readDone {
		st.readDone = true
		if n := len(st.recvBuf) - st.recvOff; n > 0 {
			c.creditStream(&st.streamIO, int64(n))
		}
		c.dropBuffered(&st.streamIO)
		st.waitRecv = true
		st.wakeRecv()
	}
}

var errHeadersSent = errors.New("h2: response headers already sent")
var errNoHeaders = errors.New("h2: response headers not sent yet")

// WriteHeaders sends the response head. A 1xx status may precede the final
// one. Connection-specific fields are dropped; content-length is added from
// resp.ContentLength when the header does not carry it. resp.Body is not
// read: the caller writes the body with Write/WriteData.
func (st *Stream) WriteHeaders(resp *message.Response, endStream bool) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	if st.headersSent || st.sendClosed {
		return errHeadersSent
	}
	status := resp.Status
	info := status >= 100 && status < 200
	if info && endStream {
		endStream = false
	}
	var sb [3]byte
	c.hblock = c.enc.begin(c.hblock[:0])
	c.hblock = c.enc.fieldString(c.hblock, ":status", appendStatus(sb[:0], status))
	c.hblock = appendFields(&c.enc, c.hblock, &resp.Header)
	if !info && status != 204 && status != 304 && resp.ContentLength >= 0 && !resp.Header.Has("content-length") {
		var nb [20]byte
		c.hblock = c.enc.fieldString(c.hblock, "content-length", appendInt(nb[:0], resp.ContentLength))
	}
	c.appendHeaders(st.id, endStream, c.hblock)
	if !info {
		st.headersSent = true
	}
	if endStream {
		st.sendClosed = true
		c.maybeRemove(st)
	}
	c.kick()
	return nil
}

// appendFields encodes regular header fields, leaving out pseudo-headers
// and connection-specific ones (RFC 9113 8.2.2).
func appendFields(enc *hpackEncoder, dst []byte, h *message.Headers) []byte {
	for i := 0; i < h.Len(); i++ {
		f := h.At(i)
		if len(f.Name) == 0 || f.Name[0] == ':' || connectionSpecific(f.Name) {
			continue
		}
		if string(f.Name) == "te" && string(f.Value) != "trailers" {
			continue
		}
		dst = enc.field(dst, f.Name, f.Value)
	}
	return dst
}

// Write sends p as DATA, blocking while the client's flow-control windows
// are exhausted.
func (st *Stream) Write(p []byte) (int, error) {
	if err := st.WriteData(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteData sends p as DATA frames, the last one with END_STREAM when
// endStream is set (an empty p with endStream just ends the stream).
func (st *Stream) WriteData(p []byte, endStream bool) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.headersSent && st.err == nil {
		return errNoHeaders
	}
	ended, err := c.sendData(&st.streamIO, p, endStream, nil)
	if ended {
		c.maybeRemove(st)
	}
	return err
}

// WriteTrailers ends the stream with a trailer block (or an empty DATA frame
// with END_STREAM when h is empty).
func (st *Stream) WriteTrailers(h *message.Headers) error {
	if h == nil || h.Len() == 0 {
		return st.WriteData(nil, true)
	}
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	if !st.headersSent {
		return errNoHeaders
	}
	if st.sendClosed {
		return ErrStreamClosed
	}
	c.hblock = c.enc.begin(c.hblock[:0])
	c.hblock = appendFields(&c.enc, c.hblock, h)
	c.appendHeaders(st.id, true, c.hblock)
	st.sendClosed = true
	c.maybeRemove(st)
	c.kick()
	return nil
}

// Reset abandons the stream with RST_STREAM(code).
func (st *Stream) Reset(code http2.ErrCode) {
	c := st.c
	c.mu.Lock()
	if st.err == nil {
		c.resetLocked(st, code)
	}
	c.mu.Unlock()
}
