package h2

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// clientStream is one upstream exchange. It is pooled by the Client with
// its timer, wake channels and method values, so a round trip allocates
// nothing once warm. It is owned by the RoundTrip caller until resp.Close
// (or the error return) and by the request body goroutine while that runs;
// the last owner recycles it.
type clientStream struct {
	cl   *Client
	cc   *clientConn
	req  *message.Request
	resp *message.Response
	body clientBody

	// Guarded by cc.mu.
	streamIO
	headReady   bool
	noBody      bool // HEAD: the response has no body whatever it says
	bodyRunning bool
	// The body goroutine reads req.Body through a fence: once detached it
	// touches req no more, and a Read in progress at that moment is
	// interrupted (if the body can be) and waited for, so that the caller
	// owns req again when RoundTrip or resp.Close returns.
	bodyDetached bool
	bodyReading  bool
	refs         int

	ctxDone <-chan struct{} // nil when ctx cannot be cancelled or is watched
	ctx     context.Context
	sctx    *streamCtx // a server stream's context, watched without a goroutine
	bodyLen int64

	timer      *time.Timer
	deadline   atomic.Int64 // unix nanos of the armed deadline
	gen        atomic.Uint64
	expiredGen atomic.Uint64
	total      time.Time

	bodyIdle   chan struct{}
	closeFn    func()
	recvWaitFn func() error
	sendWaitFn func() error
}

type clientBody struct{ cs *clientStream }

var (
	errConnGoingAway = fmt.Errorf("%w: connection going away", ErrRefused)
	errTimeoutHead   = fmt.Errorf("%w: waiting for response head", ErrTimeout)
	errTimeoutBody   = fmt.Errorf("%w: exchange deadline", ErrTimeout)
)

func (c *Client) getStream() *clientStream {
	if v := c.streams.Get(); v != nil {
		return v.(*clientStream)
	}
	cs := &clientStream{cl: c, bodyIdle: make(chan struct{}, 1)}
	cs.body.cs = cs
	cs.closeFn = cs.close
	cs.recvWaitFn = cs.waitRecvWake
	cs.sendWaitFn = cs.waitSendWake
	cs.timer = time.AfterFunc(time.Hour, cs.onTimer)
	cs.timer.Stop()
	return cs
}

func (c *Client) putStream(cs *clientStream) {
	cs.cc, cs.req, cs.resp = nil, nil, nil
	cs.ctx, cs.ctxDone, cs.sctx = nil, nil, nil
	cs.err = nil
	drain(cs.bodyIdle)
	c.streams.Put(cs)
}

// RoundTrip sends req to addr and fills resp with the response head.
// resp.Body streams the response body (nil when there is none) and
// resp.Trailer is complete once it returned io.EOF; resp.Close must be called
// once the caller is done, and releases the stream (resetting it if it is
// still open). The request body, if any, is sent concurrently with the
// response (full duplex), followed by req.Trailer when set.
//
// Errors match ErrConnect, ErrRefused (not processed: safe to retry),
// ErrReset, ErrTimeout, ErrRequestBody, or ctx's error.
func (c *Client) RoundTrip(ctx context.Context, addr string, req *message.Request, resp *message.Response, dl Deadlines) error {
	p := c.pool(addr)
	for attempt := 0; ; attempt++ {
		cc, err := p.get(ctx)
		if err != nil {
			return err
		}
		cs := c.getStream()
		err = cs.start(ctx, cc, req, resp, dl)
		if err == errConnGoingAway && attempt < 3 {
			// Nothing was sent: pick (or dial) another connection.
			c.putStream(cs)
			continue
		}
		var headOnly bool
		if err == nil {
			headOnly, err = cs.awaitHead()
		}
		if err != nil {
			cs.close()
			if attempt < 3 && (req.Body == nil || req.ContentLength == 0) && (err == errGoAwayRefused || err == errPeerRefused) {
				// Not processed by the server (RFC 9113 8.7) and nothing
				// of the request is lost: try another connection.
				resp.Header.Reset()
				continue
			}
			return err
		}
		if headOnly {
			resp.Body = nil
		} else {
			resp.Body = &cs.body
		}
		resp.Close = cs.closeFn
		return nil
	}
}

