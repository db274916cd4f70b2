// Package headerops compiles Envoy header mutations (HeaderValueOption with
// its append_action, and mutation_rules HeaderMutation: append, remove,
// remove_on_match) into an immutable list applied to message.Headers.
//
// Values are literal or use a small, hand-written subset of Envoy's
// substitution formatter (see formatter.go): the full formatter is a
// language of its own, and a subset we can render without allocating is worth
// more on the request path than breadth. Anything outside the subset is
// rejected at config time with the offending command named.
package headerops

import (
	"fmt"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

type action uint8

const (
	appendOrAdd       action = iota // APPEND_IF_EXISTS_OR_ADD
	addIfAbsent                     // ADD_IF_ABSENT
	overwriteOrAdd                  // OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfExists               // OVERWRITE_IF_EXISTS
	remove
	removeMatching
)

type op struct {
	action action
	name   string
	nameB  []byte // name as bytes for Headers.AddBytes; never handed out
	value  Value
	match  strmatch.String
}

// List is an ordered, immutable list of header operations. The zero value is
// empty and valid.
type List struct {
	ops []op
}

// Len returns the number of operations.
func (l List) Len() int { return len(l.ops) }

// Concat returns the operations of a followed by those of b.
func Concat(a, b List) List {
	ops := make([]op, 0, len(a.ops)+len(b.ops))
	return List{ops: append(append(ops, a.ops...), b.ops...)}
}

// CompileOptions compiles HeaderValueOptions; field names the list in errors.
func CompileOptions(field string, opts []*corev3.HeaderValueOption) (List, error) {
	l := List{ops: make([]op, 0, len(opts))}
	for i, o := range opts {
		op, err := compileOption(o)
		if err != nil {
			return List{}, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		l.ops = append(l.ops, op)
	}
	return l, nil
}

// CompileRemovals compiles a list of header names to remove (xDS
// *_headers_to_remove); field names the list in errors.
func CompileRemovals(field string, names []string) (List, error) {
	l := List{ops: make([]op, 0, len(names))}
	for i, n := range names {
		name, err := checkName(n)
		if err != nil {
			return List{}, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		l.ops = append(l.ops, op{action: remove, name: name})
	}
	return l, nil
}

// CompileMutations compiles mutation_rules HeaderMutations; field names the
// list in errors.
func CompileMutations(field string, ms []*mutationv3.HeaderMutation) (List, error) {
	l := List{ops: make([]op, 0, len(ms))}
	for i, m := range ms {
		var o op
		var err error
		switch a := m.GetAction().(type) {
		case *mutationv3.HeaderMutation_Append:
			o, err = compileOption(a.Append)
			if err != nil {
				err = fmt.Errorf("append: %w", err)
			}
		case *mutationv3.HeaderMutation_Remove:
			o = op{action: remove}
			if o.name, err = checkName(a.Remove); err != nil {
				err = fmt.Errorf("remove: %w", err)
			}
		case *mutationv3.HeaderMutation_RemoveOnMatch_:
			o = op{action: removeMatching}
			if o.match, err = strmatch.CompileString(a.RemoveOnMatch.GetKeyMatcher()); err != nil {
				err = fmt.Errorf("remove_on_match.key_matcher: %w", err)
			}
		default:
			err = fmt.Errorf("action: one of append, remove, remove_on_match is required")
		}
		if err != nil {
			return List{}, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		l.ops = append(l.ops, o)
	}
	return l, nil
}

func compileOption(o *corev3.HeaderValueOption) (op, error) {
	hv := o.GetHeader()
	if hv == nil {
		return op{}, fmt.Errorf("header: required")
	}
	name, err := checkName(hv.GetKey())
	if err != nil {
		return op{}, fmt.Errorf("header.key: %w", err)
	}
	act, err := appendAction(o)
	if err != nil {
		return op{}, err
	}
	raw := hv.GetValue()
	if len(hv.GetRawValue()) > 0 {
		if raw != "" {
			return op{}, fmt.Errorf("header: only one of value and raw_value may be set")
		}
		raw = string(hv.GetRawValue())
	}
	if i := strings.IndexAny(raw, "\r\n\x00"); i >= 0 {
		return op{}, fmt.Errorf("header.value: invalid byte %q at offset %d", raw[i], i)
	}
	v, err := ParseValue(raw)
	if err != nil {
		return op{}, fmt.Errorf("header.value: %w", err)
	}
	return op{action: act, name: name, nameB: []byte(name), value: v}, nil
}

func appendAction(o *corev3.HeaderValueOption) (action, error) {
	if ap := o.GetAppend(); ap != nil {
		if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return 0, fmt.Errorf("append and append_action are both set; use append_action only")
		}
		if ap.GetValue() {
			return appendOrAdd, nil
		}
		return overwriteOrAdd, nil
	}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		return appendOrAdd, nil
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		return addIfAbsent, nil
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		return overwriteOrAdd, nil
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		return overwriteIfExists, nil
	}
	return 0, fmt.Errorf("append_action: unknown value %d", o.GetAppendAction())
}

// checkName lower-cases name and rejects what a filter may not touch: like
// Envoy, pseudo-headers and host (the request's authority) are off limits.
func checkName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("header name is empty")
	}
	n := strings.ToLower(name)
	if n[0] == ':' || n == "host" {
		return "", fmt.Errorf("%q: pseudo-headers and host may not be modified", name)
	}
	for i := 0; i < len(n); i++ {
		if !isTokenChar(n[i]) {
			return "", fmt.Errorf("%q: invalid character %q in header name", name, n[i])
		}
	}
	return n, nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Apply runs the operations on h in order. s supplies what formatted values
// refer to (request and response headers, downstream address, start time).
func (l List) Apply(h *message.Headers, s *filter.Stream) {
	for i := range l.ops {
		l.ops[i].apply(h, s)
	}
}

func (o *op) apply(h *message.Headers, s *filter.Stream) {
	switch o.action {
	case remove:
		h.Del(o.name)
		return
	case removeMatching:
		h.Filter(func(f message.Field) bool { return !o.match.Match(f.Name) })
		return
	case addIfAbsent:
		if h.Has(o.name) {
			return
		}
	case overwriteIfExists:
		if !h.Has(o.name) {
			return
		}
	}
	if o.value.parts == nil {
		if o.action == appendOrAdd || o.action == addIfAbsent {
			h.Add(o.name, o.value.literal)
		} else {
			h.Set(o.name, o.value.literal)
		}
		return
	}
	var buf [256]byte
	v := o.value.AppendTo(buf[:0], s)
	if o.action == appendOrAdd || o.action == addIfAbsent {
		h.AddBytes(o.nameB, v)
	} else {
		h.SetBytes(o.name, v)
	}
}
