package h2

import (
	"errors"
	"fmt"

	"golang.org/x/net/http2"
)

// Errors returned by the Client. Callers classify failures with errors.Is.
var (
	// ErrConnect: no connection could be made (dial or TLS handshake).
	ErrConnect = errors.New("h2: connect failure")
	// ErrReset: the connection or the stream failed before the exchange
	// completed.
	ErrReset = errors.New("h2: stream reset")
	// ErrRefused: the peer refused the stream (REFUSED_STREAM, or GOAWAY
	// naming a last stream below it); the request was not processed and may
	// be retried anywhere.
	ErrRefused = errors.New("h2: stream refused")
	// ErrTimeout: a deadline of the exchange passed.
	ErrTimeout = errors.New("h2: timeout")
	// ErrRequestBody: reading the caller's request body failed; the peer is
	// not to blame.
	ErrRequestBody = errors.New("h2: reading request body")
	// ErrStreamClosed is returned by writes on a stream that was reset or has
	// already ended.
	ErrStreamClosed = errors.New("h2: stream closed")
	// ErrConnClosed is returned when the connection has gone away.
	ErrConnClosed = errors.New("h2: connection closed")
)

// StreamError is a stream reset, by the peer or by this side, with its code.
type StreamError struct {
	Code   http2.ErrCode
	Remote bool // the peer sent the RST_STREAM
}

func (e *StreamError) Error() string {
	if e.Remote {
		return fmt.Sprintf("h2: stream reset by peer: %v", e.Code)
	}
	return fmt.Sprintf("h2: stream reset: %v", e.Code)
}

// Is makes a reset by the peer match ErrReset (or ErrRefused for
// REFUSED_STREAM), so that callers need not know the type.
func (e *StreamError) Is(target error) bool {
	if target == ErrRefused {
		return e.Code == http2.ErrCodeRefusedStream
	}
	return target == ErrReset || target == ErrStreamClosed
}

// Preallocated reset errors: resets are normal events (cancelled gRPC calls)
// and should not allocate.
var (
	errResetCancel  = &StreamError{Code: http2.ErrCodeCancel}
	errPeerNoError  = &StreamError{Code: http2.ErrCodeNo, Remote: true}
	errPeerCancel   = &StreamError{Code: http2.ErrCodeCancel, Remote: true}
	errPeerRefused  = &StreamError{Code: http2.ErrCodeRefusedStream, Remote: true}
	errPeerProtocol = &StreamError{Code: http2.ErrCodeProtocol, Remote: true}
)

func peerResetError(code http2.ErrCode) error {
	switch code {
	case http2.ErrCodeNo:
		return errPeerNoError
	case http2.ErrCodeCancel:
		return errPeerCancel
	case http2.ErrCodeRefusedStream:
		return errPeerRefused
	case http2.ErrCodeProtocol:
		return errPeerProtocol
	}
	return &StreamError{Code: code, Remote: true}
}

func localResetError(code http2.ErrCode) error {
	if code == http2.ErrCodeCancel {
		return errResetCancel
	}
	return &StreamError{Code: code}
}
