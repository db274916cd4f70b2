// Package upstream owns connections to upstream hosts: a hand-written
// HTTP/1.1 connection pool (keep-alive, one request per connection at a
// time, the codec from package http1) and multiplexed HTTP/2 (h2c or TLS)
// on package h2's client, behind one Transport interface the router calls.
//
// Both are hand-built because they are the hot path: net/http's Transport
// and x/net/http2's allocate a request, a response, header maps and
// goroutine handoffs per round trip (see package h2 for what it keeps from
// x/net: the frame parser and the HPACK decoder).
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Transport sends one request to one endpoint.
//
// RoundTrip fills resp with the response head; resp.Body streams the body and
// resp.Close must be called once the caller is done with it (it returns the
// connection to its pool or closes it). dl bounds the attempt; ctx carries
// cancellation (a downstream HTTP/2 stream reset) when it has a Done channel.
// Deadlines are plain times rather than context deadlines because a
// context.WithTimeout per request costs four allocations on the hot path.
//
// Errors are classified for retry decisions: errors.Is(err, ErrConnect) when
// no connection could be made, ErrReset when the connection failed before a
// response head arrived, ErrRefused for an HTTP/2 REFUSED_STREAM.
//
// The transport is done with req (Body, Trailer) once RoundTrip has returned
// an error or resp.Close has returned: the caller may then reuse it. An
// HTTP/2 transport streams the body on its own goroutine until then, and
// interrupts a Read still blocked at that point through Aborter.
type Transport interface {
	RoundTrip(ctx context.Context, ep *endpoint.Endpoint, req *message.Request, resp *message.Response, dl Deadlines) error
	// CloseIdle closes idle pooled connections (config reload, shutdown).
	CloseIdle()
}

// Aborter is implemented by request bodies whose blocked Read can be
// interrupted from another goroutine: after Abort, a Read in progress and
// every later one return an error promptly. The connection manager's bodies
// implement it; a body that does not may be read after the exchange ended.
type Aborter interface {
	Abort()
}

// Deadlines bound one attempt. Zero values mean no bound.
type Deadlines struct {
	// Head bounds sending the request and receiving the response head: the
	// per-try timeout or the request timeout, whichever comes first.
	Head time.Time
	// Total bounds the whole exchange, response body included.
	Total time.Time
}

var (
	// ErrTimeout is returned when a deadline passed.
	ErrTimeout = errors.New("upstream timeout")
	ErrConnect = errors.New("upstream connect failure")
	ErrReset   = errors.New("upstream connection reset")
	ErrRefused = errors.New("upstream refused stream")
	// ErrRequestBody is returned when reading the downstream request body
	// failed while sending it (malformed chunked framing, a client that
	// closed early). The upstream is not at fault: the router answers the
	// client (400, or the codec's status) without retrying or reporting the
	// host to outlier detection, which a client could otherwise use to
	// eject healthy hosts.
	ErrRequestBody = errors.New("downstream request body")
)

// Dialer opens upstream connections; the default is a net.Dialer with the
// cluster's connect timeout. Tests and the in-process host may replace it.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// NewDialer returns a TCP dialer with a connect timeout.
func NewDialer(connectTimeout time.Duration) Dialer {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			// Keep the cause matchable: x/net/http2 shares one dial among
			// the requests waiting for a connection, and redials for the
			// others only if it sees the first one's context.Canceled.
			return nil, fmt.Errorf("%w: %s: %w", ErrConnect, addr, err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		return c, nil
	}
}
