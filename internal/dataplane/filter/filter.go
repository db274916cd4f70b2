// Package filter owns the HTTP filter chain: the Stream every filter sees, the
// Filter interface and the Chain that runs filters in decode order on the
// request and in reverse (encode) order on the response, the router last.
//
// Nothing here knows about sockets or listeners: the same chain runs behind a
// proxy listener and in-process around a Go service's http.Handler or
// http.RoundTripper.
package filter

import (
	"context"
	"crypto/tls"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"net"
	"net/netip"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/telemetry"
)

// Status is what a filter's request phase tells the chain.
type Status uint8

const (
	// Continue passes the request to the next filter.
	Continue Status = iota
	// Stop ends the request phase: the filter has set Stream.Resp (usually
	// through Stream.Reply) and the chain starts the response phase from the
	// filter before this one.
	Stop
)

// Filter is one HTTP filter. A Filter value is built once per config version
// and shared by every stream of that version, concurrently: per-stream state
// belongs in the Stream (see Stream.SetState), never in the filter.
//
// OnRequest runs on the stream's goroutine and may block (a rate limit delay,
// a call-out to an auth service), honouring s.Ctx. OnResponse runs for every
// filter whose OnRequest returned Continue or Stop, in reverse order, after
// the response headers are known and before they are written downstream.
type Filter interface {
	OnRequest(s *Stream) Status
	OnResponse(s *Stream)
}

// Completer is implemented by filters that must release per-stream resources
// or record the outcome (bytes sent, final status) once the stream is done,
// whether or not the response phase ran.
type Completer interface {
	OnComplete(s *Stream)
}

// Route is what the chain and the filters know about the route a stream
// matched: its name and the per-route filter replacements. The router
// compiles one per route and hands it out through Matcher; it is immutable
// and shared by every stream of its config version.
type Route struct {
	// Name is the route's name for logs and metrics (may be empty).
	Name string
	// Overrides replaces listener filters on this route, by chain index
	// (per-route typed config, the route's over its virtual host's): a nil
	// entry keeps the listener's filter, Disabled switches it off.
	Overrides []Filter
	// ID is the route's position in the table that compiled it: the router
	// finds its own compiled route by it, without a type assertion.
	ID int
	// Metadata is the route's Envoy metadata (Route.metadata), nil when it
	// has none; Proxy-Wasm plugins read it as route_metadata. Read-only.
	Metadata *corev3.Metadata
}

// FilterOverride returns the replacement for the listener filter at chain
// index i, or nil to run the listener's filter. A nil route has none.
func (r *Route) FilterOverride(i int) Filter {
	if r != nil && i < len(r.Overrides) {
		return r.Overrides[i]
	}
	return nil
}

// Matcher chooses the route of a request. The router implements it; a chain
// whose terminal is a Matcher calls it once before the first filter runs and
// again, before the next filter or the terminal, only when a filter cleared
// the route (Stream.ClearRoute). Match is called on the stream's goroutine,
// concurrently for many streams, must not block and should not allocate.
type Matcher interface {
	Match(req *message.Request) *Route
}

// Downstream describes the connection a stream arrived on: the one type for
// it from the listener that accepts it to the HTTP connection manager, the
// TCP proxy and network extensions. The listener fills it once per
// connection; in-process hosts fill in what they know.
type Downstream struct {
	Listener   string
	RemoteAddr netip.AddrPort
	LocalAddr  netip.AddrPort
	// TLS is the terminated TLS session (nil: plaintext, or TLS passed
	// through untouched).
	TLS *tls.ConnectionState
	// SNI is the server name the client asked for: from the ClientHello
	// the listener peeked, or the terminated session's.
	SNI string
	// PeerIdentity is the authenticated peer (a SPIFFE ID) when mTLS is used.
	PeerIdentity string
}

