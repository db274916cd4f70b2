package telemetry

import (
	"encoding/hex"
)

// TraceID and SpanID are the W3C trace-context identifiers.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// IsValid reports whether the id is not all zeros (the spec's invalid value).
func (t TraceID) IsValid() bool { return t != TraceID{} }

// IsValid reports whether the id is not all zeros.
func (s SpanID) IsValid() bool { return s != SpanID{} }

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// SpanContext is what crosses process boundaries.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	Sampled bool
}

// Header names, lower-case as message.Headers stores them.
const (
	hdrTraceparent = "traceparent"
	hdrTracestate  = "tracestate"
	hdrB3          = "b3"
	hdrB3TraceID   = "x-b3-traceid"
	hdrB3SpanID    = "x-b3-spanid"
	hdrB3Parent    = "x-b3-parentspanid"
	hdrB3Sampled   = "x-b3-sampled"
	hdrB3Flags     = "x-b3-flags"
)

// fromHex decodes lower-case hex only: the W3C grammar forbids upper case
// in traceparent, and B3 ids are lower-hex too.
func fromHex(dst []byte, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := hexVal(src[2*i])
		lo, ok2 := hexVal(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789abcdef"

func appendHex(dst []byte, src []byte) []byte {
	for _, b := range src {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// ParseTraceparent parses a W3C traceparent header value. It accepts version
// 00 exactly (55 bytes) and, as the spec requires for forward compatibility,
// a higher version whose first 55 bytes parse and which continues with '-'.
// Version ff, all-zero ids, upper-case hex and any other deviation make the
// value invalid: the caller then starts a new trace and must not forward the
// header as it came.
func ParseTraceparent(v []byte) (SpanContext, bool) {
	var sc SpanContext
	if len(v) < 55 {
		return sc, false
	}
	var ver [1]byte
	if !fromHex(ver[:], v[0:2]) || ver[0] == 0xff {
		return sc, false
	}
	if ver[0] == 0 && len(v) != 55 {
		return sc, false
	}
	if ver[0] > 0 && len(v) > 55 && v[55] != '-' {
		return sc, false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return sc, false
	}
	if !fromHex(sc.TraceID[:], v[3:35]) || !fromHex(sc.SpanID[:], v[36:52]) {
		return sc, false
	}
	var flags [1]byte
	if !fromHex(flags[:], v[53:55]) {
		return sc, false
	}
	if !sc.TraceID.IsValid() || !sc.SpanID.IsValid() {
		return sc, false
	}
	sc.Sampled = flags[0]&1 == 1
	return sc, true
}

// AppendTraceparent appends the version-00 traceparent for sc.
func AppendTraceparent(dst []byte, sc SpanContext) []byte {
	dst = append(dst, "00-"...)
	dst = appendHex(dst, sc.TraceID[:])
	dst = append(dst, '-')
	dst = appendHex(dst, sc.SpanID[:])
	if sc.Sampled {
		return append(dst, "-01"...)
	}
	return append(dst, "-00"...)
}

// ValidTracestate reports whether v is a well-formed W3C tracestate list:
// at most 32 list members of key=value, keys per the spec's grammar
// (lcalpha then lcalpha/digit/_-*/ up to 256, or tenant@system), values of
// printable ASCII without ',' and '=' (trailing spaces trimmed), empty
// members (",,") allowed. An invalid tracestate is dropped, not forwarded.
func ValidTracestate(v []byte) bool {
	if len(v) > 512 {
		// The spec lets a propagator truncate beyond 512; we drop instead of
		// editing someone else's vendor data.
		return false
	}
	members := 0
	for len(v) > 0 {
		var m []byte
		if i := indexByte(v, ','); i >= 0 {
			m, v = v[:i], v[i+1:]
		} else {
			m, v = v, nil
		}
		m = trimOWS(m)
		if len(m) == 0 {
			continue
		}
		members++
		if members > 32 || !validMember(m) {
			return false
		}
	}
	return true
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
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

func validMember(m []byte) bool {
	eq := indexByte(m, '=')
	if eq <= 0 {
		return false
	}
	key, val := m[:eq], m[eq+1:]
	if !validKey(key) || len(val) == 0 || len(val) > 256 {
		return false
	}
	for i, c := range val {
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
		if c == ' ' && i == len(val)-1 {
			return false
		}
	}
	return true
}

func validKey(k []byte) bool {
	if len(k) > 256 {
		return false
	}
	at := indexByte(k, '@')
	if at < 0 {
		return k[0] >= 'a' && k[0] <= 'z' && keyChars(k[1:])
	}
	tenant, system := k[:at], k[at+1:]
	if len(tenant) == 0 || len(tenant) > 241 || len(system) == 0 || len(system) > 14 {
		return false
	}
	if !(isLCAlpha(tenant[0]) || isDigit(tenant[0])) || !keyChars(tenant[1:]) {
		return false
	}
	return isLCAlpha(system[0]) && keyChars(system[1:])
}

func keyChars(b []byte) bool {
	for _, c := range b {
		if !(isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '*' || c == '/') {
			return false
		}
	}
	return true
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// ParseB3Single parses the single "b3" header:
// {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]], a 64-bit trace id
// is left-padded with zeros. A bare sampling state ("0", "1", "d") carries
// no ids and is reported as not ok (there is nothing to continue).
func ParseB3Single(v []byte) (SpanContext, bool) {
	var sc SpanContext
	i := indexByte(v, '-')
	if i < 0 {
		return sc, false
	}
	if !parseB3TraceID(&sc.TraceID, v[:i]) {
		return sc, false
	}
	rest := v[i+1:]
	sid := rest
	var state []byte
	if j := indexByte(rest, '-'); j >= 0 {
		sid, state = rest[:j], rest[j+1:]
	}
	if !fromHex(sc.SpanID[:], sid) || !sc.SpanID.IsValid() {
		return sc, false
	}
	if state != nil {
		st := state
		var parent []byte
		if k := indexByte(state, '-'); k >= 0 {
			st, parent = state[:k], state[k+1:]
			var p SpanID
			if !fromHex(p[:], parent) {
				return sc, false
			}
		}
		switch string(st) {
		case "1", "d":
			sc.Sampled = true
		case "0":
		default:
			return sc, false
		}
	} else {
		// No sampling state: the receiver decides; we treat it as sampled
		// so that the caller's trace is not cut by us.
		sc.Sampled = true
	}
	return sc, true
}

func parseB3TraceID(dst *TraceID, v []byte) bool {
	switch len(v) {
	case 32:
		if !fromHex(dst[:], v) {
			return false
		}
	case 16:
		*dst = TraceID{}
		if !fromHex(dst[8:], v) {
			return false
		}
	default:
		return false
	}
	return dst.IsValid()
}

// ParseB3Multi parses the X-B3-* headers given their values (nil when
// absent).
func ParseB3Multi(traceID, spanID, sampled, flags []byte) (SpanContext, bool) {
	var sc SpanContext
	if !parseB3TraceID(&sc.TraceID, traceID) {
		return sc, false
	}
	if !fromHex(sc.SpanID[:], spanID) || !sc.SpanID.IsValid() {
		return sc, false
	}
	switch {
	case string(flags) == "1":
		sc.Sampled = true
	case sampled == nil:
		sc.Sampled = true
	case string(sampled) == "1" || string(sampled) == "true":
		sc.Sampled = true
	case string(sampled) == "0" || string(sampled) == "false":
	default:
		return sc, false
	}
	return sc, true
}

// AppendB3Single appends the single-header B3 encoding of sc.
func AppendB3Single(dst []byte, sc SpanContext) []byte {
	dst = appendHex(dst, sc.TraceID[:])
	dst = append(dst, '-')
	dst = appendHex(dst, sc.SpanID[:])
	if sc.Sampled {
		return append(dst, "-1"...)
	}
	return append(dst, "-0"...)
}
