package http1

import (
	"bytes"
	"io"
	"math"
	"slices"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// fieldMode says which fields of a section are framing or hop-by-hop.
type fieldMode uint8

const (
	modeRequest fieldMode = iota
	modeResponse
	modeTrailer
)

// headState collects what the framing decision needs while the fields of one
// head stream into the message. Value slices point into the message's arena.
type headState struct {
	bytes, fields int

	hosts int
	host  []byte

	cls   int // content-length field lines
	cl    int64
	clBad bool

	te teState

	connClose, connKeepAlive, connUpgrade bool

	upgrades   int
	upgrade    []byte
	teTrailers bool
	expect100  bool
}

// teState accumulates the transfer-coding list across Transfer-Encoding
// field lines.
type teState struct {
	seen        bool
	codings     int
	chunked     int
	chunkedLast bool
	unknown     bool
	other       bool // a registered coding other than chunked
}

func (t *teState) add(v []byte) {
	t.seen = true
	for rest := v; rest != nil; {
		var e []byte
		e, rest = nextListElem(rest)
		if len(e) == 0 {
			continue
		}
		t.codings++
		switch {
		case equalFold(e, "chunked"):
			t.chunked++
			t.chunkedLast = true
		case equalFold(e, "gzip"), equalFold(e, "x-gzip"), equalFold(e, "deflate"),
			equalFold(e, "compress"), equalFold(e, "x-compress"):
			t.other = true
			t.chunkedLast = false
		default:
			t.unknown = true
			t.chunkedLast = false
		}
	}
}

// verdict accepts exactly "chunked" (RFC 9112 6.1, 6.3): an unknown coding is
// 501, chunked missing, repeated or not last is 400 (the length cannot be
// determined), and a registered coding before chunked is 501 because the
// proxy does not decode transfer-codings.
func (t *teState) verdict() (int, string) {
	switch {
	case t.codings == 0:
		return 400, "empty transfer-encoding"
	case t.unknown:
		return 501, "unknown transfer-coding"
	case t.chunked != 1 || !t.chunkedLast:
		return 400, "chunked must be the final transfer-coding, once"
	case t.other:
		return 501, "transfer-coding not implemented"
	}
	return 0, ""
}

// parseContentLength accepts 1*DIGIT, or a list of identical such values
// (RFC 9110 8.6), and returns the value and its first element.
func parseContentLength(v []byte) (int64, []byte, bool) {
	var n int64
	var canon []byte
	for rest := v; rest != nil; {
		var e []byte
		e, rest = nextListElem(rest)
		x, ok := parseDigits(e)
		if !ok {
			return 0, nil, false
		}
		if canon == nil {
			n, canon = x, e
		} else if x != n {
			return 0, nil, false
		}
	}
	return n, canon, true
}

func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// readFields reads field lines up to the empty line that ends the section,
// copying them into h (lower-cased names) and recording framing fields in
// r.st. tooLong is the status for exceeding the limits (431 on heads).
func (r *Reader) readFields(h *message.Headers, mode fieldMode) error {
	st := &r.st
	for {
		budget := r.lim.MaxHeaderBytes - st.bytes
		line, err := r.readLine(budget, 431, "header section too large")
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		st.bytes += len(line) + 2
		if len(line) == 0 {
			return nil
		}
		st.fields++
		if st.fields > r.lim.MaxHeaders {
			return r.fail(431, "too many header fields")
		}
		if err := r.addField(h, line, mode); err != nil {
			return err
		}
	}
}

// addField validates one field line and copies it into h's arena, lower-
// casing the name on the way. Framing and hop-by-hop fields are recorded in
// r.st instead of being added.
func (r *Reader) addField(h *message.Headers, line []byte, mode fieldMode) error {
	if line[0] == ' ' || line[0] == '\t' {
		return r.fail(400, "obsolete line folding")
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return r.fail(400, "header line without colon")
	}
	if colon == 0 {
		return r.fail(400, "empty header name")
	}
	rawName, value := line[:colon], trimOWS(line[colon+1:])
	for _, c := range value {
		if charClass[c]&clsValue == 0 {
			return r.fail(400, "invalid byte in header value")
		}
	}
	a := h.Arena()
	buf := slices.Grow(*a, len(rawName)+len(value))
	start := len(buf)
	buf = buf[:start+len(rawName)]
	dst := buf[start:]
	for i, c := range rawName {
		if charClass[c]&clsToken == 0 {
			return r.fail(400, "invalid header name")
		}
		dst[i] = lower(c)
	}
	nameEnd := len(buf)
	buf = append(buf, value...)
	*a = buf
	name := buf[start:nameEnd:nameEnd]
	val := buf[nameEnd:len(buf):len(buf)]

	st := &r.st
	switch string(name) {
	case "content-length":
		if mode == modeTrailer {
			return nil
		}
		n, canon, ok := parseContentLength(val)
		if !ok {
			return r.fail(400, "invalid content-length")
		}
		st.cls++
		if st.cls > 1 {
			if n != st.cl {
				return r.fail(400, "conflicting content-length")
			}
			return nil
		}
		st.cl = n
		h.AddLowerNoCopy(name, canon)
		return nil
	case "transfer-encoding":
		if mode != modeTrailer {
			st.te.add(val)
		}
		return nil
	case "connection":
		if mode != modeTrailer {
			r.addConnection(val)
		}
		return nil
	case "keep-alive", "proxy-connection":
		return nil
	case "upgrade":
		if mode != modeTrailer {
			st.upgrades++
			st.upgrade = val
		}
		return nil
	case "te":
		if mode == modeRequest {
			st.teTrailers = st.teTrailers || hasToken(val, "trailers")
		}
		return nil
	case "host":
		switch mode {
		case modeTrailer:
			return nil
		case modeRequest:
			for _, c := range val {
				if charClass[c]&clsHost == 0 {
					return r.fail(400, "invalid host")
				}
			}
			st.hosts++
			st.host = val
			return nil
		}
	case "expect":
		switch mode {
		case modeTrailer:
			return nil
		case modeRequest:
			if equalFold(val, "100-continue") {
				st.expect100 = true
				return nil
			}
		}
	case "trailer":
		if mode == modeTrailer {
			return nil
		}
	}
	h.AddLowerNoCopy(name, val)
	return nil
}

func (r *Reader) addConnection(v []byte) {
	st := &r.st
	for rest := v; rest != nil; {
		var e []byte
		e, rest = nextListElem(rest)
		switch {
		case len(e) == 0:
		case equalFold(e, "close"):
			st.connClose = true
		case equalFold(e, "keep-alive"):
			st.connKeepAlive = true
		case equalFold(e, "upgrade"):
			st.connUpgrade = true
		default:
			r.connVals = append(r.connVals, e)
		}
	}
}

// hasToken reports whether the list v holds token (lower-case).
func hasToken(v []byte, token string) bool {
	for rest := v; rest != nil; {
		var e []byte
		e, rest = nextListElem(rest)
		if equalFold(e, token) {
			return true
		}
	}
	return false
}

// arenaString copies s into h's arena, for names the codec adds itself.
func arenaString(h *message.Headers, s string) []byte {
	a := h.Arena()
	start := len(*a)
	*a = append(*a, s...)
	return (*a)[start:len(*a):len(*a)]
}

// dropConnectionFields removes the fields that the Connection header named as
// hop-by-hop (RFC 9110 7.6.1).
func (r *Reader) dropConnectionFields(h *message.Headers) {
	if len(r.connVals) == 0 {
		return
	}
	h.Filter(func(f message.Field) bool {
		for _, t := range r.connVals {
			if equalFoldBytes(t, f.Name) {
				return false
			}
		}
		return true
	})
}

// beginHead resets the per-head state.
func (r *Reader) beginHead(lim Limits, resp bool) error {
	if r.inBody {
		return ErrBodyUnread
	}
	r.lim = lim.withDefaults()
	r.resp = resp
	r.st = headState{}
	r.connVals = r.connVals[:0]
	return nil
}

// ReadRequest parses one request head into req, which the caller has Reset.
// It fills Method, Path (origin-form; the path of an absolute-form target
// whose authority becomes Authority; "*" for OPTIONS; empty for CONNECT,
// whose authority-form target becomes Authority), Authority from Host
// (exactly one Host is required on HTTP/1.1), Scheme "http" (the caller sets
// https), the protocol version, ContentLength and the header with lower-case
// names. Hop-by-hop fields are removed: connection, keep-alive,
// proxy-connection, transfer-encoding, te (kept as "te: trailers" when
// asked), upgrade (kept when Framing.Upgrade), expect: 100-continue
// (Framing.ExpectContinue), host, and every field the Connection header
// names. Content-Length stays as one field.
//
// A clean close before the first byte of a request (leading empty lines
// aside) returns io.EOF; a malformed request a *Error. On any error the
// returned Framing has Close set: the connection cannot carry on.
func (r *Reader) ReadRequest(req *message.Request, lim Limits) (Framing, error) {
	f, err := r.readRequest(req, lim)
	if err != nil {
		return Framing{Close: true}, err
	}
	return f, nil
}

func (r *Reader) readRequest(req *message.Request, lim Limits) (Framing, error) {
	if err := r.beginHead(lim, false); err != nil {
		return Framing{}, err
	}
	st := &r.st
	var line []byte
	for {
		var err error
		line, err = r.readLine(r.lim.MaxRequestLine, 414, "request line too long")
		if err != nil {
			return Framing{}, err
		}
		st.bytes += len(line) + 2
		if len(line) > 0 {
			break
		}
		// RFC 9112 2.2: ignore empty lines before a request line, within reason.
		if st.bytes > r.lim.MaxRequestLine {
			return Framing{}, r.fail(400, "too many empty lines")
		}
	}
	major, minor, err := r.parseRequestLine(req, line)
	if err != nil {
		return Framing{}, err
	}
	if err := r.readFields(&req.Header, modeRequest); err != nil {
		return Framing{}, err
	}
	return r.requestFraming(req, major, minor)
}

// parseRequestLine parses "method SP request-target SP HTTP-version" and
// copies what it keeps into req: line is refilled by the next read.
func (r *Reader) parseRequestLine(req *message.Request, line []byte) (major, minor uint8, err error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return 0, 0, r.fail(400, "malformed request line")
	}
	method, rest := line[:sp1], line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return 0, 0, r.fail(400, "malformed request line")
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if major, minor, err = r.parseVersion(version); err != nil {
		return 0, 0, err
	}
	for _, c := range method {
		if charClass[c]&clsToken == 0 {
			return 0, 0, r.fail(400, "invalid method")
		}
	}
	for _, c := range target {
		if charClass[c]&clsTarget == 0 {
			return 0, 0, r.fail(400, "invalid request target")
		}
	}
	req.SetMethod(string(method))
	req.SetScheme("http")
	req.ProtoMajor, req.ProtoMinor = major, minor

	isConnect := string(method) == "CONNECT"
	switch {
	case isConnect:
		if !validAuthority(target, true) {
			return 0, 0, r.fail(400, "CONNECT needs an authority-form target")
		}
		req.SetAuthorityBytes(target)
	case target[0] == '/':
		req.SetPathBytes(target)
	case len(target) == 1 && target[0] == '*':
		if string(method) != "OPTIONS" {
			return 0, 0, r.fail(400, "asterisk-form target is for OPTIONS only")
		}
		req.SetPath("*")
	default:
		auth, path, ok := splitAbsolute(target)
		if !ok {
			return 0, 0, r.fail(400, "invalid request target")
		}
		req.SetAuthorityBytes(auth)
		switch {
		case len(path) == 0 && string(method) == "OPTIONS":
			req.SetPath("*") // RFC 9112 3.2.4
		case len(path) == 0:
			req.SetPath("/")
		case path[0] == '?':
			r.tmp = append(append(r.tmp[:0], '/'), path...)
			req.SetPathBytes(r.tmp)
		default:
			req.SetPathBytes(path)
		}
	}
	return major, minor, nil
}

