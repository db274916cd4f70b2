package h2

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// clientConn is one upstream connection. Its reader goroutine owns the
// frame reader, the HPACK decoder and the sink; stream state is guarded by
// mu.
type clientConn struct {
	connWriter
	cl        *Client
	p         *pool
	maxHeader uint32

	rd   *http2core.FrameReader
	dec  *hpack.Decoder
	sink fieldSink

	readerDone chan struct{}

	// Guarded by mu.
	streams    map[uint32]*clientStream
	nextID     uint32
	active     int // reserved plus open streams
	maxStreams uint32
	closed     bool
	goAway     bool
	goAwayLast uint32
	retire     bool // Close/CloseIdle: take no new streams, close when idle
}

// initialMaxStreams is assumed until the server's SETTINGS say otherwise
// (RFC 9113 leaves it unlimited; 100 is its recommended minimum).
const initialMaxStreams = 100

func newClientConn(cl *Client, p *pool, nc net.Conn) *clientConn {
	cc := &clientConn{cl: cl, p: p, nextID: 1, maxStreams: initialMaxStreams}
	cc.init(nc)
	cc.streams = make(map[uint32]*clientStream)
	cc.readerDone = make(chan struct{})
	sw, cw, mh := cl.StreamWindow, cl.ConnWindow, cl.MaxHeaderListSize
	if sw == 0 {
		sw = 1 << 20
	}
	if cw < http2core.DefaultWindow {
		cw = 4 << 20
	}
	sw, cw = min(sw, http2core.MaxWindow), min(cw, http2core.MaxWindow)
	if mh == 0 {
		mh = 64 << 10
	}
	cc.maxHeader = mh
	cc.streamWin, cc.connWin = int64(sw), int64(cw)
	cc.recv.Set(cc.connWin)
	cc.rd = http2core.NewFrameReader(yieldReader{nc}, 32<<10, http2core.BlockLimit(mh))
	cc.dec = http2core.NewDecoder(mh, cc.sink.emit)

	cc.mu.Lock()
	cc.buf = append(cc.buf, http2core.ClientPreface...)
	cc.buf = http2core.AppendSettings(cc.buf,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: sw},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: mh},
	)
	if cw > http2core.DefaultWindow {
		cc.buf = http2core.AppendWindowUpdate(cc.buf, 0, cw-http2core.DefaultWindow)
	}
	cc.kick()
	cc.mu.Unlock()
	go cc.writeLoop()
	go cc.readLoop()
	return cc
}

// reserve takes a stream slot if the connection accepts new streams.
func (cc *clientConn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed || cc.goAway || cc.retire || cc.closing || uint32(cc.active) >= cc.maxStreams {
		return false
	}
	cc.active++
	return true
}

// releaseSlot gives back a slot (a reserved stream that never opened, or a
// stream leaving the table); mu held.
func (cc *clientConn) releaseSlot() {
	cc.active--
	if cc.active == 0 && (cc.goAway || cc.retire) {
		cc.closeLocked()
	}
}

func (cc *clientConn) closeLocked() {
	if cc.closing {
		return
	}
	cc.buf = http2core.AppendGoAway(cc.buf, 0, http2.ErrCodeNo, "")
	cc.closeWrite()
	_ = cc.nc.SetReadDeadline(time.Unix(1, 0))
}

func (cc *clientConn) closeIfIdle() {
	cc.mu.Lock()
	if cc.active == 0 {
		cc.retire = true
		cc.closeLocked()
	}
	cc.mu.Unlock()
}

func (cc *clientConn) shutdownWhenIdle() {
	cc.mu.Lock()
	cc.retire = true
	if cc.active == 0 {
		cc.closeLocked()
	}
	cc.mu.Unlock()
	cc.p.remove(cc)
}

func (cc *clientConn) readLoop() {
	defer close(cc.readerDone)
	var err error
	for {
		var (
			f  http2.Frame
			hb *http2core.HeaderBlock
		)
		f, hb, err = cc.rd.Next()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.streamError(se.StreamID, se.Code)
				continue
			}
			err = http2core.ClassifyReadError(err)
			break
		}
		if hb != nil {
			err = cc.onHeaderBlock(hb.StreamID, hb.Block, hb.EndStream)
		} else {
			err = cc.processFrame(f)
		}
		if err != nil {
			break
		}
	}
	cc.fail(err)
}

