package router

import (
	"bytes"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// queryMatcher is a compiled QueryParameterMatcher.
type queryMatcher struct {
	name    string
	present bool
	sm      strmatch.String
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (queryMatcher, error) {
	m := queryMatcher{name: q.GetName()}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := strmatch.CompileString(s.StringMatch)
		if err != nil {
			return m, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		m.sm = sm
	default: // present_match, or no specifier: Envoy treats both as presence
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
		return m.sm.Match(v)
	}
	return false
}
