package telemetry

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Propagation is a set of header formats read from requests (in order:
// W3C first) and written to upstream requests.
type Propagation uint8

const (
	// W3C is traceparent/tracestate.
	W3C Propagation = 1 << iota
	// B3 is the single "b3" header.
	B3
	// B3Multi is the X-B3-* headers.
	B3Multi
)

// TenantKind says where a request's tenant comes from.
type TenantKind uint8

const (
	// TenantNone puts every request in DefaultTenant.
	TenantNone TenantKind = iota
	// TenantHeader reads a request header.
	TenantHeader
	// TenantTrustDomain takes the trust domain of the caller's SPIFFE ID.
	TenantTrustDomain
	// TenantSPIFFEID takes the caller's whole SPIFFE ID.
	TenantSPIFFEID
	// TenantRouteMetadata takes a value compiled from the route's (or its
	// virtual host's) metadata.
	TenantRouteMetadata
	// TenantCEL evaluates a CEL expression.
	TenantCEL
)

// TenantSource derives a request's tenant.
type TenantSource struct {
	Kind   TenantKind
	Header string // lower-case, for TenantHeader
	// ByRoute maps route names to tenants, for TenantRouteMetadata.
	ByRoute map[string]string
	// Expr evaluates the tenant for TenantCEL.
	Expr *TenantExpr
}

// TracerConfig is one listener's telemetry settings in one config version.
type TracerConfig struct {
	Listener string
	// Spans enables tracing (server and client spans, propagation).
	Spans   bool
	Sampler Sampler
	// RouteSamplers override Sampler per route name.
	RouteSamplers map[string]Sampler
	Propagation   Propagation
	// Logs emits one OTLP log record per request.
	Logs bool
	// Metrics records the request-duration instruments over OTLP.
	Metrics bool
	Tenant  TenantSource
}

// Tracer is the request-path side of one listener's telemetry. It is
// immutable and shared by every stream of its config version; a nil
// *Tracer means telemetry off, and every method is safe to call on nil.
type Tracer struct {
	p   *Pipeline
	cfg TracerConfig
}

// NewTracer compiles cfg for pipeline p.
func NewTracer(p *Pipeline, cfg TracerConfig) *Tracer {
	if cfg.Propagation == 0 {
		cfg.Propagation = W3C
	}
	if cfg.Sampler.Kind == 0 {
		cfg.Sampler, _ = NewSampler(ParentBased, 1)
	}
	return &Tracer{p: p, cfg: cfg}
}

const maxAttempts = 16

// Span is one request's telemetry state: the server span and, through
// children, the client spans of its upstream attempts. It is pooled; the
// request path records plain values into it and the export worker turns
// them into SDK spans, log records and metric measurements, so the request
// path never builds attribute sets or SDK objects.
type Span struct {
	tr        *Tracer
	sc        SpanContext
	parent    SpanID
	hasParent bool
	recording bool // exported as a span
	inject    bool // upstream needs headers written (new or changed context)
	logIt     bool
	client    bool
	start     time.Time
	end       time.Time
	tenant    *Tenant

	arena      []byte
	method     []byte
	path       []byte
	authority  []byte
	tracestate []byte
	userAgent  []byte
	requestID  []byte
	proto      uint8 // 10, 11 or 20
	scheme     uint8 // 0 none, 1 http, 2 https

	status     int
	grpcStatus int
	errType    string
	route      string
	cluster    string
	host       string
	attempt    int
	flags      string
	bytesSent  int64
	bytesRecv  int64
	attempts   int
	remote     netip.AddrPort
	peer       string

	children  [maxAttempts]*Span
	nChildren int
	hdr       [64]byte
}

var spanPool = sync.Pool{New: func() any { return &Span{arena: make([]byte, 0, 256)} }}

func getSpan(t *Tracer) *Span {
	s := spanPool.Get().(*Span)
	s.tr = t
	return s
}

func putSpan(s *Span) {
	for i := 0; i < s.nChildren; i++ {
		putSpan(s.children[i])
	}
	arena := s.arena[:0]
	*s = Span{arena: arena}
	spanPool.Put(s)
}

// TraceID returns the request's trace id (zero for a nil span).
func (s *Span) TraceID() TraceID {
	if s == nil {
		return TraceID{}
	}
	return s.sc.TraceID
}

// SpanID returns the id of the proxy's server span when it is recorded, or
// the caller's span id that the proxy forwards otherwise.
func (s *Span) SpanID() SpanID {
	if s == nil {
		return SpanID{}
	}
	return s.sc.SpanID
}

// Recording reports whether the server span will be exported.
func (s *Span) Recording() bool { return s != nil && s.recording }

func (s *Span) keep(b []byte) []byte {
	n := len(s.arena)
	s.arena = append(s.arena, b...)
	return s.arena[n:len(s.arena):len(s.arena)]
}

func randTraceID() TraceID {
	var t TraceID
	for !t.IsValid() {
		putU64(t[:8], rand.Uint64())
		putU64(t[8:], rand.Uint64())
	}
	return t
}

func randSpanID() SpanID {
	var s SpanID
	for !s.IsValid() {
		putU64(s[:], rand.Uint64())
	}
	return s
}

func putU64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
	b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// extract reads the caller's context. A malformed traceparent (and the
// tracestate that goes with it) is removed from the request: it is never
// forwarded as it came. An invalid tracestate beside a valid traceparent is
// removed alone.
func (t *Tracer) extract(h *message.Headers) (sc SpanContext, ok, fromW3C bool) {
	if v, has := h.Get(hdrTraceparent); has {
		if sc, ok = ParseTraceparent(v); ok && h.Count(hdrTraceparent) == 1 {
			if ts, hasTS := h.Get(hdrTracestate); hasTS && (!ValidTracestate(ts) || h.Count(hdrTracestate) > 1) {
				h.Del(hdrTracestate)
			}
			return sc, true, true
		}
		h.Del(hdrTraceparent)
		h.Del(hdrTracestate)
	}
	if t.cfg.Propagation&B3 != 0 {
		if v, has := h.Get(hdrB3); has {
			if sc, ok = ParseB3Single(v); ok {
				return sc, true, false
			}
		}
	}
	if t.cfg.Propagation&B3Multi != 0 {
		if tid, has := h.Get(hdrB3TraceID); has {
			sid, _ := h.Get(hdrB3SpanID)
			smp, _ := h.Get(hdrB3Sampled)
			fl, _ := h.Get(hdrB3Flags)
			if sc, ok = ParseB3Multi(tid, sid, smp, fl); ok {
				return sc, true, false
			}
		}
	}
	return SpanContext{}, false, false
}

// Start begins a request's telemetry at stream start: it continues the
// caller's trace (or starts one), decides sampling (the route's override
// first) and, when the span is recorded, takes a token from the tenant's
// span budget. route is the matched route's name, peer the caller's
// authenticated identity, start the stream's start time. A nil Tracer
// returns nil.
func (t *Tracer) Start(req *message.Request, route, peer string, start time.Time) *Span {
	if t == nil {
		return nil
	}
	s := getSpan(t)
	s.start, s.route, s.peer = start, route, peer
	if !t.cfg.Spans {
		return s
	}
	parent, hasParent, fromW3C := t.extract(&req.Header)
	sm := &t.cfg.Sampler
	if len(t.cfg.RouteSamplers) > 0 {
		if o, ok := t.cfg.RouteSamplers[route]; ok {
			sm = &o
		}
	}
	tid := parent.TraceID
	if !hasParent {
		tid = randTraceID()
	}
	sampled := sm.decide(tid, hasParent, parent.Sampled)
	if sampled {
		s.tenant = t.tenantOf(req, route, peer)
		if s.tenant.allow(sigSpans, start.UnixNano()) {
			s.recording = true
		}
	}
	s.hasParent = hasParent
	switch {
	case s.recording:
		s.sc = SpanContext{TraceID: tid, SpanID: randSpanID(), Sampled: true}
		s.parent = parent.SpanID
		s.inject = true
		s.fill(req)
		if ts, ok := req.Header.Get(hdrTracestate); ok && fromW3C {
			s.tracestate = s.keep(ts)
		}
	case hasParent:
		// Not recorded here: forward the caller's context unchanged so that
		// the next hop's span is the caller's child.
		s.sc = parent
		s.inject = !fromW3C || t.cfg.Propagation != W3C
	default:
		s.sc = SpanContext{TraceID: tid, SpanID: randSpanID(), Sampled: sampled}
		s.inject = true
	}
	return s
}

func (s *Span) fill(req *message.Request) {
	s.method = s.keep(req.Method)
	p := req.Path
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	s.path = s.keep(p)
	s.authority = s.keep(req.Authority)
	s.proto = req.ProtoMajor*10 + req.ProtoMinor
	switch string(req.Scheme) {
	case "http":
		s.scheme = 1
	case "https":
		s.scheme = 2
	}
}

func (t *Tracer) tenantOf(req *message.Request, route, peer string) *Tenant {
	ts := t.p.tenants
	switch t.cfg.Tenant.Kind {
	case TenantHeader:
		v, _ := req.Header.Get(t.cfg.Tenant.Header)
		return ts.Lookup(v)
	case TenantTrustDomain:
		return ts.LookupString(trustDomain(peer))
	case TenantSPIFFEID:
		return ts.LookupString(peer)
	case TenantRouteMetadata:
		return ts.LookupString(t.cfg.Tenant.ByRoute[route])
	case TenantCEL:
		return ts.LookupString(t.cfg.Tenant.Expr.Eval(req, route, peer))
	}
	return ts.deflt
}

// LookupString is Lookup for a string name.
func (ts *Tenants) LookupString(name string) *Tenant {
	if name == "" {
		return ts.deflt
	}
	return ts.Lookup(unsafeBytes(name))
}

func trustDomain(id string) string {
	const p = "spiffe://"
	if len(id) <= len(p) || id[:len(p)] != p {
		return ""
	}
	rest := id[len(p):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			return rest[:i]
		}
	}
	return rest
}

