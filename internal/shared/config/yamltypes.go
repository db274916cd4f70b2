package config

import (
	"fmt"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// nodeError is a decoding error located at a YAML node; Parse turns it into
// an *Error with file, line, column and path.
type nodeError struct {
	tok *token.Token
	msg string
}

func (e *nodeError) Error() string { return e.msg }

func errAt(n ast.Node, format string, args ...any) error {
	e := &nodeError{msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.tok = n.GetToken()
	}
	return e
}

// unwrapNode strips tags and anchors, which carry no meaning here.
func unwrapNode(n ast.Node) ast.Node {
	for {
		switch t := n.(type) {
		case *ast.TagNode:
			n = t.Value
		case *ast.AnchorNode:
			n = t.Value
		default:
			return n
		}
	}
}

func isNull(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return n == nil || ok
}

// Duration is a Go duration string such as "250ms", "5s" or "1h30m". A bare
// 0 is accepted; other bare numbers are rejected because their unit would
// be a guess.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d as Go does ("1m30s").
func (d Duration) String() string { return d.Std().String() }

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	n = unwrapNode(n)
	switch v := n.(type) {
	case *ast.StringNode:
		p, err := time.ParseDuration(v.Value)
		if err != nil {
			return errAt(n, "invalid duration %q (use a number with a unit: 250ms, 5s, 1m)", v.Value)
		}
		if p < 0 {
			return errAt(n, "duration %q is negative", v.Value)
		}
		*d = Duration(p)
		return nil
	case *ast.IntegerNode:
		if v.GetToken().Value == "0" {
			*d = 0
			return nil
		}
		return errAt(n, "duration %s has no unit (write e.g. %ss)", v.GetToken().Value, v.GetToken().Value)
	default:
		return errAt(n, "expected a duration such as 5s, got %s", describe(n))
	}
}

// KeyValue is one entry of a StringMap.
type KeyValue struct {
	Key   string
	Value string
}

// StringMap is a YAML mapping of strings that keeps the document's order,
// so that translation output is deterministic and follows the user's intent.
// Scalar values of any type are taken as written (x-canary: true is "true").
type StringMap []KeyValue

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (m *StringMap) UnmarshalYAML(n ast.Node) error {
	n = unwrapNode(n)
	if isNull(n) {
		*m = nil
		return nil
	}
	values, ok := mappingValues(n)
	if !ok {
		return errAt(n, "expected a mapping of names to values, got %s", describe(n))
	}
	out := make(StringMap, 0, len(values))
	for _, mv := range values {
		k, err := scalarText(mv.Key)
		if err != nil {
			return err
		}
		v, err := scalarText(mv.Value)
		if err != nil {
			return err
		}
		out = append(out, KeyValue{Key: k, Value: v})
	}
	*m = out
	return nil
}

