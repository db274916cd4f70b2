package message

import (
	"io"
)

// Request is an HTTP request as the filter chain sees it, protocol-neutral:
// HTTP/1.1 fields are mapped to HTTP/2 pseudo-headers (Method, Scheme,
// Authority from Host, Path with query). Hop-by-hop headers are removed by the
// codec before the chain runs.
type Request struct {
	Method    []byte
	Scheme    []byte
	Authority []byte
	Path      []byte // origin-form: path and optional "?query"

	// ProtoMajor/ProtoMinor describe the downstream protocol (1.0, 1.1, 2.0).
	ProtoMajor, ProtoMinor uint8

	Header  Headers
	Trailer Headers

	// ContentLength is the body length, or -1 when it is not known in advance
	// (chunked, HTTP/2 without content-length, streaming).
	ContentLength int64
	// Body streams the request body; nil means no body. The codec owns it; a
	// filter that replaces it must preserve end-of-stream semantics.
	Body io.Reader

	arena []byte
}

// Reset clears r for reuse, keeping allocated storage.
func (r *Request) Reset() {
	r.Method, r.Scheme, r.Authority, r.Path = nil, nil, nil, nil
	r.ProtoMajor, r.ProtoMinor = 0, 0
	r.Header.Reset()
	r.Trailer.Reset()
	r.ContentLength = 0
	r.Body = nil
	r.arena = r.arena[:0]
}

// SetMethod, SetScheme, SetAuthority and SetPath copy s into storage owned by
// the request so that the caller may reuse s.
func (r *Request) SetMethod(s string)    { r.Method = r.own(s) }
func (r *Request) SetScheme(s string)    { r.Scheme = r.own(s) }
func (r *Request) SetAuthority(s string) { r.Authority = r.own(s) }
func (r *Request) SetPath(s string)      { r.Path = r.own(s) }

// SetPathBytes is SetPath for byte input (which may alias the current Path).
func (r *Request) SetPathBytes(b []byte) { r.Path = r.ownBytes(b) }

// SetAuthorityBytes is SetAuthority for byte input.
func (r *Request) SetAuthorityBytes(b []byte) { r.Authority = r.ownBytes(b) }

// PathOnly returns Path without its query string.
func (r *Request) PathOnly() []byte {
	for i, c := range r.Path {
		if c == '?' {
			return r.Path[:i]
		}
	}
	return r.Path
}

// Query returns the raw query string (without '?'), or nil.
func (r *Request) Query() []byte {
	for i, c := range r.Path {
		if c == '?' {
			return r.Path[i+1:]
		}
	}
	return nil
}

// Host returns the authority without a port.
func (r *Request) Host() []byte {
	a := r.Authority
	if len(a) > 0 && a[0] == '[' { // IPv6 literal
		for i := range a {
			if a[i] == ']' {
				return a[:i+1]
			}
		}
		return a
	}
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] == ':' {
			return a[:i]
		}
		if a[i] < '0' || a[i] > '9' {
			break
		}
	}
	return a
}

func (r *Request) own(s string) []byte {
	start := len(r.arena)
	r.arena = append(r.arena, s...)
	return r.arena[start:len(r.arena):len(r.arena)]
}

func (r *Request) ownBytes(b []byte) []byte {
	start := len(r.arena)
	r.arena = append(r.arena, b...)
	return r.arena[start:len(r.arena):len(r.arena)]
}

// Response is an HTTP response as the filter chain sees it.
type Response struct {
	Status int

	Header  Headers
	Trailer Headers

	// ContentLength is the body length or -1 when unknown.
	ContentLength int64
	// Body streams the response body; nil means no body. Trailer is complete
	// only after Body has returned io.EOF.
	Body io.Reader
	// Close, if set, releases what backs Body (an upstream connection or
	// stream). The codec calls it once after writing the response.
	Close func()
}

// Reset clears the response for reuse.
func (r *Response) Reset() {
	r.Status = 0
	r.Header.Reset()
	r.Trailer.Reset()
	r.ContentLength = 0
	r.Body = nil
	r.Close = nil
}

// IsGRPC reports whether a content-type value denotes gRPC.
func IsGRPC(contentType []byte) bool {
	const p = "application/grpc"
	if len(contentType) < len(p) || string(contentType[:len(p)]) != p {
		return false
	}
	return len(contentType) == len(p) || contentType[len(p)] == '+' || contentType[len(p)] == ';'
}
