package router

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Clusters resolves cluster names in one config version.
type Clusters interface {
	Get(name string) *cluster.Cluster
}

// Router is the terminal filter: it forwards a stream to the cluster its
// route selects. One Router serves a config version; it is stateless.
type Router struct {
	Clusters Clusters
	Table    *Table
}

// maxReplayBody bounds the request body buffered so that it can be re-sent
// on retry; a request with a longer body is not retried. It stands for
// Envoy's per_request_buffer_limit_bytes, which the route compiler does not
// read.
const maxReplayBody = 64 << 10

var (
	_ filter.Terminal = (*Router)(nil)
	_ filter.Matcher  = (*Router)(nil)
)

// Match implements filter.Matcher: the chain asks the router for the route
// of each request, once, and again only after a filter cleared it.
func (rt *Router) Match(req *message.Request) *filter.Route {
	if r := rt.Table.Match(req); r != nil {
		return &r.view
	}
	return nil
}

// Serve implements filter.Terminal. The chain has matched s.Route (again,
// if a filter cleared it) before calling it.
func (rt *Router) Serve(s *filter.Stream) error {
	r := rt.Table.route(s.Route)
	if r == nil {
		s.ResponseFlags = "NR"
		s.Reply(404, "no route\n")
		return nil
	}
	switch r.Kind {
	case ActionDirect:
		s.Reply(r.Direct.Status, r.Direct.Body)
		r.ops.applyResponse(s, s.Resp)
		return nil
	case ActionRedirect:
		rt.redirect(s, r)
		return nil
	}
	name, wc := r.PickCluster()
	cl := rt.Clusters.Get(name)
	s.UpstreamCluster = name
	if cl == nil {
		s.ResponseFlags = "NC"
		s.Reply(503, "cluster not found\n")
		return nil
	}
	req := s.Req
	rt.rewrite(r, req)
	// One list, merged at compile time from the four levels.
	ops := &r.ops
	if wc != nil {
		ops = &wc.ops
	}
	ops.applyRequest(s)
	// x-forwarded-proto was set by the connection manager (package
	// forwarded): overwritten unless a trusted hop set it.
	rt.forward(s, r, cl)
	if s.Resp != nil {
		ops.applyResponse(s, s.Resp)
	}
	return nil
}

func (rt *Router) rewrite(r *Route, req *message.Request) {
	if r.PrefixRewrite != "" && r.pathKind != pathRegex {
		p := req.Path
		if len(p) >= len(r.path) {
			var buf [512]byte
			nb := append(buf[:0], r.PrefixRewrite...)
			rest := p[len(r.path):]
			if len(nb) > 0 && nb[len(nb)-1] == '/' && len(rest) > 0 && rest[0] == '/' {
				rest = rest[1:]
			}
			nb = append(nb, rest...)
			req.SetPathBytes(nb)
		}
	}
	if r.HostRewrite != "" {
		req.SetAuthority(r.HostRewrite)
	}
}

func (rt *Router) redirect(s *filter.Stream, r *Route) {
	rd := r.Redirect
	req := s.Req
	scheme := string(req.Scheme)
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host := string(req.Host())
	if rd.Host != "" {
		host = rd.Host
	}
	port := ""
	if a := string(req.Authority); rd.Host == "" && len(a) > len(host) {
		port = a[len(host):]
	}
	if rd.Port != 0 {
		port = ":" + strconv.Itoa(int(rd.Port))
	}
	if (scheme == "https" && port == ":443") || (scheme == "http" && port == ":80") {
		port = ""
	}
	path := string(req.PathOnly())
	query := ""
	if q := req.Query(); q != nil && !rd.StripQuery {
		query = "?" + string(q)
	}
	switch {
	case rd.Path != "":
		path = rd.Path
		if strings.Contains(path, "?") {
			query = ""
		}
	case rd.PrefixRewrite != "" && r.pathKind == pathPrefix:
		path = rd.PrefixRewrite + path[len(r.path):]
	}
	resp := s.LocalResponse()
	resp.Status = rd.Code
	resp.Header.Add("location", scheme+"://"+host+port+path+query)
	resp.ContentLength = 0
	s.Resp = resp
}

