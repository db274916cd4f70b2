// Package strmatch compiles Envoy's StringMatcher and HeaderMatcher into
// matchers that run on the byte-slice headers of internal/dataplane/message
// without allocating in the common case (a header present once). The router
// and the filters share it so that a matcher means the same thing in a route
// and in a filter's config.
package strmatch

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

type kind uint8

const (
	kindExact kind = iota
	kindPrefix
	kindSuffix
	kindContains
	kindRegex
)

// String is a compiled envoy.type.matcher.v3.StringMatcher. It is immutable
// and safe for concurrent use.
type String struct {
	kind       kind
	value      string // lower-cased when ignoreCase
	valueB     []byte // value as bytes, for bytes.Contains without a conversion
	ignoreCase bool
	re         *regexp.Regexp
}

// CompileString compiles m. safe_regex uses Go's RE2-compatible engine with
// full-match semantics, as Envoy's google_re2 does; custom matchers are
// rejected.
func CompileString(m *matcherv3.StringMatcher) (String, error) {
	if m == nil {
		return String{}, fmt.Errorf("string matcher: missing")
	}
	s := String{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.value = kindExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.value = kindPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.value = kindSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.value = kindContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex)
		if err != nil {
			return String{}, fmt.Errorf("safe_regex: %w", err)
		}
		if s.ignoreCase {
			// Envoy ignores ignore_case for regexes; so do we, rather than
			// silently changing what the pattern means.
			s.ignoreCase = false
		}
		s.kind, s.re = kindRegex, re
	case *matcherv3.StringMatcher_Custom:
		return String{}, fmt.Errorf("custom: extension string matchers are not supported")
	default:
		return String{}, fmt.Errorf("match_pattern: one of exact, prefix, suffix, contains, safe_regex is required")
	}
	if s.ignoreCase {
		s.value = lowerASCII(s.value)
	}
	s.valueB = []byte(s.value)
	return s, nil
}

// CompileRegex compiles an Envoy RegexMatcher anchored at both ends.
func CompileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil || m.GetRegex() == "" {
		return nil, fmt.Errorf("regex: missing")
	}
	re, err := regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

// Match reports whether b matches.
func (s *String) Match(b []byte) bool {
	switch s.kind {
	case kindExact:
		if s.ignoreCase {
			return message.EqualFold(b, s.value)
		}
		return string(b) == s.value
	case kindPrefix:
		if len(b) < len(s.value) {
			return false
		}
		if s.ignoreCase {
			return message.EqualFold(b[:len(s.value)], s.value)
		}
		return string(b[:len(s.value)]) == s.value
	case kindSuffix:
		if len(b) < len(s.value) {
			return false
		}
		t := b[len(b)-len(s.value):]
		if s.ignoreCase {
			return message.EqualFold(t, s.value)
		}
		return string(t) == s.value
	case kindContains:
		if s.ignoreCase {
			return containsFold(b, s.value)
		}
		return bytes.Contains(b, s.valueB)
	case kindRegex:
		return s.re.Match(b)
	}
	return false
}

// MatchString is Match for a string. It may allocate: meant for config time.
func (s *String) MatchString(v string) bool {
	if s.kind == kindRegex {
		return s.re.MatchString(v)
	}
	return s.Match([]byte(v))
}