// DownstreamOf returns the Downstream of a plain connection accepted by
// listener.
func DownstreamOf(listener string, c net.Conn) Downstream {
	return Downstream{Listener: listener, RemoteAddr: addrPort(c.RemoteAddr()), LocalAddr: addrPort(c.LocalAddr())}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// Attributes are the facts filters establish about a stream for later
// filters to read, as typed fields: the filter that owns a fact sets it, the
// others only read it. The connection's facts (peer identity, TLS, SNI) are
// in Stream.Downstream. The zero value is empty; nothing is allocated until
// a filter sets a field, and a pooled stream keeps the capacity it grew.
type Attributes struct {
	// Claims are the JWT payloads verified on this stream (jwt_authn), in
	// check order. Readers must not modify them.
	Claims []Claims
}

// Claims is one verified token's payload.
type Claims struct {
	// Provider is the provider name in the jwt_authn config.
	Provider string
	// Key is the provider's payload_in_metadata name: the key RBAC
	// metadata matchers use.
	Key string
	// Claims is the decoded payload.
	Claims map[string]any
}

// Stream is one request/response exchange. It is owned by one goroutine.
type Stream struct {
	Ctx  context.Context
	Req  *message.Request
	Resp *message.Response

	Downstream Downstream
	// Client is the trusted client address: the connection's peer, or the
	// x-forwarded-for entry the listener's trusted hops point at. RBAC's
	// remote_ip and access logs use it; direct_remote_ip is the peer.
	Client netip.Addr
	Start  time.Time

	// Route is the route matched for Req; nil when none matched. Filters that
	// change what routing looks at call ClearRoute: the chain matches again
	// before the next filter or the terminal reads it.
	Route      *Route
	routeStale bool

	// UpstreamCluster and UpstreamHost are set by the router for logs.
	UpstreamCluster string
	UpstreamHost    string
	// Attempts counts upstream tries, retries included.
	Attempts int
	// ResponseFlags explains failures in access logs ("UF" upstream connect
	// failure, "UT" upstream timeout, "UO" overflow, "NR" no route, ...).
	ResponseFlags string
	// BytesSent is the response body size written downstream.
	BytesSent int64
	BytesRecv int64
	// Trace is the request's telemetry (server span, attempts, access
	// record); nil when the listener has telemetry off.
	Trace *telemetry.Span

	// Attrs carries what filters learnt for later filters (claims, ...).
	Attrs Attributes

	state    [maxStateful]any
	ownResp  message.Response
	localMsg []byte
	pathBuf  []byte // a normalized path, kept across Reset
	localRd  byteReader
}

// maxStateful bounds the filters of one chain that keep per-stream state;
// NewChain rejects longer chains rather than dropping state silently.
const maxStateful = 32

// PathBuf returns the stream's path buffer, emptied, for the connection
// manager to normalize the request path into.
func (s *Stream) PathBuf() []byte { return s.pathBuf[:0] }

// SetPathBuf keeps b (grown from PathBuf) as the buffer and returns it.
func (s *Stream) SetPathBuf(b []byte) []byte {
	s.pathBuf = b
	return b
}

// Reset prepares the stream for reuse.
func (s *Stream) Reset() {
	claims := s.Attrs.Claims
	clear(claims) // drop the payloads, keep the capacity
	*s = Stream{ownResp: s.ownResp, localMsg: s.localMsg[:0], pathBuf: s.pathBuf[:0], Attrs: Attributes{Claims: claims[:0]}}
	s.ownResp.Reset()
}

// State returns per-stream state stored by the filter at chain index i.
func (s *Stream) State(i int) any {
	if i < len(s.state) {
		return s.state[i]
	}
	return nil
}

// SetState stores per-stream state for the filter at chain index i.
func (s *Stream) SetState(i int, v any) {
	if i < len(s.state) {
		s.state[i] = v
	}
}

// ClearRoute marks the matched route stale (a filter changed what routing
// looks at): the chain matches again before the next filter or the terminal.
func (s *Stream) ClearRoute() { s.routeStale = true }

// RouteCleared reports whether ClearRoute was called since the last match.
func (s *Stream) RouteCleared() bool { return s.routeStale }

// Reply sets a local response with status and a text body. The filter then
// returns Stop. The body is copied. For gRPC requests the reply is a gRPC
// trailers-only response (HTTP 200, grpc-status mapped from status, the body
// as grpc-message) so that gRPC clients see a gRPC error, not a protocol one.
func (s *Stream) Reply(status int, body string) {
	r := &s.ownResp
	r.Reset()
	if s.Req != nil {
		if ct, ok := s.Req.Header.Get("content-type"); ok && message.IsGRPC(ct) {
			r.Status = 200
			r.Header.Add("content-type", "application/grpc")
			r.Header.Add("grpc-status", grpcStatusFor(status))
			if len(body) > 0 {
				r.Header.Add("grpc-message", trimNewline(body))
			}
			s.Resp = r
			return
		}
	}
	r.Status = status
	s.localMsg = append(s.localMsg[:0], body...)
	r.ContentLength = int64(len(s.localMsg))
	if len(body) > 0 {
		r.Header.Add("content-type", "text/plain")
		s.localRd = byteReader{b: s.localMsg}
		r.Body = &s.localRd
	}
	s.Resp = r
}

// LocalResponse returns the stream's own response, reset, for filters that
// build a response with custom headers; set it as s.Resp and return Stop.
func (s *Stream) LocalResponse() *message.Response {
	s.ownResp.Reset()
	return &s.ownResp
}

type byteReader struct {
	b   []byte
	off int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, eof
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

// grpcStatusFor maps an HTTP status to a gRPC status code the way gRPC's
// HTTP-to-gRPC mapping and Envoy do.
func grpcStatusFor(status int) string {
	switch status {
	case 400:
		return "13" // INTERNAL
	case 401:
		return "16" // UNAUTHENTICATED
	case 403:
		return "7" // PERMISSION_DENIED
	case 404:
		return "12" // UNIMPLEMENTED
	case 429, 502, 503:
		return "14" // UNAVAILABLE
	case 504:
		return "4" // DEADLINE_EXCEEDED
	}
	return "2" // UNKNOWN
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