// Get returns the value for key and whether it is present.
func (m StringMap) Get(key string) (string, bool) {
	for _, kv := range m {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// HeaderMatchers is either a mapping of header names to exact values, or a
// list of HeaderMatcher.
type HeaderMatchers []HeaderMatcher

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (h *HeaderMatchers) UnmarshalYAML(n ast.Node) error {
	n = unwrapNode(n)
	if isNull(n) {
		*h = nil
		return nil
	}
	if _, ok := n.(*ast.SequenceNode); ok {
		var list []HeaderMatcher
		if err := yaml.NodeToValue(n, &list, yaml.DisallowUnknownField()); err != nil {
			return err
		}
		*h = list
		return nil
	}
	var m StringMap
	if err := m.UnmarshalYAML(n); err != nil {
		return errAt(n, "expected a mapping of header names to exact values, or a list of matchers, got %s", describe(n))
	}
	out := make(HeaderMatchers, 0, len(m))
	for _, kv := range m {
		out = append(out, HeaderMatcher{Name: kv.Key, Exact: kv.Value, fromMap: true})
	}
	*h = out
	return nil
}

// endpointFields has Endpoint's fields without its methods, so that
// decoding the mapping form does not recurse into UnmarshalYAML.
type endpointFields Endpoint

// UnmarshalYAML implements yaml.NodeUnmarshaler: "host:port" or a mapping.
func (e *Endpoint) UnmarshalYAML(n ast.Node) error {
	n = unwrapNode(n)
	if _, ok := mappingValues(n); ok {
		var f endpointFields
		if err := yaml.NodeToValue(n, &f, yaml.DisallowUnknownField()); err != nil {
			return err
		}
		*e = Endpoint(f)
		return nil
	}
	s, err := scalarText(n)
	if err != nil {
		return errAt(n, "expected an endpoint (\"host:port\" or a mapping with address), got %s", describe(n))
	}
	*e = Endpoint{Address: s}
	return nil
}

func mappingValues(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch t := n.(type) {
	case *ast.MappingNode:
		return t.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{t}, true
	}
	return nil, false
}

// scalarText returns a scalar's text as written (strings unquoted).
func scalarText(n ast.Node) (string, error) {
	n = unwrapNode(n)
	switch t := n.(type) {
	case *ast.StringNode:
		return t.Value, nil
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return t.GetToken().Value, nil
	case *ast.NullNode:
		return "", nil
	case ast.MapKeyNode:
		if tok := t.GetToken(); tok != nil {
			return tok.Value, nil
		}
	}
	return "", errAt(n, "expected a scalar value, got %s", describe(n))
}

func describe(n ast.Node) string {
	if n == nil {
		return "nothing"
	}
	switch unwrapNode(n).(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		return "a string"
	case *ast.IntegerNode:
		return "an integer"
	case *ast.FloatNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.NullNode:
		return "nothing"
	case *ast.AliasNode:
		return "an alias (aliases are not supported here)"
	default:
		return n.Type().String()
	}
}

// fixFlowScalars works around a goccy/go-yaml parser bug: inside a flow
// sequence nested in a flow mapping ({ endpoints: [127.0.0.1:9] }), a plain
// scalar containing ':' comes back as a one-pair mapping. YAML says a ':'
// not followed by a space does not separate a key, so such pairs are turned
// back into the scalar the user wrote. Real pairs ("a: b", "x":y) are kept.
func fixFlowScalars(n ast.Node, depth int) {
	if n == nil || depth > 256 {
		return
	}
	switch t := n.(type) {
	case *ast.MappingNode:
		for _, mv := range t.Values {
			fixFlowScalars(mv, depth+1)
		}
	case *ast.MappingValueNode:
		fixFlowScalars(t.Value, depth+1)
	case *ast.SequenceNode:
		for i, v := range t.Values {
			if t.IsFlowStyle {
				if s := joinedScalar(v); s != nil {
					t.Values[i] = s
					continue
				}
			}
			fixFlowScalars(v, depth+1)
		}
	case *ast.TagNode:
		fixFlowScalars(t.Value, depth+1)
	case *ast.AnchorNode:
		fixFlowScalars(t.Value, depth+1)
	}
}

func joinedScalar(n ast.Node) ast.Node {
	m, ok := n.(*ast.MappingNode)
	if !ok || m.IsFlowStyle || len(m.Values) != 1 {
		return nil
	}
	mv := m.Values[0]
	if mv == nil || mv.Key == nil || mv.Value == nil || mv.Start == nil {
		return nil
	}
	kt, ct, vt := mv.Key.GetToken(), mv.Start, mv.Value.GetToken()
	if kt == nil || vt == nil || kt.Position == nil || ct.Position == nil || vt.Position == nil {
		return nil
	}
	if kt.Type != token.StringType || !isPlainScalar(mv.Value) || vt.Position.Offset != ct.Position.Offset+1 {
		return nil
	}
	text := kt.Value + ":" + vt.Value
	return ast.String(&token.Token{
		Type: token.StringType, CharacterType: kt.CharacterType, Value: text, Origin: text, Position: kt.Position,
	})
}

func isPlainScalar(n ast.Node) bool {
	switch n.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NullNode, *ast.InfinityNode, *ast.NanNode:
		tok := n.GetToken()
		return tok.Type != token.DoubleQuoteType && tok.Type != token.SingleQuoteType
	}
	return false
}