// fail ends the connection after the reader stopped: every stream fails,
// the connection leaves the pool.
func (cc *clientConn) fail(err error) {
	cc.p.remove(cc)
	cc.mu.Lock()
	var ce http2core.ConnError
	if errors.As(err, &ce) && !cc.closing {
		cc.buf = http2core.AppendGoAway(cc.buf, 0, ce.Code, ce.Reason)
	}
	cc.closed = true
	cc.closeWrite()
	serr := fmt.Errorf("%w: connection lost: %v", ErrReset, err)
	for _, cs := range cc.streams {
		cc.closeStream(cs, serr)
	}
	cc.mu.Unlock()
	<-cc.done
	_ = cc.nc.Close()
}

func (cc *clientConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return cc.onData(f)
	case *http2.RSTStreamFrame:
		cc.mu.Lock()
		defer cc.mu.Unlock()
		cs := cc.streams[f.StreamID]
		if cs == nil {
			if f.StreamID >= cc.nextID {
				return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "RST_STREAM on idle stream"}
			}
			return nil
		}
		if f.ErrCode == http2.ErrCodeNo && cs.ended {
			// RFC 9113 8.1: the response is complete and the server wants
			// no more of the request body. The response stays readable.
			cs.sendClosed = true
			cs.wakeSend()
			cc.remove(cs)
			return nil
		}
		cc.closeStream(cs, peerResetError(f.ErrCode))
		return nil
	case *http2.WindowUpdateFrame:
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if f.StreamID == 0 {
			if !cc.windowUpdate(nil, int64(f.Increment)) {
				return http2core.ConnError{Code: http2.ErrCodeFlowControl, Reason: "connection window overflow"}
			}
			return nil
		}
		if cs := cc.streams[f.StreamID]; cs != nil && !cc.windowUpdate(&cs.streamIO, int64(f.Increment)) {
			cc.resetLocked(cs, http2.ErrCodeFlowControl)
		}
		return nil
	case *http2.SettingsFrame:
		return cc.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			cc.mu.Lock()
			if !cc.closing {
				cc.buf = http2core.AppendPing(cc.buf, true, f.Data)
				cc.kick()
			}
			cc.mu.Unlock()
		}
		return nil
	case *http2.GoAwayFrame:
		cc.onGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "PUSH_PROMISE with push disabled"}
	}
	return nil
}