func containsFold(b []byte, lowerSub string) bool {
	n := len(lowerSub)
	for i := 0; i+n <= len(b); i++ {
		if message.EqualFold(b[i:i+n], lowerSub) {
			return true
		}
	}
	return false
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

type headerKind uint8

const (
	headerPresent headerKind = iota
	headerString
	headerRange
)

// Header is a compiled envoy.config.route.v3.HeaderMatcher. Like Envoy, a
// header present several times is matched against its values joined with
// ",".
type Header struct {
	name         string
	pseudo       pseudo
	kind         headerKind
	present      bool
	str          String
	rangeStart   int64
	rangeEnd     int64
	invert       bool
	missingEmpty bool
}

// pseudo says which request field a route header matcher reads.
type pseudo uint8

const (
	pseudoNone pseudo = iota
	pseudoMethod
	pseudoPath
	pseudoAuthority
	pseudoScheme
)

// CompileHeader compiles m for matching a header list; pseudo-headers are
// rejected (use CompileRequestHeader).
func CompileHeader(m *routev3.HeaderMatcher) (Header, error) {
	return compileHeader(m, false)
}

// CompileRequestHeader compiles m for MatchRequest: ":method", ":path",
// ":authority" (and "host"), ":scheme" read the request's fields, as in
// Envoy's route matching.
func CompileRequestHeader(m *routev3.HeaderMatcher) (Header, error) {
	return compileHeader(m, true)
}

func compileHeader(m *routev3.HeaderMatcher, allowPseudo bool) (Header, error) {
	if m == nil || m.GetName() == "" {
		return Header{}, fmt.Errorf("name: required")
	}
	h := Header{
		name:         lowerASCII(m.GetName()),
		invert:       m.GetInvertMatch(),
		missingEmpty: m.GetTreatMissingHeaderAsEmpty(),
	}
	if allowPseudo {
		switch h.name {
		case ":method":
			h.pseudo = pseudoMethod
		case ":path":
			h.pseudo = pseudoPath
		case ":authority", "host":
			h.pseudo = pseudoAuthority
		case ":scheme":
			h.pseudo = pseudoScheme
		default:
			if h.name[0] == ':' {
				return Header{}, fmt.Errorf("name %q: unknown pseudo-header", m.GetName())
			}
		}
	} else if h.name[0] == ':' {
		return Header{}, fmt.Errorf("name %q: pseudo-headers cannot be matched by this filter", m.GetName())
	}
	var err error
	switch p := m.GetHeaderMatchSpecifier().(type) {
	case nil:
		h.kind, h.present = headerPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		h.kind, h.present = headerPresent, p.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		if p.ExactMatch == "" { // Envoy: an empty exact value matches any value
			h.kind, h.present = headerPresent, true
		} else {
			h.kind, h.str = headerString, String{kind: kindExact, value: p.ExactMatch}
		}
	case *routev3.HeaderMatcher_PrefixMatch:
		h.kind, h.str = headerString, String{kind: kindPrefix, value: p.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		h.kind, h.str = headerString, String{kind: kindSuffix, value: p.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		h.kind, h.str = headerString, String{kind: kindContains, value: p.ContainsMatch, valueB: []byte(p.ContainsMatch)}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, rerr := CompileRegex(p.SafeRegexMatch)
		if rerr != nil {
			return Header{}, fmt.Errorf("safe_regex_match: %w", rerr)
		}
		h.kind, h.str = headerString, String{kind: kindRegex, re: re}
	case *routev3.HeaderMatcher_StringMatch:
		h.kind = headerString
		if h.str, err = CompileString(p.StringMatch); err != nil {
			return Header{}, fmt.Errorf("string_match: %w", err)
		}
	case *routev3.HeaderMatcher_RangeMatch:
		h.kind, h.rangeStart, h.rangeEnd = headerRange, p.RangeMatch.GetStart(), p.RangeMatch.GetEnd()
		if h.rangeStart >= h.rangeEnd {
			return Header{}, fmt.Errorf("range_match: start %d must be below end %d", h.rangeStart, h.rangeEnd)
		}
	default:
		return Header{}, fmt.Errorf("header_match_specifier: unsupported %T", p)
	}
	return h, nil
}

// Name returns the (lower-case) header name the matcher looks at.
func (h *Header) Name() string { return h.name }

// Match reports whether hs satisfies the matcher.
func (h *Header) Match(hs *message.Headers) bool {
	v, ok := h.value(hs)
	return h.matchValue(v, ok)
}

// MatchRequest is Match against a request, pseudo-headers included.
func (h *Header) MatchRequest(r *message.Request) bool {
	var v []byte
	switch h.pseudo {
	case pseudoMethod:
		v = r.Method
	case pseudoPath:
		v = r.Path
	case pseudoAuthority:
		v = r.Authority
	case pseudoScheme:
		v = r.Scheme
	default:
		var ok bool
		v, ok = h.value(&r.Header)
		return h.matchValue(v, ok)
	}
	return h.matchValue(v, true)
}

func (h *Header) matchValue(v []byte, ok bool) bool {
	if !ok && !h.missingEmpty {
		// An absent header satisfies only "must be absent" (present_match:
		// false), or its inversion.
		return h.kind == headerPresent && h.present == h.invert
	}
	var m bool
	switch h.kind {
	case headerPresent:
		m = h.present
	case headerString:
		m = h.str.Match(v)
	case headerRange:
		n, err := strconv.ParseInt(string(v), 10, 64)
		m = err == nil && h.rangeStart <= n && n < h.rangeEnd
	}
	return m != h.invert
}

func (h *Header) value(hs *message.Headers) ([]byte, bool) {
	var first []byte
	found := 0
	for i := 0; i < hs.Len(); i++ {
		f := hs.At(i)
		if string(f.Name) != h.name {
			continue
		}
		if found == 0 {
			first = f.Value
		}
		found++
	}
	switch found {
	case 0:
		return nil, false
	case 1:
		return first, true
	}
	// Repeated header: rare, so the join may allocate.
	var joined []byte
	for i := 0; i < hs.Len(); i++ {
		if f := hs.At(i); string(f.Name) == h.name {
			if len(joined) > 0 {
				joined = append(joined, ',')
			}
			joined = append(joined, f.Value...)
		}
	}
	return joined, true
}

// Headers is a conjunction of header matchers: all must match.
type Headers []Header

// CompileHeaders compiles ms, naming the failing index.
func CompileHeaders(field string, ms []*routev3.HeaderMatcher) (Headers, error) {
	out := make(Headers, 0, len(ms))
	for i, m := range ms {
		h, err := CompileHeader(m)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// Match reports whether every matcher matches hs (true when empty).
func (hs Headers) Match(h *message.Headers) bool {
	for i := range hs {
		if !hs[i].Match(h) {
			return false
		}
	}
	return true
}