func (cs *clientStream) start(ctx context.Context, cc *clientConn, req *message.Request, resp *message.Response, dl Deadlines) error {
	cs.cc, cs.req, cs.resp = cc, req, resp
	cs.ctx = ctx
	cs.headReady = false
	cs.noBody = string(req.Method) == "HEAD"
	cs.refs = 1
	cs.bodyRunning, cs.bodyDetached, cs.bodyReading = false, false, false
	cs.bodyLen = req.ContentLength
	cs.total = dl.Total
	resp.Status = 0
	resp.ContentLength = -1
	hasBody := req.Body != nil && req.ContentLength != 0

	cc.mu.Lock()
	if cc.closed || cc.closing || cc.goAway || cc.nextID >= 1<<31 {
		cc.releaseSlot()
		cc.mu.Unlock()
		return errConnGoingAway
	}
	id := cc.nextID
	cc.nextID += 2
	cc.hblock = cs.encodeRequest(cc.hblock[:0], hasBody)
	cc.appendHeaders(id, !hasBody, cc.hblock)
	cs.initIO(id, cc.streamWin, cc.peer.InitialWindow, -1, false, !hasBody)
	cc.streams[id] = cs
	cc.kick()
	if hasBody {
		cs.bodyRunning = true
		cs.refs++
	}
	cc.mu.Unlock()

	if sc, ok := ctx.(*streamCtx); ok {
		cs.sctx = sc
		if !sc.watch(cs) {
			cs.abort(context.Canceled)
		}
	} else {
		cs.ctxDone = ctx.Done()
	}
	if head := dl.Head; !head.IsZero() {
		cs.arm(head)
	} else if !dl.Total.IsZero() {
		cs.arm(dl.Total)
	}
	if hasBody {
		go cs.writeBody(req.Body)
	}
	return nil
}

// encodeRequest builds the request header block; cc.mu held.
func (cs *clientStream) encodeRequest(hb []byte, hasBody bool) []byte {
	enc := &cs.cc.enc
	req := cs.req
	hb = enc.begin(hb)
	hb = enc.fieldString(hb, ":method", req.Method)
	authority := req.Authority
	if len(authority) == 0 {
		authority, _ = req.Header.Get("host")
	}
	if string(req.Method) == "CONNECT" {
		hb = enc.fieldString(hb, ":authority", authority)
	} else {
		scheme := schemeHTTP
		if cs.cl.TLS != nil {
			scheme = schemeHTTPS
		}
		hb = enc.fieldString(hb, ":scheme", scheme)
		hb = enc.fieldString(hb, ":authority", authority)
		path := req.Path
		if len(path) == 0 {
			path = slash
		}
		hb = enc.fieldString(hb, ":path", path)
	}
	hb = appendFields(enc, hb, &req.Header)
	if hasBody && req.ContentLength > 0 && !req.Header.Has("content-length") {
		var nb [20]byte
		hb = enc.fieldString(hb, "content-length", appendInt(nb[:0], req.ContentLength))
	}
	return hb
}

var (
	schemeHTTP  = []byte("http")
	schemeHTTPS = []byte("https")
	slash       = []byte("/")
)

// arm sets the stream's deadline timer. The generation lets a timer that
// fired for an earlier use of this pooled stream be told apart.
func (cs *clientStream) arm(t time.Time) {
	cs.deadline.Store(t.UnixNano())
	cs.gen.Add(1)
	cs.timer.Reset(time.Until(t))
}

func (cs *clientStream) onTimer() {
	g := cs.gen.Load()
	if d := cs.deadline.Load(); d == 0 || time.Now().UnixNano() < d {
		return
	}
	cs.expiredGen.Store(g)
	select {
	case cs.recvWake <- struct{}{}:
	default:
	}
	select {
	case cs.sendWake <- struct{}{}:
	default:
	}
}