// parseVersion accepts "HTTP/" DIGIT "." DIGIT; versions other than 1.0 and
// 1.1 are 505.
func (r *Reader) parseVersion(v []byte) (uint8, uint8, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, 0, r.fail(400, "malformed HTTP version")
	}
	major, minor := v[5]-'0', v[7]-'0'
	if major != 1 || minor > 1 {
		return 0, 0, r.fail(505, "HTTP version not supported")
	}
	return major, minor, nil
}

// splitAbsolute splits an http(s) absolute-form target into authority and
// path-and-query. Userinfo and empty authorities are refused.
func splitAbsolute(t []byte) (auth, path []byte, ok bool) {
	var rest []byte
	switch {
	case len(t) > 7 && equalFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && equalFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, nil, false
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	auth, path = rest[:end], rest[end:]
	if !validAuthority(auth, false) {
		return nil, nil, false
	}
	return auth, path, true
}

// validAuthority checks host[:port] bytes; needPort requires ":port" as for
// CONNECT.
func validAuthority(a []byte, needPort bool) bool {
	if len(a) == 0 {
		return false
	}
	for _, c := range a {
		if charClass[c]&clsHost == 0 {
			return false
		}
	}
	if !needPort {
		return true
	}
	colon := bytes.LastIndexByte(a, ':')
	if colon <= 0 || colon == len(a)-1 || bytes.IndexByte(a[colon:], ']') >= 0 {
		return false
	}
	_, ok := parseDigits(a[colon+1:])
	return ok
}

func (r *Reader) requestFraming(req *message.Request, major, minor uint8) (Framing, error) {
	st := &r.st
	http11 := minor == 1
	if st.hosts > 1 || (http11 && st.hosts == 0) {
		return Framing{}, r.fail(400, "exactly one host header is required")
	}
	if st.hosts == 1 && len(req.Authority) == 0 {
		req.SetAuthorityBytes(st.host)
	}
	if st.upgrades > 1 {
		return Framing{}, r.fail(400, "repeated upgrade header")
	}
	f := Framing{ContentLength: 0}
	switch {
	case st.te.seen:
		if st.cls > 0 {
			return Framing{}, r.fail(400, "both content-length and transfer-encoding")
		}
		if !http11 {
			return Framing{}, r.fail(400, "transfer-encoding in HTTP/1.0")
		}
		if status, reason := st.te.verdict(); status != 0 {
			return Framing{}, r.fail(status, reason)
		}
		f.Chunked = true
		f.ContentLength = -1
	case st.cls > 0:
		f.ContentLength = st.cl
	}
	f.NoBody = !f.Chunked && f.ContentLength == 0
	if string(req.Method) == "CONNECT" && !f.NoBody {
		return Framing{}, r.fail(400, "CONNECT with a body")
	}
	if http11 {
		f.Close = st.connClose
	} else {
		f.Close = !st.connKeepAlive || st.connClose
	}
	f.ExpectContinue = http11 && st.expect100 && !f.NoBody
	// RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored.
	f.Upgrade = http11 && st.connUpgrade && len(st.upgrade) > 0

	h := &req.Header
	r.dropConnectionFields(h)
	if f.Upgrade {
		h.AddLowerNoCopy(arenaString(h, "upgrade"), st.upgrade)
	}
	if st.teTrailers {
		h.Add("te", "trailers")
	}
	req.ContentLength = f.ContentLength
	r.inBody = !f.NoBody
	return f, nil
}