// forward runs the attempt loop: pick a host, send, and retry per policy.
// Timeouts are absolute deadlines handed to the transport (no per-request
// context: that would allocate on every request).
func (rt *Router) forward(s *filter.Stream, r *Route, cl *cluster.Cluster) {
	req := s.Req
	var lbc lb.Context
	lbc.Hash, lbc.HasHash = hashFor(s, r)

	ctx := s.Ctx
	timeout := r.Timeout
	upgrade := false
	if u, ok := req.Header.Get("upgrade"); ok && len(u) > 0 {
		upgrade = true
		timeout = 0 // a tunnel outlives the request timeout
	}
	if gt := grpcTimeout(req); gt > 0 && (r.useGRPCTimeout || timeout == 0 || gt < timeout) {
		if r.MaxGRPCTimeout > 0 && gt > r.MaxGRPCTimeout {
			gt = r.MaxGRPCTimeout
		}
		timeout = gt
	}
	var total time.Time
	if timeout > 0 {
		total = s.Start.Add(timeout)
	}

	policy := r.Retry
	maxRetries := 0
	if policy != nil && !upgrade {
		maxRetries = policy.NumRetries
	}
	var replay *replayBody
	replayLent := false // to the response's release: the transport may still read it
	if maxRetries > 0 && req.Body != nil && req.ContentLength != 0 {
		replay = getReplay(req.Body, maxReplayBody, req.ContentLength)
		req.Body = replay
	}
	defer func() {
		if replay != nil {
			req.Body = replay.src
			if !replayLent {
				putReplay(replay)
			}
		}
	}()

	tr := cl.Transport(req.ProtoMajor == 2)
	resp := s.LocalResponse()
	retryHeld := false
	defer func() {
		if retryHeld {
			cl.Breaker.ReleaseRetry()
		}
	}()
	for attempt := 1; ; attempt++ {
		s.Attempts = attempt
		ep := cl.Pick(&lbc)
		if ep == nil {
			s.ResponseFlags = "UH"
			s.Reply(503, "no healthy upstream\n")
			return
		}
		if !cl.Breaker.TryAcquireRequest() {
			cl.Stats.Overflow("requests")
			s.ResponseFlags = upstream.FailOverflow.ResponseFlag()
			s.Reply(503, "upstream overflow\n")
			return
		}
		s.UpstreamHost = ep.Address
		ep.Active.Add(1)
		ep.Total.Add(1)

		dl := upstream.Deadlines{Head: total, Total: total}
		if policy != nil && policy.PerTryTimeout > 0 && !upgrade {
			if t := time.Now().Add(policy.PerTryTimeout); total.IsZero() || t.Before(total) {
				dl.Head = t
			}
		}
		resp.Reset()
		at := s.Trace.StartAttempt(req, cl.Name, ep.Address) // telemetry: client span, propagation headers
		err := tr.RoundTrip(ctx, ep, req, resp, dl)
		at.EndAttempt(resp.Status, resp, err)
		if retryHeld {
			cl.Breaker.ReleaseRetry()
			retryHeld = false
		}
		if err != nil {
			ep.Active.Add(-1)
			cl.Breaker.ReleaseRequest()
			if errors.Is(err, upstream.ErrRequestBody) {
				// The client sent a broken body (bad chunked framing, closed
				// early): answer it, and neither retry nor blame the host.
				s.ResponseFlags = "DPE"
				status := 400
				var pe *http1.Error
				if errors.As(err, &pe) {
					status = pe.Status
				}
				s.Reply(status, "malformed request body\n")
				return
			}
			kind := upstream.FailureOf(err)
			cl.ReportFailure(ep, kind)
			expired := !total.IsZero() && !time.Now().Before(total)
			if expired || ctx.Err() != nil {
				kind = upstream.FailTimeout
			}
			retry := !expired && ctx.Err() == nil && policy != nil && attempt <= maxRetries && policy.retryOnError(kind) && replay.rewind()
			if retry && cl.Breaker.TryAcquireRetry() {
				retryHeld = true
				cl.Stats.Retries.Inc()
				if sleepUntil(ctx, policy.backoff(attempt, rand.Uint64N), total) {
					continue
				}
				kind = upstream.FailTimeout
			} else if retry {
				cl.Stats.Overflow("retries")
			}
			s.ResponseFlags = kind.ResponseFlag()
			switch kind {
			case upstream.FailTimeout:
				s.Reply(504, "upstream request timeout\n")
			case upstream.FailConnect:
				s.Reply(503, "upstream connect error\n")
			case upstream.FailOverflow:
				s.Reply(503, "upstream overflow\n")
			default:
				s.Reply(503, "upstream reset before response\n")
			}
			return
		}
		cl.Stats.Response(resp.Status)
		cl.ReportStatus(ep, resp.Status)
		// A response that ends the exchange while the request body is still
		// streaming (HTTP/2) is not retried: the body could not be replayed.
		if policy != nil && attempt <= maxRetries && policy.retryOnStatus(resp.Status, grpcStatusOf(resp)) && replay.complete() {
			if cl.Breaker.TryAcquireRetry() {
				closeResp(resp) // the transport lets go of the body: rewind is safe now
				replay.rewind()
				ep.Active.Add(-1)
				cl.Breaker.ReleaseRequest()
				retryHeld = true
				cl.Stats.Retries.Inc()
				if sleepUntil(ctx, policy.backoff(attempt, rand.Uint64N), total) {
					continue
				}
				s.ResponseFlags = upstream.FailTimeout.ResponseFlag()
				s.Reply(504, "upstream request timeout\n")
				return
			}
			cl.Stats.Overflow("retries")
		}
		// Success (or a final upstream error status): the response streams
		// downstream; its Close releases the host and the breaker slot.
		done := getRelease(resp.Close, ep, cl)
		if replay != nil {
			done.replay, replayLent = replay, true
		}
		resp.Close = done.fn
		s.Resp = resp
		return
	}
}

