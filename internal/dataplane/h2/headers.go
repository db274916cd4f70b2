package h2

import (
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// sinkMode says what a header block is decoded into.
type sinkMode uint8

const (
	sinkDiscard  sinkMode = iota // keep HPACK state in sync, store nothing
	sinkRequest                  // request head: pseudo-headers to Request fields
	sinkResponse                 // response head: :status
	sinkTrailer                  // trailers: no pseudo-headers allowed
)

const (
	pseudoMethod = 1 << iota
	pseudoScheme
	pseudoAuthority
	pseudoPath
	pseudoStatus
)

// fieldSink receives decoded header fields from hpack.Decoder and applies
// RFC 9113 section 8 rules as they arrive, copying each accepted field into
// the target message's arena (the decoder's strings are not kept).
type fieldSink struct {
	mode    sinkMode
	req     *message.Request
	hdr     *message.Headers
	maxSize uint32

	size          uint32
	tooLarge      bool
	malformed     bool
	sawRegular    bool
	pseudo        uint8
	status        int
	contentLength int64
	scratch       []byte
}

func (s *fieldSink) start(mode sinkMode, req *message.Request, hdr *message.Headers, maxSize uint32) {
	*s = fieldSink{mode: mode, req: req, hdr: hdr, maxSize: maxSize, contentLength: -1, scratch: s.scratch}
}

func (s *fieldSink) emit(f hpack.HeaderField) {
	if s.mode == sinkDiscard || s.malformed {
		return
	}
	s.size += f.Size()
	if s.size > s.maxSize {
		s.tooLarge = true
		return
	}
	if s.tooLarge {
		return
	}
	name, value := f.Name, f.Value
	if len(name) > 0 && name[0] == ':' {
		s.emitPseudo(name, value)
		return
	}
	s.sawRegular = true
	if !validFieldName(name) || !validFieldValue(value) {
		s.malformed = true
		return
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		s.malformed = true // RFC 9113 8.2.2
		return
	case "te":
		if value != "trailers" {
			s.malformed = true
			return
		}
	case "content-length":
		if s.mode == sinkTrailer {
			break
		}
		n, ok := parseContentLength(value)
		if !ok || (s.contentLength >= 0 && n != s.contentLength) {
			s.malformed = true
			return
		}
		s.contentLength = n
	}
	if s.hdr == nil {
		return
	}
	if name == "cookie" && s.mode == sinkRequest {
		// RFC 9113 8.2.3: crumbs may arrive as separate fields; rejoin
		// them so that an HTTP/1.1 upstream gets the one header it expects.
		if prev, ok := s.hdr.Get("cookie"); ok {
			s.scratch = append(append(append(s.scratch[:0], prev...), "; "...), value...)
			s.hdr.SetBytes("cookie", s.scratch)
			return
		}
	}
	s.hdr.Add(name, value)
}

func (s *fieldSink) emitPseudo(name, value string) {
	if s.sawRegular || s.mode == sinkTrailer {
		s.malformed = true // RFC 9113 8.3: pseudo-headers first, never in trailers
		return
	}
	var bit uint8
	switch s.mode {
	case sinkRequest:
		switch name {
		case ":method":
			bit = pseudoMethod
			s.req.SetMethod(value)
		case ":scheme":
			bit = pseudoScheme
			s.req.SetScheme(value)
		case ":authority":
			bit = pseudoAuthority
			s.req.SetAuthority(value)
		case ":path":
			bit = pseudoPath
			s.req.SetPath(value)
		}
	case sinkResponse:
		if name == ":status" {
			bit = pseudoStatus
			s.status = parseStatus(value)
			if s.status == 0 {
				s.malformed = true
			}
		}
	}
	if bit == 0 || s.pseudo&bit != 0 {
		s.malformed = true // unknown, misplaced or repeated
		return
	}
	s.pseudo |= bit
}

// checkRequest applies the whole-head rules of RFC 9113 8.3.1 once the block
// is decoded.
func (s *fieldSink) checkRequest() bool {
	if s.malformed {
		return false
	}
	r := s.req
	if s.pseudo&pseudoMethod == 0 {
		return false
	}
	if string(r.Method) == "CONNECT" {
		return s.pseudo&(pseudoScheme|pseudoPath) == 0 && s.pseudo&pseudoAuthority != 0
	}
	if s.pseudo&(pseudoScheme|pseudoPath) != pseudoScheme|pseudoPath || len(r.Path) == 0 {
		return false
	}
	if len(r.Authority) == 0 {
		if h, ok := r.Header.Get("host"); ok {
			r.SetAuthorityBytes(h)
		}
	}
	return true
}

func validFieldName(s string) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || ('A' <= c && c <= 'Z') || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// validFieldValue: no NUL, CR, LF or other controls but HTAB, and no
// leading or trailing whitespace (RFC 9113 8.2.1).
func validFieldValue(s string) bool {
	if len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		return false
	}
	return httpguts.ValidHeaderFieldValue(s)
}

func parseContentLength(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func parseStatus(s string) int {
	if len(s) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if n < 100 {
		return 0
	}
	return n
}

// connectionSpecific reports header fields that must not be forwarded into
// HTTP/2 (RFC 9113 8.2.2); te is handled apart (only "trailers" may pass).
func connectionSpecific(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "host":
		return true
	}
	return false
}

// appendStatus writes a 3-digit status without strconv.
func appendStatus(b []byte, status int) []byte {
	if status < 100 || status > 999 {
		status = 502
	}
	return append(b, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
}

func appendInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var tmp [20]byte
	i := len(tmp)
	for n > 0 {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, tmp[i:]...)
}