func (t *Tracer) injectInto(h *message.Headers, s *Span, sc SpanContext) {
	p := t.cfg.Propagation
	if p&W3C != 0 {
		h.SetBytes(hdrTraceparent, AppendTraceparent(s.hdr[:0], sc))
	}
	if p&B3 != 0 {
		h.SetBytes(hdrB3, AppendB3Single(s.hdr[:0], sc))
	}
	if p&B3Multi != 0 {
		h.SetBytes(hdrB3TraceID, appendHex(s.hdr[:0], sc.TraceID[:]))
		h.SetBytes(hdrB3SpanID, appendHex(s.hdr[:0], sc.SpanID[:]))
		smp := "0"
		if sc.Sampled {
			smp = "1"
		}
		h.Set(hdrB3Sampled, smp)
		h.Del(hdrB3Parent)
	}
}

// StartAttempt begins one upstream attempt (retries are attempts of their
// own) and writes the propagation headers for it into req. It returns nil
// when nothing is recorded for the attempt.
func (s *Span) StartAttempt(req *message.Request, cluster, host string) *Span {
	if s == nil {
		return nil
	}
	t := s.tr
	if !s.recording && !t.cfg.Metrics {
		if s.inject {
			t.injectInto(&req.Header, s, s.sc)
		}
		return nil
	}
	if s.nChildren == maxAttempts {
		if s.tenant != nil {
			s.tenant.drop(sigSpans, rAttempts)
		}
		if s.inject {
			t.injectInto(&req.Header, s, s.sc)
		}
		return nil
	}
	c := getSpan(t)
	s.children[s.nChildren] = c
	s.nChildren++
	c.client = true
	c.recording = s.recording
	c.start = time.Now()
	c.cluster, c.host, c.attempt = cluster, host, s.nChildren
	c.method = c.keep(req.Method)
	c.proto = req.ProtoMajor*10 + req.ProtoMinor
	if s.recording {
		c.sc = SpanContext{TraceID: s.sc.TraceID, SpanID: randSpanID(), Sampled: true}
		c.parent, c.hasParent = s.sc.SpanID, true
		p := req.Path
		if i := bytes.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		c.path = c.keep(p)
		c.authority = c.keep(req.Authority)
		t.injectInto(&req.Header, s, c.sc)
	} else if s.inject {
		t.injectInto(&req.Header, s, s.sc)
	}
	return c
}