func (cs *clientStream) expired() bool {
	return cs.deadline.Load() != 0 && cs.expiredGen.Load() == cs.gen.Load()
}

func (cs *clientStream) disarm() {
	cs.deadline.Store(0)
	cs.gen.Add(1)
	cs.timer.Stop()
}

// waitRecvWake blocks for a receive-side event with mu released; a
// cancelled context or a passed deadline resets the stream, which the caller
// then sees as the stream's error.
func (cs *clientStream) waitRecvWake() error {
	if cs.ctxDone == nil {
		<-cs.recvWake // a plain receive is cheaper than select
	} else {
		select {
		case <-cs.recvWake:
		case <-cs.ctxDone:
			cs.abort(cs.ctx.Err())
		}
	}
	cs.checkExpired()
	return nil
}

func (cs *clientStream) waitSendWake() error {
	if cs.ctxDone == nil {
		<-cs.sendWake // a plain receive is cheaper than select
	} else {
		select {
		case <-cs.sendWake:
		case <-cs.ctxDone:
			cs.abort(cs.ctx.Err())
		}
	}
	cs.checkExpired()
	return nil
}

func (cs *clientStream) checkExpired() {
	if !cs.expired() {
		return
	}
	if cs.headReadyLocked() {
		cs.abort(errTimeoutBody)
	} else {
		cs.abort(errTimeoutHead)
	}
}

func (cs *clientStream) headReadyLocked() bool {
	cs.cc.mu.Lock()
	defer cs.cc.mu.Unlock()
	return cs.headReady
}

// abort resets the stream with CANCEL unless it already ended, and records
// err as the reason its users see.
func (cs *clientStream) abort(err error) {
	cc := cs.cc
	cc.mu.Lock()
	if cs.err == nil && !(cs.recvClosed && cs.sendClosed) {
		cs.err = err
		cc.resetLocked(cs, http2.ErrCodeCancel)
	} else if cs.err == nil && len(cs.recvBuf) > cs.recvOff {
		// Ended, but the caller has not read everything: fail its reads.
		cs.err = err
		cc.dropBuffered(&cs.streamIO)
		cs.wakeRecv()
	}
	cc.mu.Unlock()
}

// downstreamCancelled is called, under the server stream context's lock,
// when the downstream stream this exchange forwards is reset.
func (cs *clientStream) downstreamCancelled() {
	cs.abort(context.Canceled)
	cc := cs.cc
	cc.mu.Lock()
	cs.waitRecv, cs.waitSend = true, true
	cs.wakeRecv()
	cs.wakeSend()
	cc.mu.Unlock()
}

// awaitHead waits for the final response head; headOnly reports a response
// that ended with it (no body to read).
func (cs *clientStream) awaitHead() (headOnly bool, err error) {
	cc := cs.cc
	cc.mu.Lock()
	for !cs.headReady {
		if cs.err != nil {
			err := cs.err
			cc.mu.Unlock()
			return false, err
		}
		cs.waitRecv = true
		cc.mu.Unlock()
		_ = cs.waitRecvWake()
		cc.mu.Lock()
	}
	headOnly = cs.recvClosed && cs.err == nil && len(cs.recvBuf) == cs.recvOff
	cc.mu.Unlock()
	if !cs.total.IsZero() && cs.total.UnixNano() != cs.deadline.Load() {
		cs.arm(cs.total)
	} else if cs.total.IsZero() {
		cs.disarm()
	}
	return headOnly, nil
}

// Read reads the response body; trailers are in resp.Trailer at io.EOF.
func (b *clientBody) Read(p []byte) (int, error) {
	cs := b.cs
	if cs.expired() {
		cs.abort(errTimeoutBody)
	}
	return cs.cc.read(&cs.streamIO, p, cs.recvWaitFn)
}

