package http2core

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/net/http2"
)

// ConnError is a connection error (RFC 9113 5.4.1): the connection ends
// with GOAWAY carrying Code; Reason may travel as its debug data.
type ConnError struct {
	Code   http2.ErrCode
	Reason string
}

func (e ConnError) Error() string {
	return fmt.Sprintf("http2: connection error %v: %s", e.Code, e.Reason)
}

// ConnErrorCode reports the GOAWAY code of a connection error, whether it is
// a ConnError or one of the Framer's http2.ConnectionError values.
func ConnErrorCode(err error) (http2.ErrCode, bool) {
	if ce, ok := errors.AsType[ConnError](err); ok {
		return ce.Code, true
	}
	if ce, ok := errors.AsType[http2.ConnectionError](err); ok {
		return http2.ErrCode(ce), true
	}
	return 0, false
}

// ClassifyReadError turns a Framer read error into a ConnError (to be sent
// as GOAWAY) or leaves an I/O error (EOF, a closed or timed-out socket) as
// is, since there is nobody left to tell.
func ClassifyReadError(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		return ConnError{http2.ErrCode(ce), "frame error"}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return ConnError{http2.ErrCodeFrameSize, "frame too large"}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		return err
	}
	return ConnError{http2.ErrCodeProtocol, err.Error()}
}
