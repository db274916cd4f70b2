// Package http1 owns the proxy's HTTP/1.1 wire codec: parsing request and
// response heads into message.Request/Response, streaming bodies
// (content-length, chunked with trailers, read-until-close), and serialising
// heads and chunked bodies back onto the wire.
//
// It is hand-written rather than built on net/http for three reasons:
//
//   - Allocation-free parsing. A keep-alive request is parsed out of a
//     connection-owned buffer straight into the message's header arena; the
//     Reader, its body readers and the ChunkedWriter are reused, so the steady
//     state allocates nothing per request.
//   - Strict smuggling defences. net/http tolerates framing that a proxy must
//     refuse (for example it keeps a connection open after a request carrying
//     both Content-Length and Transfer-Encoding, so trailing bytes become a
//     second request). Here every ambiguous framing is a *Error and the caller
//     closes the connection; bare CR/LF, obs-fold, invalid tokens and
//     conflicting lengths are rejected before any byte reaches a filter.
//   - Control of framing. The proxy decides how each message is delimited on
//     the way out (it never forwards the peer's framing headers), handles
//     Expect: 100-continue and Upgrade itself, and can reuse the connection
//     only when the body was consumed exactly.
//
// After any *Error the Reader's position in the stream is undefined: the
// caller answers with Error.Status (when it is the server) and closes the
// connection.
package http1

import (
	"strconv"
)

// Limits bound what a peer can make the parser hold. Zero fields take their
// default.
type Limits struct {
	MaxRequestLine int // default 8 KiB; exceeding it answers 414 URI Too Long (also bounds status lines)
	MaxHeaderBytes int // default 64 KiB for the whole head; exceeding it answers 431
	MaxHeaders     int // default 100 field lines; exceeding it answers 431
}

const (
	defaultMaxRequestLine = 8 << 10
	defaultMaxHeaderBytes = 64 << 10
	defaultMaxHeaders     = 100
)

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		MaxRequestLine: defaultMaxRequestLine,
		MaxHeaderBytes: defaultMaxHeaderBytes,
		MaxHeaders:     defaultMaxHeaders,
	}
}

func (l Limits) withDefaults() Limits {
	if l.MaxRequestLine <= 0 {
		l.MaxRequestLine = defaultMaxRequestLine
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = defaultMaxHeaders
	}
	return l
}

// Error is a protocol error with the status the server should answer (400,
// 413, 414, 431, 501, 505; 502 for a malformed upstream response) and a short
// reason that is safe to show to the peer. The connection must be closed
// after it.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string {
	return "http1: " + strconv.Itoa(e.Status) + " " + e.Reason
}

// Framing says how a message's body is delimited and what the connection may
// do after it.
type Framing struct {
	// ContentLength is the body length; -1 when chunked or read-until-close.
	// For a response without a body (NoBody) it is the Content-Length the
	// response advertised (what a GET would have returned, for HEAD and
	// 304), else 0.
	ContentLength int64
	Chunked       bool
	// Close is set for "Connection: close", HTTP/1.0 without keep-alive, a
	// response delimited by close, and after 101 or a successful CONNECT:
	// the connection must not carry another message after this one.
	Close bool
	// ExpectContinue is set when an HTTP/1.1 request with a body asked for
	// "Expect: 100-continue" (the expect field is removed: the proxy answers
	// it itself).
	ExpectContinue bool
	// Upgrade is set when the message carried Connection: upgrade and an
	// Upgrade field (kept in the header as "upgrade"), or for a 101 response.
	Upgrade bool
	// NoBody is set for a response to HEAD, a 1xx/204/304 response, a 2xx
	// response to CONNECT, and a request without body.
	NoBody bool
}

// Character classes, indexed by byte. The table is computed once and only
// read afterwards.
const (
	clsToken  = 1 << iota // tchar (RFC 9110 5.6.2)
	clsValue              // field-vchar, SP, HTAB, obs-text
	clsTarget             // request-target bytes we accept (printable ASCII except '#')
	clsHost               // reg-name / IP-literal / port bytes of an authority
	clsHex                // HEXDIG
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || isIn(b, "!#$%&'*+-.^_`|~") {
			t[c] |= clsToken
		}
		if b == '\t' || (b >= 0x20 && b != 0x7f) {
			t[c] |= clsValue
		}
		if b > 0x20 && b < 0x7f && b != '#' {
			t[c] |= clsTarget
		}
		if alnum || isIn(b, "-._~!$&'()*+,;=:[]%") {
			t[c] |= clsHost
		}
		if '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			t[c] |= clsHex
		}
	}
	return t
}()

func isIn(b byte, set string) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == b {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFold reports whether b equals the lower-case ASCII s ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// equalFoldBytes reports whether a equals the lower-case b ignoring case.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != b[i] {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// nextListElem splits the first element off a comma-separated list (RFC 9110
// 5.6.1), trimmed of OWS; empty elements come back empty and are the
// caller's to skip.
func nextListElem(v []byte) (elem, rest []byte) {
	for i, c := range v {
		if c == ',' {
			return trimOWS(v[:i]), v[i+1:]
		}
	}
	return trimOWS(v), nil
}
