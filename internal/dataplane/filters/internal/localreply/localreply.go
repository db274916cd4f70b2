// Package localreply answers a request from inside the filter chain the way
// Envoy's sendLocalReply does: a plain HTTP status and text body, or, when the
// request is gRPC, an HTTP 200 "trailers-only" response whose grpc-status and
// grpc-message headers carry the error, so that gRPC clients see a proper
// status instead of a protocol error.
package localreply

import (
	"strconv"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// gRPC status codes used by the HTTP mapping (google.golang.org/grpc/codes).
const (
	grpcUnknown          = 2
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// NoGRPCStatus asks Send to derive the gRPC status from the HTTP status.
const NoGRPCStatus = -1

// IsGRPC reports whether r is a gRPC request (content-type application/grpc,
// application/grpc+proto, ...).
func IsGRPC(r *message.Request) bool {
	ct, ok := r.Header.Get("content-type")
	return ok && message.IsGRPC(ct)
}

// GRPCStatusFromHTTP maps an HTTP status to a gRPC status code as Envoy (and
// the gRPC HTTP mapping document) does.
func GRPCStatusFromHTTP(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// Send sets s.Resp to a local reply. For gRPC requests the reply is HTTP 200
// with grpc-status (grpcStatus, or derived from httpStatus when grpcStatus is
// NoGRPCStatus) and grpc-message set to body; otherwise it is httpStatus with
// body as text/plain. The caller returns filter.Stop and may add headers to
// s.Resp.Header afterwards.
func Send(s *filter.Stream, httpStatus, grpcStatus int, body string) {
	if s.Req == nil || !IsGRPC(s.Req) {
		s.Reply(httpStatus, body)
		return
	}
	if grpcStatus < 0 {
		grpcStatus = GRPCStatusFromHTTP(httpStatus)
	}
	r := s.LocalResponse()
	r.Status = 200
	r.ContentLength = 0
	r.Header.Add("content-type", "application/grpc")
	var num [20]byte
	r.Header.SetBytes("grpc-status", strconv.AppendInt(num[:0], int64(grpcStatus), 10))
	if msg := trimNewline(body); msg != "" {
		if needsEncoding(msg) {
			r.Header.SetBytes("grpc-message", appendPercentEncoded(nil, msg))
		} else {
			r.Header.Add("grpc-message", msg)
		}
	}
	s.Resp = r
}

// trimNewline drops the trailing newline that HTTP text bodies carry.
func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// needsEncoding reports whether msg has bytes the gRPC spec requires to be
// percent-encoded in grpc-message.
func needsEncoding(msg string) bool {
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			return true
		}
	}
	return false
}

func appendPercentEncoded(dst []byte, msg string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