func noop() {}

func closeResp(resp *message.Response) {
	if resp.Close != nil {
		resp.Close()
		resp.Close = nil
	}
}

// release undoes what an attempt acquired once the response has been
// written downstream. It is pooled: a closure per request would allocate.
type release struct {
	next   func()
	ep     *endpoint.Endpoint
	cl     *cluster.Cluster
	replay *replayBody // returned to its pool once next (the transport's close) ran
	fn     func()
}

var releasePool sync.Pool

func init() {
	// Set here: the pool's New refers to run, which puts back into the pool.
	releasePool.New = func() any {
		r := &release{}
		r.fn = r.run
		return r
	}
}

func getRelease(next func(), ep *endpoint.Endpoint, cl *cluster.Cluster) *release {
	r := releasePool.Get().(*release)
	r.next, r.ep, r.cl = next, ep, cl
	return r
}

func (r *release) run() {
	if r.next != nil {
		r.next()
	}
	if r.replay != nil {
		putReplay(r.replay)
	}
	r.ep.Active.Add(-1)
	r.cl.Breaker.ReleaseRequest()
	*r = release{fn: r.fn}
	releasePool.Put(r)
}

func (p *RetryPolicy) retryOnError(f upstream.Failure) bool {
	switch f {
	case upstream.FailConnect:
		return p.on&(retryConnectFailure|retry5xx|retryGatewayError) != 0
	case upstream.FailReset:
		return p.on&(retryReset|retry5xx|retryGatewayError) != 0
	case upstream.FailRefused:
		return p.on&(retryRefusedStream|retryReset|retry5xx|retryGatewayError) != 0
	case upstream.FailTimeout:
		// Only a per-try timeout is retried; the caller turns an expired
		// request deadline into a 504 before asking.
		return p.on&(retry5xx|retryGatewayError) != 0
	}
	return false
}