// close is resp.Close: reset the stream if it is still open, stop the body
// copy, and release the caller's hold.
func (cs *clientStream) close() {
	cc := cs.cc
	cc.mu.Lock()
	if cs.inTable {
		if cs.err == nil {
			cs.err = errResetCancel
		}
		cc.resetLocked(cs, http2.ErrCodeCancel)
	}
	cs.readDone = true
	cc.dropBuffered(&cs.streamIO)
	cc.mu.Unlock()
	cs.detachBody()
	cs.disarm()
	if cs.sctx != nil {
		cs.sctx.unwatch(cs)
	}
	cs.release()
}

// aborter is upstream.Aborter: a body whose blocked Read can be interrupted.
type aborter interface{ Abort() }

// detachBody ends the body goroutine's use of req (see bodyDetached). A
// body that cannot be interrupted is not waited for: its Read may block on
// a client that waits for the response; its result is then dropped.
func (cs *clientStream) detachBody() {
	cc := cs.cc
	cc.mu.Lock()
	if !cs.bodyRunning || cs.bodyDetached {
		cs.bodyDetached = true
		cc.mu.Unlock()
		return
	}
	cs.bodyDetached = true
	reading := cs.bodyReading
	cc.mu.Unlock()
	if !reading {
		return
	}
	if a, ok := cs.req.Body.(aborter); ok {
		// Not under cc.mu: Abort may take the downstream connection's lock.
		a.Abort()
		<-cs.bodyIdle
	}
}

func (cs *clientStream) release() {
	cc := cs.cc
	cc.mu.Lock()
	cs.refs--
	last := cs.refs == 0
	cc.mu.Unlock()
	if last {
		cs.cl.putStream(cs)
	}
}

// writeBody copies the request body upstream, then the trailers. It reads
// body (not cs.req.Body, which the caller may change once detached) and
// looks at req only under cc.mu while not detached.
func (cs *clientStream) writeBody(body io.Reader) {
	defer cs.bodyExit()
	bp := cs.cl.getBuf()
	defer cs.cl.bufs.Put(bp)
	buf := *bp
	cc := cs.cc
	var sent int64
	for {
		cc.mu.Lock()
		if cs.bodyDetached {
			cc.mu.Unlock()
			return
		}
		cs.bodyReading = true
		cc.mu.Unlock()
		n, rerr := body.Read(buf)
		cc.mu.Lock()
		cs.bodyReading = false
		if cs.bodyDetached {
			select {
			case cs.bodyIdle <- struct{}{}:
			default:
			}
			cc.mu.Unlock()
			return
		}
		sent += int64(n)
		if rerr == io.EOF && cs.bodyLen > 0 && sent != cs.bodyLen {
			rerr = io.ErrUnexpectedEOF
		}
		if rerr != nil && rerr != io.EOF {
			cc.mu.Unlock()
			cs.abort(fmt.Errorf("%w: %w", ErrRequestBody, rerr))
			return
		}
		trailer := &cs.req.Trailer
		if n > 0 || rerr == io.EOF {
			end := rerr == io.EOF && trailer.Len() == 0
			ended, err := cc.sendData(&cs.streamIO, buf[:n], end, cs.sendWaitFn)
			if ended {
				cc.maybeRemove(cs)
			}
			if err != nil || cs.bodyDetached {
				cc.mu.Unlock()
				return
			}
		}
		if rerr == io.EOF {
			if trailer.Len() > 0 && cs.err == nil && !cs.sendClosed && !cc.closing {
				cc.hblock = cc.enc.begin(cc.hblock[:0])
				cc.hblock = appendFields(&cc.enc, cc.hblock, trailer)
				cc.appendHeaders(cs.id, true, cc.hblock)
				cs.sendClosed = true
				cc.maybeRemove(cs)
				cc.kick()
			}
			cc.mu.Unlock()
			return
		}
		cc.mu.Unlock()
	}
}

func (cs *clientStream) bodyExit() {
	cc := cs.cc
	cc.mu.Lock()
	cs.bodyRunning = false
	cc.mu.Unlock()
	cs.release()
}
