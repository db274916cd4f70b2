package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderField is one header of an HTTP call-out, pseudo-headers included
// (":method", ":path", ":authority" on the request, ":status" on the
// response).
type HeaderField struct{ Name, Value string }

// HTTPCallRequest is a plugin's proxy_http_call.
type HTTPCallRequest struct {
	// Upstream is the cluster the plugin named.
	Upstream          string
	Headers, Trailers []HeaderField
	Body              []byte
	Timeout           time.Duration
}

// HTTPCallResponse is what the plugin receives in
// proxy_on_http_call_response.
type HTTPCallResponse struct {
	Headers, Trailers []HeaderField
	Body              []byte
}

// HTTPCaller performs call-outs. It is called on its own goroutine and must
// honour ctx (the calling stream's deadline).
type HTTPCaller func(ctx context.Context, req HTTPCallRequest) (HTTPCallResponse, error)

// maxCallBody bounds a call-out response body.
const maxCallBody = 1 << 20

// DirectHTTPCall treats the upstream as a host:port and sends the request
// over plain HTTP/1.1. It is the default of a bare Runtime (tests, embedders
// with no clusters); the proxy passes a ClusterCaller instead, which accepts
// cluster names only.
func DirectHTTPCall(ctx context.Context, req HTTPCallRequest) (HTTPCallResponse, error) {
	var method, path, authority string
	h := http.Header{}
	for _, f := range req.Headers {
		switch f.Name {
		case ":method":
			method = f.Value
		case ":path":
			path = f.Value
		case ":authority":
			authority = f.Value
		case ":scheme":
		default:
			h.Add(f.Name, f.Value)
		}
	}
	if method == "" || path == "" {
		return HTTPCallResponse{}, errors.New("http call: :method and :path are required")
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+req.Upstream+path, bytes.NewReader(req.Body))
	if err != nil {
		return HTTPCallResponse{}, fmt.Errorf("http call to %q: %w", req.Upstream, err)
	}
	hr.Header = h
	if authority != "" {
		hr.Host = authority
	}
	resp, err := http.DefaultTransport.RoundTrip(hr)
	if err != nil {
		return HTTPCallResponse{}, fmt.Errorf("http call to %q: %w", req.Upstream, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCallBody))
	if err != nil {
		return HTTPCallResponse{}, fmt.Errorf("http call to %q: read body: %w", req.Upstream, err)
	}
	out := HTTPCallResponse{Body: body}
	out.Headers = append(out.Headers, HeaderField{":status", strconv.Itoa(resp.StatusCode)})
	for k, vs := range resp.Header {
		for _, v := range vs {
			out.Headers = append(out.Headers, HeaderField{strings.ToLower(k), v})
		}
	}
	for k, vs := range resp.Trailer {
		for _, v := range vs {
			out.Trailers = append(out.Trailers, HeaderField{strings.ToLower(k), v})
		}
	}
	return out, nil
}

// callResult is a finished call-out, waiting to be delivered to the guest.
type callResult struct {
	token             uint32
	headers, trailers []pair
	body              []byte
}

func toPairs(fs []HeaderField) []pair {
	ps := make([]pair, len(fs))
	for i, f := range fs {
		ps[i] = pair{[]byte(f.Name), []byte(f.Value)}
	}
	return ps
}

func fromPairs(ps []pair) []HeaderField {
	fs := make([]HeaderField, len(ps))
	for i, p := range ps {
		fs[i] = HeaderField{strings.ToLower(string(p.Name)), string(p.Value)}
	}
	return fs
}

// maxPendingCalls bounds the call-outs of one stream.
const maxPendingCalls = 16

// hostHTTPCall starts a call-out from a stream context; the response is
// delivered while the guest has paused the stream (see afterCallback).
// Call-outs from the root context are not supported.
func hostHTTPCall(ctx context.Context, in *instance, a []uint64) uint32 {
	up, ok1 := in.read(u32(a[0]), u32(a[1]))
	hdrs, ok2 := in.read(u32(a[2]), u32(a[3]))
	body, ok3 := in.read(u32(a[4]), u32(a[5]))
	trls, ok4 := in.read(u32(a[6]), u32(a[7]))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return statusInvalidMemoryAccess
	}
	// In Envoy a call belongs to the root context whatever the effective
	// context; here a call made while a stream is served is that stream's
	// (delivered while it is paused), one made on the background instance
	// the root's.
	st := in.st
	if st == nil && in.rootCalls == nil {
		return statusUnimplemented // root calls only from ticks and queue notifications
	}
	if (st != nil && st.pending >= maxPendingCalls) || (st == nil && in.rootPending >= maxPendingCalls) {
		return statusInternalFailure
	}
	if known := in.p.rt.opts.KnownUpstream; known != nil && !known(string(up)) {
		return statusBadArgument // no cluster of that name: Envoy answers the same
	}
	hp, err := parseMap(hdrs, nil)
	if err != nil {
		return statusSerializationFailed
	}
	tp, err := parseMap(trls, nil)
	if err != nil {
		return statusSerializationFailed
	}
	req := HTTPCallRequest{
		Upstream: string(up),
		Headers:  fromPairs(hp),
		Trailers: fromPairs(tp),
		Body:     append([]byte(nil), body...),
		Timeout:  time.Duration(u32(a[8])) * time.Millisecond,
	}
	var tok uint32
	var ch chan callResult
	parent := ctx
	if st != nil {
		if st.calls == nil {
			st.calls = make(chan callResult, maxPendingCalls)
		}
		in.nextTok++
		tok, ch = in.nextTok, st.calls
		st.pending++
		// The call lives as long as the stream, not the guest call that
		// made it (whose deadline is for guest work): bounded by its own
		// timeout and the pause limit.
		parent = st.s.Ctx
		if parent == nil {
			parent = context.Background()
		}
		if req.Timeout == 0 || req.Timeout > in.p.rt.opts.PauseTimeout {
			req.Timeout = in.p.rt.opts.PauseTimeout
		}
	} else {
		// A root call outlives the tick that made it, not the plugin.
		in.nextTok++
		tok, ch = in.nextTok, in.rootCalls
		in.rootPending++
		parent = in.p.bgCtx
		if req.Timeout == 0 || req.Timeout > warmTimeout {
			req.Timeout = warmTimeout
		}
	}
	if !in.mem.WriteUint32Le(u32(a[9]), tok) {
		return statusInvalidMemoryAccess
	}
	caller, log := in.p.rt.opts.HTTPCall, in.p.log
	go func() {
		resp, err := caller(parent, req)
		r := callResult{token: tok}
		if err != nil {
			// The ABI reports a failed call as a response with no headers.
			log.Warn("wasm http call failed", "upstream", req.Upstream, "reason", err.Error())
		} else {
			r.headers, r.trailers, r.body = toPairs(resp.Headers), toPairs(resp.Trailers), resp.Body
		}
		select {
		case ch <- r: // buffered for maxPendingCalls: never blocks
		case <-parent.Done(): // a root call's plugin closed
		}
	}()
	return statusOK
}