// sleepUntil waits d (the retry backoff) unless ctx ends or the request
// deadline comes first; it reports whether the retry may go ahead.
func sleepUntil(ctx context.Context, d time.Duration, deadline time.Time) bool {
	if !deadline.IsZero() && time.Now().Add(d).After(deadline) {
		return false
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func grpcStatusOf(resp *message.Response) int {
	v, ok := resp.Header.Get("grpc-status")
	if !ok {
		return -1
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// grpcTimeout parses a grpc-timeout header ("100m", "5S", ...).
func grpcTimeout(req *message.Request) time.Duration {
	v, ok := req.Header.Get("grpc-timeout")
	if !ok || len(v) < 2 || len(v) > 9 {
		return 0
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0
	}
	return time.Duration(n) * unit
}

func hashFor(s *filter.Stream, r *Route) (uint64, bool) {
	var h uint64
	found := false
	for _, hp := range r.Hash {
		var v []byte
		var ok bool
		if hp.SourceIP {
			a := s.Downstream.RemoteAddr.Addr().As16()
			v, ok = a[:], s.Downstream.RemoteAddr.IsValid()
		} else {
			v, ok = s.Req.Header.Get(hp.Header)
		}
		if !ok {
			continue
		}
		x := lb.HashBytes(v)
		if found {
			h = (h << 1) | (h >> 63) // combine like Envoy: rotate then xor
			h ^= x
		} else {
			h = x
		}
		found = true
		if hp.Terminal {
			break
		}
	}
	return h, found
}

// replayBody records what the first attempt read so that a retry can send
// the same body again; past max bytes it stops recording and the body can no
// longer be replayed (the retry is then skipped).
type replayBody struct {
	src      io.Reader
	buf      []byte
	max      int
	pos      int // read position in buf while replaying
	overflow bool
	want     int64 // the request's content-length, -1 when unknown
	read     int64
	// eof is read by the router while an HTTP/2 transport may still be
	// reading on its own goroutine (complete), hence atomic.
	eof     atomic.Bool
	aborted bool // src was interrupted (Abort): it cannot be read further
}

var _ upstream.Aborter = (*replayBody)(nil)

var replayPool = sync.Pool{New: func() any { return &replayBody{} }}

func getReplay(src io.Reader, max int, contentLength int64) *replayBody {
	r := replayPool.Get().(*replayBody)
	r.src, r.buf, r.max, r.pos, r.overflow, r.aborted = src, r.buf[:0], max, 0, false, false
	r.want, r.read = contentLength, 0
	r.eof.Store(false)
	return r
}

func putReplay(r *replayBody) {
	r.src = nil
	replayPool.Put(r)
}

func (r *replayBody) Read(p []byte) (int, error) {
	if r.pos < len(r.buf) {
		n := copy(p, r.buf[r.pos:])
		r.pos += n
		return n, nil
	}
	if r.eof.Load() {
		return 0, io.EOF
	}
	n, err := r.src.Read(p)
	if n > 0 && !r.overflow {
		if len(r.buf)+n > r.max {
			r.overflow = true
		} else {
			r.buf = append(r.buf, p[:n]...)
			r.pos = len(r.buf)
		}
	}
	r.read += int64(n)
	// A transport that knows the length stops reading at it, without the
	// EOF: the declared length is the end too.
	if err == io.EOF || (r.want >= 0 && r.read >= r.want) {
		r.eof.Store(true)
	}
	return n, err
}

// Abort implements upstream.Aborter by interrupting the downstream body.
func (r *replayBody) Abort() {
	r.aborted = true
	if a, ok := r.src.(upstream.Aborter); ok {
		a.Abort()
	}
}

// complete reports whether the whole body has been read (or there is none),
// so that a retry would not depend on a transport still reading it.
func (r *replayBody) complete() bool { return r == nil || r.eof.Load() && !r.overflow }

// rewind prepares a replay and reports whether one is possible. A nil
// receiver (no body) can always be "replayed". It must not run while a
// transport still reads the body (after RoundTrip failed or resp.Close).
func (r *replayBody) rewind() bool {
	if r == nil {
		return true
	}
	if r.overflow || (r.aborted && !r.eof.Load()) {
		return false
	}
	r.pos = 0
	return true
}
