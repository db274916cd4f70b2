package router

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// stringMatcher is a compiled envoy StringMatcher.
type stringMatcher struct {
	kind       uint8 // smExact, smPrefix, smSuffix, smContains, smRegex
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

const (
	smExact uint8 = iota
	smPrefix
	smSuffix
	smContains
	smRegex
)

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = smExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = smPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = smSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = smContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = smRegex, re
	default:
		return sm, fmt.Errorf("string matcher: unsupported pattern %T", p)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

// compileRegex anchors the expression: Envoy's safe_regex matches the whole
// value, not a substring.
func compileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

func (m *stringMatcher) match(v []byte) bool {
	if m.kind == smRegex {
		return m.re.Match(v)
	}
	if m.ignoreCase {
		return matchFold(m.kind, v, m.value)
	}
	switch m.kind {
	case smExact:
		return string(v) == m.value
	case smPrefix:
		return len(v) >= len(m.value) && string(v[:len(m.value)]) == m.value
	case smSuffix:
		return len(v) >= len(m.value) && string(v[len(v)-len(m.value):]) == m.value
	case smContains:
		return bytes.Contains(v, []byte(m.value))
	}
	return false
}

func matchFold(kind uint8, v []byte, lower string) bool {
	switch kind {
	case smExact:
		return message.EqualFold(v, lower)
	case smPrefix:
		return len(v) >= len(lower) && message.EqualFold(v[:len(lower)], lower)
	case smSuffix:
		return len(v) >= len(lower) && message.EqualFold(v[len(v)-len(lower):], lower)
	case smContains:
		for i := 0; i+len(lower) <= len(v); i++ {
			if message.EqualFold(v[i:i+len(lower)], lower) {
				return true
			}
		}
	}
	return false
}

// headerMatcher is a compiled envoy HeaderMatcher. Pseudo-headers (":method",
// ":path", ":authority", ":scheme") read the request's fields.
type headerMatcher struct {
	name           string
	pseudo         uint8 // 0 regular header, else pseudoMethod...
	present        int8  // -1 not a presence matcher, 0 must be absent, 1 must be present
	sm             stringMatcher
	hasSM          bool
	invert         bool
	missingAsEmpty bool
}

const (
	pseudoNone uint8 = iota
	pseudoMethod
	pseudoPath
	pseudoAuthority
	pseudoScheme
)

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	m := headerMatcher{name: strings.ToLower(h.GetName()), present: -1, invert: h.GetInvertMatch(),
		missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	switch m.name {
	case ":method":
		m.pseudo = pseudoMethod
	case ":path":
		m.pseudo = pseudoPath
	case ":authority", "host":
		m.pseudo = pseudoAuthority
	case ":scheme":
		m.pseudo = pseudoScheme
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		m.present = 1 // Envoy: no specifier means "present"
	case *routev3.HeaderMatcher_PresentMatch:
		if s.PresentMatch {
			m.present = 1
		} else {
			m.present = 0
		}
	case *routev3.HeaderMatcher_StringMatch:
		m.sm, err = compileStringMatcher(s.StringMatch)
		m.hasSM = true
	case *routev3.HeaderMatcher_ExactMatch:
		m.sm, m.hasSM = stringMatcher{kind: smExact, value: s.ExactMatch}, true
	case *routev3.HeaderMatcher_PrefixMatch:
		m.sm, m.hasSM = stringMatcher{kind: smPrefix, value: s.PrefixMatch}, true
	case *routev3.HeaderMatcher_SuffixMatch:
		m.sm, m.hasSM = stringMatcher{kind: smSuffix, value: s.SuffixMatch}, true
	case *routev3.HeaderMatcher_ContainsMatch:
		m.sm, m.hasSM = stringMatcher{kind: smContains, value: s.ContainsMatch}, true
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = compileRegex(s.SafeRegexMatch.GetRegex())
		m.sm, m.hasSM = stringMatcher{kind: smRegex, re: re}, true
	default:
		err = fmt.Errorf("unsupported header match %T", s)
	}
	if err != nil {
		return m, fmt.Errorf("header %q: %w", h.GetName(), err)
	}
	return m, nil
}

func (m *headerMatcher) match(req *message.Request) bool {
	var v []byte
	ok := true
	switch m.pseudo {
	case pseudoMethod:
		v = req.Method
	case pseudoPath:
		v = req.Path
	case pseudoAuthority:
		v = req.Authority
	case pseudoScheme:
		v = req.Scheme
	default:
		v, ok = req.Header.Get(m.name)
	}
	if !ok && m.missingAsEmpty {
		v, ok = nil, true
	}
	var r bool
	switch {
	case m.present >= 0:
		r = ok == (m.present == 1)
	case !ok:
		r = false
	default:
		r = m.sm.match(v)
	}
	return r != m.invert
}

// queryMatcher is a compiled QueryParameterMatcher.
type queryMatcher struct {
	name    string
	present bool
	sm      stringMatcher
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (queryMatcher, error) {
	m := queryMatcher{name: q.GetName()}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return m, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		m.sm = sm
	case *routev3.QueryParameterMatcher_PresentMatch:
		m.present = true
	default:
		m.present = true
	}
	return m, nil
}

// match scans the raw query without decoding or allocating: parameter names
// are compared verbatim, values are matched raw (Envoy does the same).
func (m *queryMatcher) match(query []byte) bool {
	for len(query) > 0 {
		var kv []byte
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			kv, query = query, nil
		}
		k, v := kv, []byte(nil)
		if i := bytes.IndexByte(kv, '='); i >= 0 {
			k, v = kv[:i], kv[i+1:]
		}
		if string(k) != m.name {
			continue
		}
		if m.present {
			return true
		}
		return m.sm.match(v)
	}
	return false
}
