package headerops

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

type partKind uint8

const (
	partLiteral partKind = iota
	partReqHeader
	partRespHeader
	partRemoteAddr
	partRemoteAddrNoPort
	partLocalAddr
	partLocalAddrNoPort
	partStartTime
	partProtocol
	partServerName
	partPeerURISAN
)

// Supported lists the formatter commands ParseValue accepts, for error
// messages and docs.
const Supported = "%REQ(h)%, %REQ(h?alt)%, %RESP(h)%, %RESP(h?alt)% (each with optional :N truncation), " +
	"%DOWNSTREAM_REMOTE_ADDRESS%, %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %DOWNSTREAM_LOCAL_ADDRESS%, " +
	"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%, %START_TIME%, %PROTOCOL%, %REQUESTED_SERVER_NAME%, %DOWNSTREAM_PEER_URI_SAN%, %%"

// startTimeLayout is Envoy's default %START_TIME% format
// (%Y-%m-%dT%H:%M:%E3SZ), always in UTC.
const startTimeLayout = "2006-01-02T15:04:05.000Z"

type part struct {
	kind      partKind
	text      string // literal text, or the header name
	alt       string // fallback header for REQ(a?b)
	maxLen    int    // 0: no truncation
	pseudoReq byte   // for REQ of a pseudo-header: 'a'uthority, 'p'ath, 'm'ethod, 's'cheme
}

// Value is a header value: a literal, or literal text interleaved with
// formatter commands. The zero value is the empty literal.
type Value struct {
	literal string
	parts   []part // nil for a literal
}

// IsLiteral reports whether v has no formatter commands.
func (v *Value) IsLiteral() bool { return v.parts == nil }

