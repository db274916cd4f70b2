package upstream

import (
	"context"
	"errors"
)

// Failure is why an upstream attempt ended without a response. It is the one
// vocabulary of the request path's failures: the router decides retries and
// access-log response flags by it, the cluster counts it in its metrics, and
// outlier detection counts it against the host.
type Failure uint8

// Failures, from the errors a Transport returns (FailureOf).
const (
	// FailConnect: no connection could be opened (ErrConnect).
	FailConnect Failure = iota + 1
	// FailReset: the connection or stream broke before a response head
	// (ErrReset, and any error not classified otherwise).
	FailReset
	// FailTimeout: a deadline passed (ErrTimeout, an expired or canceled
	// context).
	FailTimeout
	// FailOverflow: a connection or stream limit was reached (ErrOverflow).
	FailOverflow
	// FailRefused: the upstream refused the stream before processing it
	// (HTTP/2 REFUSED_STREAM, ErrRefused).
	FailRefused
)

// FailureOf classifies an error returned by Transport.RoundTrip.
// ErrRequestBody is the downstream's fault, not a Failure: callers check it
// first.
func FailureOf(err error) Failure {
	switch {
	case errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return FailTimeout
	case errors.Is(err, ErrConnect):
		return FailConnect
	case errors.Is(err, ErrOverflow):
		return FailOverflow
	case errors.Is(err, ErrRefused):
		return FailRefused
	}
	return FailReset
}

// String names the failure as metrics and logs do.
func (f Failure) String() string {
	switch f {
	case FailConnect:
		return "connect_failure"
	case FailReset:
		return "reset"
	case FailTimeout:
		return "timeout"
	case FailOverflow:
		return "overflow"
	case FailRefused:
		return "refused_stream"
	}
	return "none"
}

// ResponseFlag is Envoy's access-log response flag for the failure.
func (f Failure) ResponseFlag() string {
	switch f {
	case FailConnect:
		return "UF"
	case FailTimeout:
		return "UT"
	case FailOverflow:
		return "UO"
	case FailReset, FailRefused:
		return "UR"
	}
	return ""
}
