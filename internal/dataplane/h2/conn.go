package h2

import (
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// connWriter is the write half shared by server and client connections.
// Every goroutine that has frames to send appends them to buf under mu and
// kicks the writer goroutine; the writer first yields so that every stream
// that is already runnable gets to append its frames, then takes the whole
// buffer and writes it with one syscall. Under load one write carries the
// frames of many streams (HAProxy's event loop gets the same effect by
// flushing once per loop iteration).
//
// mu is the connection's only mutex: it also guards the stream table, flow
// control windows and the HPACK encoder, so that frames are appended in an
// order consistent with the state they reflect.
type connWriter struct {
	mu sync.Mutex
	nc net.Conn

	buf    []byte // frames waiting for the writer; guarded by mu
	spare  []byte
	queued bool  // the writer has been kicked and has not taken buf yet
	werr   error // first write error; guarded by mu
	// closing asks the writer to flush what is buffered and exit.
	closing bool
	wake    chan struct{}
	done    chan struct{}
	// drained is signalled (with mu) each time the writer takes buf, for
	// stream writers waiting for the buffer to shrink below highWater.
	drained sync.Cond

	enc    hpackEncoder
	hblock []byte                 // header block scratch, used under mu
	peer   http2core.PeerSettings // initial stream window and frame size the peer asked for

	// Flow control, guarded by mu.
	send        http2core.SendWindow // connection send window
	recv        http2core.RecvWindow // connection receive window
	connWin     int64                // our connection receive window size
	streamWin   int64                // our stream receive window size
	connWaiters []*streamIO
}

// highWater bounds buffered DATA: stream writers wait above it, so a peer
// that stops reading cannot make the buffer grow without limit. Control
// frames are never held back.
const highWater = 256 << 10

func (w *connWriter) init(nc net.Conn) {
	w.nc = nc
	w.buf = make([]byte, 0, 16<<10)
	w.spare = make([]byte, 0, 16<<10)
	w.wake = make(chan struct{}, 1)
	w.done = make(chan struct{})
	w.drained.L = &w.mu
	w.enc = newHpackEncoder()
	w.peer = http2core.DefaultPeerSettings()
	w.send.Set(http2core.DefaultWindow)
}

// kick schedules a flush; mu must be held.
func (w *connWriter) kick() {
	if w.queued || len(w.buf) == 0 {
		return
	}
	w.queued = true
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// waitRoom blocks, with mu held, while the buffer is above highWater. It
// reports false once writing has failed or the connection is closing.
func (w *connWriter) waitRoom() bool {
	for len(w.buf) >= highWater && w.werr == nil && !w.closing {
		w.kick()
		w.drained.Wait()
	}
	return w.werr == nil && !w.closing
}

// closeWrite asks the writer to flush and stop; mu must be held. The final
// flush is bounded so that a peer that does not read cannot hold the
// connection open.
func (w *connWriter) closeWrite() {
	if w.closing {
		return
	}
	w.closing = true
	_ = w.nc.SetWriteDeadline(time.Now().Add(time.Second))
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *connWriter) writeLoop() {
	defer close(w.done)
	for range w.wake {
		// Let every runnable stream goroutine append its frames before the
		// syscall: this is what turns many small writes into one.
		runtime.Gosched()
		w.mu.Lock()
		b := w.buf
		w.buf = w.spare[:0]
		w.spare = nil
		w.queued = false
		closing := w.closing
		w.drained.Broadcast()
		w.mu.Unlock()
		var err error
		if len(b) > 0 {
			_, err = w.nc.Write(b)
		}
		w.mu.Lock()
		if cap(b) > 1<<20 {
			b = make([]byte, 0, 16<<10) // let a burst's buffer go
		}
		w.spare = b[:0]
		if err != nil && w.werr == nil {
			w.werr = err
		}
		w.drained.Broadcast()
		w.mu.Unlock()
		if err != nil || closing {
			return
		}
	}
}

// appendHeaders appends an encoded header block, split at the peer's max
// frame size; mu must be held.
func (w *connWriter) appendHeaders(id uint32, endStream bool, block []byte) {
	w.buf = http2core.AppendHeaderBlock(w.buf, id, block, endStream, w.peer.MaxFrameSize)
}

// appendData appends DATA frames for p (already within flow control),
// splitting at the peer's max frame size.
func (w *connWriter) appendData(id uint32, p []byte, endStream bool) {
	for {
		n := min(len(p), w.peer.MaxFrameSize)
		last := n == len(p)
		w.buf = http2core.AppendData(w.buf, id, p[:n], endStream && last)
		p = p[n:]
		if last {
			return
		}
	}
}

// streamIO is the part of a stream shared by server and client: receive
// buffer, flow-control windows and the wake-ups of goroutines blocked on
// them. All fields are guarded by the connection's mu.
type streamIO struct {
	id         uint32
	inTable    bool
	err        error // set once the stream is reset or the connection died
	recvClosed bool  // END_STREAM received (or the stream is closed)
	ended      bool  // END_STREAM really received: the body is complete
	sendClosed bool  // END_STREAM sent (or the stream is closed)
	readDone   bool  // the body will not be read any more
	recvBuf    []byte
	recvOff    int
	recvFlow   http2core.RecvWindow
	sendFlow   http2core.SendWindow
	declLen    int64 // content-length, -1 if absent
	gotLen     int64
	waitRecv   bool
	waitSend   bool
	recvWake   chan struct{}
	sendWake   chan struct{}
}

func (s *streamIO) initIO(id uint32, recvWin, sendWin int64, declLen int64, recvClosed, sendClosed bool) {
	s.id = id
	s.inTable = true
	s.err = nil
	s.recvClosed, s.sendClosed = recvClosed, sendClosed
	s.ended = recvClosed
	s.readDone = false
	if cap(s.recvBuf) > 64<<10 {
		s.recvBuf = nil
	}
	s.recvBuf, s.recvOff = s.recvBuf[:0], 0
	s.recvFlow.Set(recvWin)
	s.sendFlow.Set(sendWin)
	s.declLen, s.gotLen = declLen, 0
	s.waitRecv, s.waitSend = false, false
	if s.recvWake == nil {
		s.recvWake = make(chan struct{}, 1)
		s.sendWake = make(chan struct{}, 1)
	}
	drain(s.recvWake)
	drain(s.sendWake)
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func (s *streamIO) wakeRecv() {
	if s.waitRecv {
		s.waitRecv = false
		select {
		case s.recvWake <- struct{}{}:
		default:
		}
	}
}

func (s *streamIO) wakeSend() {
	if s.waitSend {
		s.waitSend = false
		select {
		case s.sendWake <- struct{}{}:
		default:
		}
	}
}

func (w *connWriter) creditConn(n int64) {
	if inc := w.recv.Credit(n, http2core.UpdateThreshold(w.connWin)); inc > 0 && !w.closing {
		w.buf = http2core.AppendWindowUpdate(w.buf, 0, inc)
		w.kick()
	}
}

func (w *connWriter) creditStream(s *streamIO, n int64) {
	if s.recvClosed {
		return
	}
	if inc := s.recvFlow.Credit(n, http2core.UpdateThreshold(w.streamWin)); inc > 0 && !w.closing {
		w.buf = http2core.AppendWindowUpdate(w.buf, s.id, inc)
		w.kick()
	}
}

// dropBuffered returns unread bytes of a closing stream to the connection
// window; mu held.
func (w *connWriter) dropBuffered(s *streamIO) {
	if n := len(s.recvBuf) - s.recvOff; n > 0 {
		w.creditConn(int64(n))
	}
	s.recvBuf, s.recvOff = s.recvBuf[:0], 0
}

// recvCheck is the outcome of accepting a DATA frame on an open stream.
type recvCheck uint8

const (
	recvOK recvCheck = iota
	recvFlowError
	recvLengthError
)

// receive accepts one DATA frame's payload (flen counts padding); mu held.
// The connection window was already charged by the caller.
func (w *connWriter) receive(s *streamIO, data []byte, flen int64) recvCheck {
	if !s.recvFlow.Take(flen) {
		w.creditConn(flen)
		return recvFlowError
	}
	// Padding is flow-controlled but never reaches the reader: return it now.
	if pad := flen - int64(len(data)); pad > 0 {
		w.creditConn(pad)
		w.creditStream(s, pad)
	}
	s.gotLen += int64(len(data))
	if s.declLen >= 0 && s.gotLen > s.declLen {
		w.creditConn(int64(len(data)))
		return recvLengthError
	}
	if s.readDone {
		// Nobody will read: keep the windows open without buffering.
		w.creditConn(int64(len(data)))
		w.creditStream(s, int64(len(data)))
	} else if len(data) > 0 {
		if s.recvOff > 0 && s.recvOff >= len(s.recvBuf)/2 {
			n := copy(s.recvBuf, s.recvBuf[s.recvOff:])
			s.recvBuf, s.recvOff = s.recvBuf[:n], 0
		}
		s.recvBuf = append(s.recvBuf, data...)
	}
	s.wakeRecv()
	return recvOK
}

// read copies buffered body bytes into p, blocking until there are some or
// the stream ends. wait is called, with mu released, to block; it returns a
// non-nil error to give up (a cancelled context, a timeout). The last bytes
// come with io.EOF when the end of the stream is already known.
func (w *connWriter) read(s *streamIO, p []byte, wait func() error) (int, error) {
	w.mu.Lock()
	for {
		if s.readDone {
			w.mu.Unlock()
			return 0, ErrStreamClosed
		}
		if n := len(s.recvBuf) - s.recvOff; n > 0 {
			k := copy(p, s.recvBuf[s.recvOff:])
			s.recvOff += k
			if s.recvOff == len(s.recvBuf) {
				s.recvBuf, s.recvOff = s.recvBuf[:0], 0
			}
			w.creditConn(int64(k))
			w.creditStream(s, int64(k))
			var err error
			if len(s.recvBuf) == 0 && (s.ended || s.recvClosed && s.err == nil) {
				err = io.EOF
			}
			w.mu.Unlock()
			return k, err
		}
		if s.err != nil && !s.ended {
			err := s.err
			w.mu.Unlock()
			return 0, err
		}
		if s.recvClosed {
			w.mu.Unlock()
			return 0, io.EOF
		}
		s.waitRecv = true
		w.mu.Unlock()
		var werr error
		if wait == nil {
			<-s.recvWake
		} else {
			werr = wait()
		}
		w.mu.Lock()
		if werr != nil {
			s.waitRecv = false
			w.mu.Unlock()
			return 0, werr
		}
	}
}

// sendData writes p as DATA frames within the flow-control windows, the
// last with END_STREAM if endStream; mu held on entry and exit (released
// while blocked). It reports whether END_STREAM was sent.
func (w *connWriter) sendData(s *streamIO, p []byte, endStream bool, wait func() error) (ended bool, err error) {
	for {
		if s.err != nil {
			return false, s.err
		}
		if s.sendClosed || w.closing {
			return false, ErrStreamClosed
		}
		if len(p) == 0 {
			if endStream {
				w.buf = http2core.AppendData(w.buf, s.id, nil, true)
				s.sendClosed = true
				w.kick()
			}
			return endStream, nil
		}
		if len(w.buf) >= highWater {
			w.waitRoom()
			continue
		}
		n := min(int64(len(p)), s.sendFlow.Avail(), w.send.Avail(), int64(w.peer.MaxFrameSize))
		if n <= 0 {
			if w.send.Avail() <= 0 {
				w.connWaiters = append(w.connWaiters, s)
			}
			s.waitSend = true
			w.mu.Unlock()
			var werr error
			if wait == nil {
				<-s.sendWake
			} else {
				werr = wait()
			}
			w.mu.Lock()
			if werr != nil {
				s.waitSend = false
				return false, werr
			}
			continue
		}
		last := n == int64(len(p))
		w.buf = http2core.AppendData(w.buf, s.id, p[:n], endStream && last)
		s.sendFlow.Consume(n)
		w.send.Consume(n)
		p = p[n:]
		w.kick()
		if last {
			if endStream {
				s.sendClosed = true
			}
			return endStream, nil
		}
	}
}

// growSendWindows applies a change of the peer's SETTINGS_INITIAL_WINDOW_SIZE
// to every open stream's send window and wakes their writers; mu held. A
// window past 2^31-1 is a connection error.
func growSendWindows[S interface{ io() *streamIO }](streams map[uint32]S, delta int64) error {
	for _, st := range streams {
		s := st.io()
		if !s.sendFlow.Grow(delta) {
			return http2core.ErrStreamWindowOverflow
		}
		s.wakeSend()
	}
	return nil
}

func (s *streamIO) io() *streamIO { return s }

// windowUpdate applies a WINDOW_UPDATE for the connection (s == nil) or a
// stream; mu held. It reports a window overflow.
func (w *connWriter) windowUpdate(s *streamIO, inc int64) bool {
	if s == nil {
		if !w.send.Grow(inc) {
			return false
		}
		for i, ws := range w.connWaiters {
			ws.wakeSend()
			w.connWaiters[i] = nil
		}
		w.connWaiters = w.connWaiters[:0]
		return true
	}
	if !s.sendFlow.Grow(inc) {
		return false
	}
	s.wakeSend()
	return true
}