// ParseValue parses a header value. Values without '%' are literals.
func ParseValue(s string) (Value, error) {
	if strings.IndexByte(s, '%') < 0 {
		return Value{literal: s}, nil
	}
	var parts []part
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			parts = append(parts, part{kind: partLiteral, text: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit = append(lit, c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit = append(lit, '%')
			i += 2
			continue
		}
		end := commandEnd(s, i+1)
		if end < 0 {
			return Value{}, fmt.Errorf("%q: unterminated formatter command at offset %d", s, i)
		}
		p, err := parseCommand(s[i+1 : end])
		if err != nil {
			return Value{}, fmt.Errorf("%q: %w", s, err)
		}
		flush()
		parts = append(parts, p)
		i = end + 1
	}
	flush()
	if len(parts) == 1 && parts[0].kind == partLiteral { // only "%%" escapes
		return Value{literal: parts[0].text}, nil
	}
	return Value{parts: parts}, nil
}

// commandEnd returns the index of the '%' closing the command that starts at
// i (just after the opening '%'), or -1. Arguments in parentheses may
// contain '%' (as in %START_TIME(%s)%), so the closing ')' is found first.
func commandEnd(s string, i int) int {
	j := i
	for j < len(s) && (s[j] == '_' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
		j++
	}
	if j < len(s) && s[j] == '(' {
		c := strings.IndexByte(s[j:], ')')
		if c < 0 {
			return -1
		}
		j += c + 1
	}
	k := strings.IndexByte(s[j:], '%')
	if k < 0 {
		return -1
	}
	return j + k
}

func parseCommand(cmd string) (part, error) {
	name, arg, maxLen := cmd, "", 0
	if i := strings.IndexByte(cmd, '('); i >= 0 {
		j := strings.LastIndexByte(cmd, ')')
		if j < i {
			return part{}, fmt.Errorf("command %%%s%%: missing ')'", cmd)
		}
		name, arg = cmd[:i], cmd[i+1:j]
		if rest := cmd[j+1:]; rest != "" {
			if rest[0] != ':' {
				return part{}, fmt.Errorf("command %%%s%%: unexpected %q after ')'", cmd, rest)
			}
			n, err := strconv.Atoi(rest[1:])
			if err != nil || n <= 0 {
				return part{}, fmt.Errorf("command %%%s%%: truncation %q must be a positive integer", cmd, rest[1:])
			}
			maxLen = n
		}
	}
	switch name {
	case "REQ", "RESP":
		return parseHeaderCommand(cmd, name, arg, maxLen)
	case "DOWNSTREAM_REMOTE_ADDRESS":
		return noArgs(cmd, arg, maxLen, partRemoteAddr)
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		return noArgs(cmd, arg, maxLen, partRemoteAddrNoPort)
	case "DOWNSTREAM_LOCAL_ADDRESS":
		return noArgs(cmd, arg, maxLen, partLocalAddr)
	case "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		return noArgs(cmd, arg, maxLen, partLocalAddrNoPort)
	case "START_TIME":
		return noArgs(cmd, arg, maxLen, partStartTime)
	case "PROTOCOL":
		return noArgs(cmd, arg, maxLen, partProtocol)
	case "REQUESTED_SERVER_NAME":
		return noArgs(cmd, arg, maxLen, partServerName)
	case "DOWNSTREAM_PEER_URI_SAN":
		return noArgs(cmd, arg, maxLen, partPeerURISAN)
	}
	return part{}, fmt.Errorf("formatter command %%%s%% is not supported; supported: %s", cmd, Supported)
}

func noArgs(cmd, arg string, maxLen int, k partKind) (part, error) {
	if arg != "" || strings.IndexByte(cmd, '(') >= 0 {
		return part{}, fmt.Errorf("command %%%s%% takes no arguments (custom formats are not supported)", cmd)
	}
	return part{kind: k, maxLen: maxLen}, nil
}

func parseHeaderCommand(cmd, name, arg string, maxLen int) (part, error) {
	if arg == "" {
		return part{}, fmt.Errorf("command %%%s%%: header name required", cmd)
	}
	p := part{kind: partReqHeader, maxLen: maxLen}
	if name == "RESP" {
		p.kind = partRespHeader
	}
	h, alt, _ := strings.Cut(arg, "?")
	p.text, p.alt = strings.ToLower(h), strings.ToLower(alt)
	if p.text == "" || (strings.Contains(arg, "?") && p.alt == "") {
		return part{}, fmt.Errorf("command %%%s%%: empty header name", cmd)
	}
	if p.alt != "" && p.alt[0] == ':' {
		return part{}, fmt.Errorf("command %%%s%%: pseudo-header %q is only supported as the main header", cmd, p.alt)
	}
	if p.text[0] == ':' || p.text == "host" {
		if p.kind == partRespHeader {
			return part{}, fmt.Errorf("command %%%s%%: response pseudo-headers are not supported", cmd)
		}
		switch p.text {
		case ":authority", "host":
			p.pseudoReq = 'a'
		case ":path":
			p.pseudoReq = 'p'
		case ":method":
			p.pseudoReq = 'm'
		case ":scheme":
			p.pseudoReq = 's'
		default:
			return part{}, fmt.Errorf("command %%%s%%: unknown pseudo-header %q", cmd, p.text)
		}
	}
	return p, nil
}

// AppendTo renders v onto dst. Unknown values (a missing header, no
// downstream address) render as the empty string, as Envoy does for headers.
func (v *Value) AppendTo(dst []byte, s *filter.Stream) []byte {
	if v.parts == nil {
		return append(dst, v.literal...)
	}
	for i := range v.parts {
		p := &v.parts[i]
		start := len(dst)
		switch p.kind {
		case partLiteral:
			dst = append(dst, p.text...)
		case partReqHeader:
			if s.Req != nil {
				dst = append(dst, reqValue(p, s.Req)...)
			}
		case partRespHeader:
			if s.Resp != nil {
				dst = append(dst, headerValue(&s.Resp.Header, p.text, p.alt)...)
			}
		case partRemoteAddr:
			dst = appendAddrPort(dst, s.Downstream.RemoteAddr, true)
		case partRemoteAddrNoPort:
			dst = appendAddrPort(dst, s.Downstream.RemoteAddr, false)
		case partLocalAddr:
			dst = appendAddrPort(dst, s.Downstream.LocalAddr, true)
		case partLocalAddrNoPort:
			dst = appendAddrPort(dst, s.Downstream.LocalAddr, false)
		case partStartTime:
			if !s.Start.IsZero() {
				dst = s.Start.UTC().AppendFormat(dst, startTimeLayout)
			}
		case partProtocol:
			dst = appendProtocol(dst, s.Req)
		case partServerName:
			if s.Downstream.TLS != nil {
				dst = append(dst, s.Downstream.TLS.ServerName...)
			}
		case partPeerURISAN:
			// The verified client certificate's SPIFFE ID (mTLS).
			dst = append(dst, s.Downstream.PeerIdentity...)
		}
		if p.maxLen > 0 && len(dst)-start > p.maxLen {
			dst = dst[:start+p.maxLen]
		}
	}
	return dst
}

func reqValue(p *part, r *message.Request) []byte {
	switch p.pseudoReq {
	case 'a':
		return r.Authority
	case 'p':
		return r.Path
	case 'm':
		return r.Method
	case 's':
		return r.Scheme
	}
	return headerValue(&r.Header, p.text, p.alt)
}

func headerValue(h *message.Headers, name, alt string) []byte {
	if v, ok := h.Get(name); ok {
		return v
	}
	if alt != "" {
		v, _ := h.Get(alt)
		return v
	}
	return nil
}

func appendAddrPort(dst []byte, ap netip.AddrPort, withPort bool) []byte {
	if !ap.Addr().IsValid() {
		return dst
	}
	if withPort {
		return ap.AppendTo(dst)
	}
	return ap.Addr().AppendTo(dst)
}

func appendProtocol(dst []byte, r *message.Request) []byte {
	if r == nil || r.ProtoMajor == 0 {
		return dst
	}
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return append(dst, "HTTP/1.0"...)
	case r.ProtoMajor == 1:
		return append(dst, "HTTP/1.1"...)
	case r.ProtoMajor == 2:
		return append(dst, "HTTP/2"...)
	}
	return append(dst, "HTTP/3"...)
}
