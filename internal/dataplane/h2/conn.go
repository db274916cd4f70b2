package h2

import (
	"net"
	"runtime"
	"sync"
	"time"

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

	enc      hpackEncoder
	hblock   []byte // header block scratch, used under mu
	maxFrame int    // peer's SETTINGS_MAX_FRAME_SIZE
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
	w.maxFrame = defaultMaxFrame
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

// writeHeaders encodes and appends a header block; mu must be held. fields
// calls back with each field to encode.
func (w *connWriter) appendHeaders(id uint32, endStream bool, block []byte) {
	w.buf = appendHeaderBlock(w.buf, id, block, endStream, w.maxFrame)
}

// appendData appends DATA frames for p (already within flow control),
// splitting at the peer's max frame size.
func (w *connWriter) appendData(id uint32, p []byte, endStream bool) {
	for {
		n := len(p)
		if n > w.maxFrame {
			n = w.maxFrame
		}
		last := n == len(p)
		w.buf = appendData(w.buf, id, p[:n], endStream && last)
		p = p[n:]
		if last {
			return
		}
	}
}

// flow is one direction of a flow-control window.
type flow struct {
	// avail is what may still be sent (send side) or what the peer may
	// still send (receive side).
	avail int64
	// unacked counts consumed bytes not yet returned to the peer with a
	// WINDOW_UPDATE (receive side only).
	unacked int64
}

// credit records n consumed bytes of a receive window of size win and
// returns the WINDOW_UPDATE increment to send now (0: not yet). Updates are
// batched to a quarter of the window to keep them off the per-frame path.
func (f *flow) credit(n int64, win int64) uint32 {
	f.unacked += n
	if f.unacked < win/4 {
		return 0
	}
	inc := f.unacked
	f.unacked = 0
	f.avail += inc
	return uint32(inc)
}