func (cc *clientConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	flen := int64(f.Length)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.recv.Take(flen) {
		return http2core.ConnError{Code: http2.ErrCodeFlowControl, Reason: "connection window exceeded"}
	}
	cs := cc.streams[id]
	if cs == nil || cs.recvClosed {
		if cs == nil && id >= cc.nextID {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "DATA on idle stream"}
		}
		// A stream we reset: the peer may not know yet.
		cc.creditConn(flen)
		if cs != nil {
			cc.resetLocked(cs, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if !cs.headReady {
		cc.creditConn(flen)
		cc.resetLocked(cs, http2.ErrCodeProtocol)
		return nil
	}
	switch cc.receive(&cs.streamIO, f.Data(), flen) {
	case recvFlowError:
		cc.resetLocked(cs, http2.ErrCodeFlowControl)
		return nil
	case recvLengthError:
		cc.resetLocked(cs, http2.ErrCodeProtocol)
		return nil
	}
	if f.StreamEnded() {
		cc.endRecv(cs)
	}
	return nil
}

// endRecv handles END_STREAM from the server; mu held.
func (cc *clientConn) endRecv(cs *clientStream) {
	if cs.declLen >= 0 && cs.gotLen != cs.declLen {
		cc.resetLocked(cs, http2.ErrCodeProtocol)
		return
	}
	cs.recvClosed, cs.ended = true, true
	cs.wakeRecv()
	cc.maybeRemove(cs)
}

func (cc *clientConn) onHeaderBlock(id uint32, block []byte, endStream bool) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cs := cc.streams[id]
	if cs == nil || cs.recvClosed {
		if err := cc.decode(sinkDiscard, nil, block); err != nil {
			return err
		}
		if cs == nil && id >= cc.nextID {
			return http2core.ConnError{Code: http2.ErrCodeProtocol, Reason: "HEADERS on idle stream"}
		}
		if cs != nil {
			cc.resetLocked(cs, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	resp := cs.resp
	if cs.headReady {
		if err := cc.decode(sinkTrailer, &resp.Trailer, block); err != nil {
			return err
		}
		if !endStream || cc.sink.malformed || cc.sink.tooLarge {
			resp.Trailer.Reset()
			cc.resetLocked(cs, http2.ErrCodeProtocol)
			return nil
		}
		cc.endRecv(cs)
		return nil
	}
	resp.Header.Reset()
	if err := cc.decode(sinkResponse, &resp.Header, block); err != nil {
		return err
	}
	s := &cc.sink
	if s.malformed || s.tooLarge || s.pseudo&pseudoStatus == 0 || s.status == 101 {
		resp.Header.Reset()
		cc.resetLocked(cs, http2.ErrCodeProtocol)
		return nil
	}
	if s.status < 200 {
		// Interim response (100 Continue, 103 Early Hints): wait for the
		// final one.
		resp.Header.Reset()
		if endStream {
			cc.resetLocked(cs, http2.ErrCodeProtocol)
		}
		return nil
	}
	resp.Status = s.status
	resp.ContentLength = s.contentLength
	cs.declLen = s.contentLength
	if cs.noBody || s.status == 204 || s.status == 304 {
		// The length describes the entity a GET would have got.
		cs.declLen = -1
	}
	cs.headReady = true
	if endStream {
		if cs.declLen > 0 {
			cc.resetLocked(cs, http2.ErrCodeProtocol)
			return nil
		}
		cs.recvClosed, cs.ended = true, true
		cc.maybeRemove(cs)
	}
	cs.wakeRecv()
	return nil
}

func (cc *clientConn) decode(mode sinkMode, hdr *message.Headers, block []byte) error {
	cc.sink.start(mode, nil, hdr, cc.maxHeader)
	return http2core.DecodeBlock(cc.dec, block)
}

func (cc *clientConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	err := cc.peer.Apply(f, func(s http2.Setting, delta int64) error {
		switch s.ID {
		case http2.SettingHeaderTableSize:
			cc.enc.setMaxSize(s.Val)
		case http2.SettingInitialWindowSize:
			return growSendWindows(cc.streams, delta)
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !cc.closing {
		cc.buf = http2core.AppendSettingsAck(cc.buf)
		cc.kick()
	}
	return nil
}

// errGoAwayRefused fails streams the server will not process after GOAWAY:
// they may be retried on another connection.
var errGoAwayRefused = fmt.Errorf("%w: above GOAWAY last stream id", ErrRefused)

func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	cc.goAwayLast = f.LastStreamID
	for id, cs := range cc.streams {
		if id > f.LastStreamID {
			cc.closeStream(cs, errGoAwayRefused)
		}
	}
	if cc.active == 0 {
		cc.closeLocked()
	}
	cc.mu.Unlock()
	cc.p.remove(cc)
}

func (cc *clientConn) streamError(id uint32, code http2.ErrCode) {
	cc.mu.Lock()
	if cs := cc.streams[id]; cs != nil {
		cc.resetLocked(cs, code)
	} else if !cc.closing {
		cc.buf = http2core.AppendRSTStream(cc.buf, id, code)
		cc.kick()
	}
	cc.mu.Unlock()
}

// resetLocked sends RST_STREAM and closes cs; mu held.
func (cc *clientConn) resetLocked(cs *clientStream, code http2.ErrCode) {
	if !cc.closing && cs.inTable {
		cc.buf = http2core.AppendRSTStream(cc.buf, cs.id, code)
		cc.kick()
	}
	cc.closeStream(cs, localResetError(code))
}

// closeStream moves cs to closed with err and wakes its goroutines; mu held.
func (cc *clientConn) closeStream(cs *clientStream, err error) {
	if cs.err == nil {
		cs.err = err
	}
	cs.recvClosed, cs.sendClosed = true, true
	cc.remove(cs)
	if !cs.ended {
		cc.dropBuffered(&cs.streamIO)
	}
	cs.wakeRecv()
	cs.wakeSend()
}

func (cc *clientConn) maybeRemove(cs *clientStream) {
	if cs.recvClosed && cs.sendClosed {
		cc.remove(cs)
	}
}

func (cc *clientConn) remove(cs *clientStream) {
	if !cs.inTable {
		return
	}
	cs.inTable = false
	delete(cc.streams, cs.id)
	cc.releaseSlot()
}
