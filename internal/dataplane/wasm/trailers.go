package wasm

import (
	"context"
	"io"
	"sync"

	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Bits of omnirelay_on_stream_start's result, beside plugin.go's: the
// stream's context implements the trailer callbacks.
const (
	wantsResponseTrailers = 1 << 12
	wantsRequestTrailers  = 1 << 13
)

// Trailers are complete only once a body has been read to its end
// (message.Request/Response), which happens after the filter chain's
// request and response phases: the request body is read by the upstream
// transport (on its own goroutine for HTTP/2, concurrently with the
// response for a gRPC bidi stream), the response body by the downstream
// codec on the stream's goroutine. So the host wraps the bodies and runs
// proxy_on_request_trailers / proxy_on_response_trailers from the wrapper
// when the wrapped body reports io.EOF with trailers present, before the
// reader of the body (the transport, the codec) sends them on. The trailer
// maps are then editable (get/set/add/remove/pairs) like headers.
//
// trailerState serialises those calls with each other and with
// OnResponse: they are the only calls into the stream's instance that can
// run on two goroutines at once.
type trailerState struct {
	mu     sync.Mutex
	active bool // in a trailer callback
}

// leaveResponse ends OnResponse, which holds st.tr.mu while it runs (a
// request's trailers may arrive meanwhile): it wraps the response body for
// proxy_on_response_trailers and lets go. A deferred method call, not a
// returned closure, so that it does not allocate per response.
func (st *streamCtx) leaveResponse() {
	st.watchResponseTrailers()
	st.tr.mu.Unlock()
}

// watchRequestTrailers wraps the request body for proxy_on_request_trailers
// once OnRequest let the request through. OnRequest defers it.
func (st *streamCtx) watchRequestTrailers() {
	r := st.s.Req
	if st.local || st.in.broken != nil || st.wants&wantsRequestTrailers == 0 || st.in.fn.reqTrailers == nil || r.Body == nil {
		return
	}
	r.Body = &requestTrailers{trailerReader{r: r.Body, st: st}}
}

func (st *streamCtx) watchResponseTrailers() {
	resp := st.s.Resp
	if st.local || st.in.broken != nil || resp == nil || st.wants&wantsResponseTrailers == 0 || st.in.fn.respTrailers == nil {
		return
	}
	if resp.Body == nil {
		// Headers and trailers with no data between (HTTP/2).
		if resp.Trailer.Len() > 0 {
			st.onResponseTrailers()
		}
		return
	}
	if _, tunnel := resp.Body.(io.Writer); tunnel || resp.Status == 101 {
		return // an upgraded connection: no trailers, and the codec needs the writer
	}
	resp.Body = &trailerReader{r: resp.Body, st: st, resp: true}
}

// trailerReader calls the guest once, at the wrapped body's io.EOF.
type trailerReader struct {
	r    io.Reader
	st   *streamCtx
	resp bool
	done bool
}

func (t *trailerReader) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	if err == io.EOF && !t.done {
		t.done = true
		if t.resp {
			if t.st.s.Resp.Trailer.Len() > 0 {
				t.st.tr.mu.Lock()
				t.st.onResponseTrailers()
				t.st.tr.mu.Unlock()
			}
		} else if t.st.s.Req.Trailer.Len() > 0 {
			t.st.tr.mu.Lock()
			t.st.onRequestTrailers()
			t.st.tr.mu.Unlock()
		}
	}
	return n, err
}

// requestTrailers keeps the transport's ability to interrupt a blocked
// Read of the downstream body (upstream.Aborter).
type requestTrailers struct{ trailerReader }

var _ upstream.Aborter = (*requestTrailers)(nil)

func (t *requestTrailers) Abort() {
	if a, ok := t.r.(upstream.Aborter); ok {
		a.Abort()
	}
}

func (st *streamCtx) onRequestTrailers() {
	st.callTrailers(false)
}

func (st *streamCtx) onResponseTrailers() {
	st.callTrailers(true)
}

// callTrailers runs a trailer callback with the plugin's completion
// deadline (the watchdog's per-call deadline has no call to attach to: the
// chain's phases are over). A guest that fails breaks its instance, which
// OnComplete discards; the trailers then go on as they are (fail open:
// with the response head already sent, no policy could answer otherwise).
// A guest may pause to make a call-out, as in the other phases; a local
// response sent from here is ignored for the same reason.
func (st *streamCtx) callTrailers(resp bool) {
	in, p := st.in, st.in.p
	if in.broken != nil {
		return
	}
	parent := st.s.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, p.rt.opts.CompleteTimeout)
	defer cancel()
	// The head is sent: a local response or a close could not take effect
	// (hostSendLocalResponse, hostCloseStream refuse them meanwhile).
	st.tr.active = true
	defer func() { st.tr.active = false }()
	in.effective = st.id
	var act uint64
	var err error
	if resp {
		act, err = in.call(ctx, in.fn.respTrailers, "proxy_on_response_trailers", uint64(st.id), uint64(st.s.Resp.Trailer.Len()))
	} else {
		act, err = in.call(ctx, in.fn.reqTrailers, "proxy_on_request_trailers", uint64(st.id), uint64(st.s.Req.Trailer.Len()))
	}
	if err == nil {
		_, err = st.afterCallback(ctx, act)
	}
	if err != nil {
		p.log.Warn("wasm trailers callback failed; trailers pass unchanged", "reason", p.fail(err).Error())
	}
}
