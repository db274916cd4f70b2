package http1

import (
	"io"
	"strconv"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// The serialisers never forward the peer's framing: host, content-length,
// transfer-encoding and hop-by-hop fields in the message's header are
// skipped and written from the message's own fields. Whatever filters put in
// a message, the output stays one well-formed head: header names that are
// not tokens are dropped, control bytes in values become spaces, and
// request-target bytes that may not appear on the request line are
// percent-encoded.

// AppendRequestHead appends an HTTP/1.1 request head for req to dst:
// the request line (the authority as target for CONNECT, "/" for an empty
// path), host from Authority, the header, and the framing: "transfer-encoding:
// chunked" when chunked, else content-length when req.ContentLength > 0, or
// "content-length: 0" for POST, PUT and PATCH, whose servers expect one. A
// request with an "upgrade" field also gets "connection: upgrade", and one
// with "te: trailers" keeps it with "connection: te".
func AppendRequestHead(dst []byte, req *message.Request, chunked bool) []byte {
	method := req.Method
	if len(method) == 0 {
		dst = append(dst, "GET"...)
	} else {
		for _, c := range method {
			if charClass[c]&clsToken == 0 {
				c = '_'
			}
			dst = append(dst, c)
		}
	}
	dst = append(dst, ' ')
	switch {
	case string(method) == "CONNECT":
		dst = appendTarget(dst, req.Authority)
	case len(req.Path) == 0:
		dst = append(dst, '/')
	default:
		dst = appendTarget(dst, req.Path)
	}
	dst = append(dst, " HTTP/1.1\r\nhost: "...)
	dst = appendValue(dst, req.Authority)
	dst = append(dst, "\r\n"...)
	dst, upgrade, teTrailers := appendFields(dst, &req.Header, modeRequest)
	switch {
	case upgrade != nil && teTrailers:
		dst = append(dst, "connection: upgrade, te\r\n"...)
	case upgrade != nil:
		dst = append(dst, "connection: upgrade\r\n"...)
	case teTrailers:
		dst = append(dst, "connection: te\r\n"...)
	}
	if upgrade != nil {
		dst = append(dst, "upgrade: "...)
		dst = appendValue(dst, upgrade)
		dst = append(dst, "\r\n"...)
	}
	if teTrailers {
		dst = append(dst, "te: trailers\r\n"...)
	}
	switch {
	case chunked:
		dst = append(dst, "transfer-encoding: chunked\r\n"...)
	case req.ContentLength > 0:
		dst = append(dst, "content-length: "...)
		dst = strconv.AppendInt(dst, req.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	case string(method) == "POST" || string(method) == "PUT" || string(method) == "PATCH":
		dst = append(dst, "content-length: 0\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// AppendResponseHead appends an HTTP/1.1 response head for resp to dst: the
// status line with the standard reason phrase (a status outside 100-999 is
// written as 502), the header, and the framing. Responses that cannot have
// a body (1xx, 204, 304) get no framing fields; others get
// "transfer-encoding: chunked" when chunked, else content-length when
// resp.ContentLength >= 0 (a HEAD response passes the length the GET would
// have). A 101 or 426 response with an "upgrade" field gets "connection:
// upgrade". "connection: close" is written when !keepAlive, and also when a
// body has neither length nor chunked coding, since only the close ends it
// (the caller must then close).
func AppendResponseHead(dst []byte, resp *message.Response, chunked, keepAlive bool) []byte {
	status := resp.Status
	if status < 100 || status > 999 {
		status = 502
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10), ' ')
	dst = append(dst, ReasonPhrase(status)...)
	dst = append(dst, "\r\n"...)
	dst, upgrade, _ := appendFields(dst, &resp.Header, modeResponse)
	if upgrade != nil && (status == 101 || status == 426) {
		dst = append(dst, "connection: upgrade\r\nupgrade: "...)
		dst = appendValue(dst, upgrade)
		dst = append(dst, "\r\n"...)
	}
	if status >= 200 && status != 204 && status != 304 {
		switch {
		case chunked:
			dst = append(dst, "transfer-encoding: chunked\r\n"...)
		case resp.ContentLength >= 0:
			dst = append(dst, "content-length: "...)
			dst = strconv.AppendInt(dst, resp.ContentLength, 10)
			dst = append(dst, "\r\n"...)
		default:
			keepAlive = false
		}
	}
	if !keepAlive && status >= 200 {
		dst = append(dst, "connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// appendFields writes h's fields except those the codec writes itself, and
// returns the first upgrade value and whether te asked for trailers.
func appendFields(dst []byte, h *message.Headers, mode fieldMode) (_ []byte, upgrade []byte, teTrailers bool) {
	for i := 0; i < h.Len(); i++ {
		f := h.At(i)
		switch string(f.Name) {
		case "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection":
			continue
		case "upgrade":
			if mode != modeTrailer && upgrade == nil {
				upgrade = f.Value
			}
			continue
		case "te":
			if mode == modeRequest && hasToken(f.Value, "trailers") {
				teTrailers = true
			}
			continue
		case "host":
			if mode != modeResponse {
				continue
			}
		case "trailer", "expect":
			if mode == modeTrailer {
				continue
			}
		}
		if !validName(f.Name) {
			continue
		}
		dst = append(dst, f.Name...)
		dst = append(dst, ": "...)
		dst = appendValue(dst, f.Value)
		dst = append(dst, "\r\n"...)
	}
	return dst, upgrade, teTrailers
}

func validName(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if charClass[c]&clsToken == 0 {
			return false
		}
	}
	return true
}

// appendValue appends v with every byte that could end or corrupt a field
// line (CR, LF, NUL, other controls) replaced by a space.
func appendValue(dst, v []byte) []byte {
	for i, c := range v {
		if charClass[c]&clsValue == 0 {
			dst = append(dst, v[:i]...)
			for _, c := range v[i:] {
				if charClass[c]&clsValue == 0 {
					c = ' '
				}
				dst = append(dst, c)
			}
			return dst
		}
	}
	return append(dst, v...)
}

// appendTarget appends a request target, percent-encoding bytes that may not
// appear in it (controls, space, '#', non-ASCII).
func appendTarget(dst, t []byte) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i, c := range t {
		if charClass[c]&clsTarget == 0 {
			dst = append(dst, t[:i]...)
			for _, c := range t[i:] {
				if charClass[c]&clsTarget == 0 {
					dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
					continue
				}
				dst = append(dst, c)
			}
			return dst
		}
	}
	return append(dst, t...)
}

// chunkBufSize is the ChunkedWriter's buffer: a chunk that fits goes out in
// one write with its framing; larger ones in at most three writes without
// copying their middle.
const chunkBufSize = 16 << 10

// ChunkedWriter writes a body in the chunked transfer coding. The zero value
// needs Reset before use; it is reusable across messages and keeps its
// buffer, so steady-state use does not allocate. Every Write emits complete
// chunks, so a streaming peer sees the data at once.
type ChunkedWriter struct {
	w   io.Writer
	buf []byte
	err error
}

// Reset makes c write a new body to w.
func (c *ChunkedWriter) Reset(w io.Writer) {
	c.w = w
	c.err = nil
	if c.buf == nil {
		c.buf = make([]byte, 0, chunkBufSize)
	}
}

// Write writes p as one chunk. An empty p writes nothing: a zero-size chunk
// would end the body.
func (c *ChunkedWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, chunkBufSize)
	}
	b := strconv.AppendInt(c.buf[:0], int64(len(p)), 16)
	b = append(b, "\r\n"...)
	if room := cap(b) - len(b); len(p)+2 <= room {
		b = append(b, p...)
		b = append(b, "\r\n"...)
		if err := c.write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	// Large chunk: head and first part, the middle straight from p, then
	// the last part with the closing CRLF.
	first := min(cap(b)-len(b), len(p))
	b = append(b, p[:first]...)
	if err := c.write(b); err != nil {
		return 0, err
	}
	rest := p[first:]
	tail := min(len(rest), cap(c.buf)-2)
	if mid := rest[:len(rest)-tail]; len(mid) > 0 {
		if err := c.write(mid); err != nil {
			return first, err
		}
	}
	b = append(c.buf[:0], rest[len(rest)-tail:]...)
	b = append(b, "\r\n"...)
	if err := c.write(b); err != nil {
		return len(p) - tail, err
	}
	return len(p), nil
}

// Close ends the body: the last chunk, the trailer fields (nil for none;
// framing and routing fields are not allowed there and are skipped) and the
// final CRLF, in one write. It does not close the underlying writer.
func (c *ChunkedWriter) Close(trailer *message.Headers) error {
	if c.err != nil {
		return c.err
	}
	b := append(c.buf[:0], "0\r\n"...)
	if trailer != nil {
		b, _, _ = appendFields(b, trailer, modeTrailer)
	}
	b = append(b, "\r\n"...)
	if cap(b) <= 4*chunkBufSize {
		c.buf = b[:0] // keep a buffer grown by large trailers, within reason
	}
	return c.write(b)
}

func (c *ChunkedWriter) write(b []byte) error {
	if c.w == nil {
		c.err = io.ErrClosedPipe
		return c.err
	}
	if _, err := c.w.Write(b); err != nil {
		c.err = err
		return err
	}
	return nil
}

// ReasonPhrase returns the standard reason phrase of code (RFC 9110 15 and
// the IANA registry), or "" for codes without one.
func ReasonPhrase(code int) string {
	switch code {
	case 100:
		return "Continue"
	case 101:
		return "Switching Protocols"
	case 102:
		return "Processing"
	case 103:
		return "Early Hints"
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	case 203:
		return "Non-Authoritative Information"
	case 204:
		return "No Content"
	case 205:
		return "Reset Content"
	case 206:
		return "Partial Content"
	case 207:
		return "Multi-Status"
	case 208:
		return "Already Reported"
	case 226:
		return "IM Used"
	case 300:
		return "Multiple Choices"
	case 301:
		return "Moved Permanently"
	case 302:
		return "Found"
	case 303:
		return "See Other"
	case 304:
		return "Not Modified"
	case 305:
		return "Use Proxy"
	case 307:
		return "Temporary Redirect"
	case 308:
		return "Permanent Redirect"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 402:
		return "Payment Required"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 406:
		return "Not Acceptable"
	case 407:
		return "Proxy Authentication Required"
	case 408:
		return "Request Timeout"
	case 409:
		return "Conflict"
	case 410:
		return "Gone"
	case 411:
		return "Length Required"
	case 412:
		return "Precondition Failed"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 415:
		return "Unsupported Media Type"
	case 416:
		return "Range Not Satisfiable"
	case 417:
		return "Expectation Failed"
	case 418:
		return "I'm a teapot"
	case 421:
		return "Misdirected Request"
	case 422:
		return "Unprocessable Content"
	case 423:
		return "Locked"
	case 424:
		return "Failed Dependency"
	case 425:
		return "Too Early"
	case 426:
		return "Upgrade Required"
	case 428:
		return "Precondition Required"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 451:
		return "Unavailable For Legal Reasons"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	case 506:
		return "Variant Also Negotiates"
	case 507:
		return "Insufficient Storage"
	case 508:
		return "Loop Detected"
	case 510:
		return "Not Extended"
	case 511:
		return "Network Authentication Required"
	}
	return ""
}