// EndAttempt ends an attempt with the upstream's status (0 when err is
// set) and the transport error, if any.
func (c *Span) EndAttempt(status int, resp *message.Response, err error) {
	if c == nil {
		return
	}
	c.end = time.Now()
	c.status = status
	c.grpcStatus = -1
	if err != nil {
		c.errType = errorType(err)
		return
	}
	if resp != nil {
		c.grpcStatus = grpcStatus(resp)
	}
	if status >= 500 {
		c.errType = statusText(status)
	}
}

// Outcome is what the connection manager knows when a stream completes.
type Outcome struct {
	Status          int
	ResponseFlags   string
	BytesSent       int64
	BytesRecv       int64
	Attempts        int
	UpstreamCluster string
	UpstreamHost    string
	Remote          netip.AddrPort
	Resp            *message.Response
}

// End completes the request's telemetry at stream completion and hands it
// to the export worker; it never blocks (a full queue drops and counts).
func (s *Span) End(req *message.Request, o Outcome) {
	if s == nil {
		return
	}
	t := s.tr
	if !s.recording && !t.cfg.Logs && !t.cfg.Metrics {
		putSpan(s) // nothing to export: skip even the clock read
		return
	}
	s.end = time.Now()
	s.status = o.Status
	s.flags, s.bytesSent, s.bytesRecv, s.attempts = o.ResponseFlags, o.BytesSent, o.BytesRecv, o.Attempts
	s.cluster, s.host, s.remote = o.UpstreamCluster, o.UpstreamHost, o.Remote
	s.grpcStatus = -1
	if o.Resp != nil {
		s.grpcStatus = grpcStatus(o.Resp)
	}
	if o.Status >= 500 {
		s.errType = statusText(o.Status)
	}
	if t.cfg.Logs {
		if s.tenant == nil {
			s.tenant = t.tenantOf(req, s.route, s.peer)
		}
		if s.tenant.allow(sigLogs, s.end.UnixNano()) {
			s.logIt = true
			if !s.recording {
				s.fill(req)
			}
			ua, _ := req.Header.Get("user-agent")
			s.userAgent = s.keep(ua)
			rid, _ := req.Header.Get("x-request-id")
			s.requestID = s.keep(rid)
		}
	}
	if t.cfg.Metrics {
		if s.tenant == nil {
			s.tenant = t.tenantOf(req, s.route, s.peer)
		}
		if !s.recording && !s.logIt {
			s.method = s.keep(req.Method)
			s.proto = req.ProtoMajor*10 + req.ProtoMinor
		}
	}
	if !s.recording && !s.logIt && !t.cfg.Metrics {
		putSpan(s)
		return
	}
	t.p.enqueue(s)
}

func grpcStatus(resp *message.Response) int {
	v, ok := resp.Trailer.Get("grpc-status")
	if !ok {
		if v, ok = resp.Header.Get("grpc-status"); !ok {
			return -1
		}
	}
	n := 0
	if len(v) == 0 || len(v) > 3 {
		return -1
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// errorType maps a transport error to a low-cardinality error.type value.
func errorType(err error) string {
	switch {
	case errors.Is(err, upstream.ErrTimeout):
		return "timeout"
	case errors.Is(err, upstream.ErrConnect):
		return "connect_failure"
	case errors.Is(err, upstream.ErrOverflow):
		return "overflow"
	case errors.Is(err, upstream.ErrRefused):
		return "refused_stream"
	case errors.Is(err, upstream.ErrRequestBody):
		return "request_body"
	}
	return "reset"
}

var statusTexts = func() (m [600]string) {
	for i := 500; i < 600; i++ {
		m[i] = itoa3(i)
	}
	return
}()

func itoa3(i int) string {
	return string([]byte{byte('0' + i/100), byte('0' + i/10%10), byte('0' + i%10)})
}

func statusText(s int) string {
	if s >= 500 && s < 600 {
		return statusTexts[s]
	}
	return "_OTHER"
}
