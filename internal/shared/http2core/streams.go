package http2core

import "golang.org/x/net/http2"

// ClientStreams is a server's record of the streams its client has opened
// (RFC 9113 5.1.1): client stream ids are odd and only grow, so the highest
// one seen tells an idle stream (never opened: a frame on it is a protocol
// error) from a closed one (frames on it are dropped or answered with
// RST_STREAM). Which streams are open is the caller's table.
type ClientStreams struct{ last uint32 }

// Open records the HEADERS frame that opens stream id, for which the caller
// has no open stream. An even id, or one not above every id seen, is a
// connection error.
func (s *ClientStreams) Open(id uint32) error {
	if id%2 == 0 {
		return ConnError{http2.ErrCodeProtocol, "even stream id from client"}
	}
	if id <= s.last {
		return ConnError{http2.ErrCodeStreamClosed, "HEADERS on closed stream"}
	}
	s.last = id
	return nil
}

// Idle reports whether id is above every stream the client has opened.
func (s *ClientStreams) Idle(id uint32) bool { return id > s.last }

// Last is the highest stream id the client has opened: what GOAWAY names.
func (s *ClientStreams) Last() uint32 { return s.last }
