package config

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Error is one problem in a config, located as precisely as the input
// allows. Parse and Validate return one *Error per problem, joined with
// errors.Join; use errors.As to get the first, or unwrap to get all.
type Error struct {
	File string
	// Line and Column are 1-based; 0 when unknown (e.g. a Config built in
	// code).
	Line, Column int
	// Path is where in the document, e.g.
	// listeners[0].virtual_hosts[0].routes[1].cluster; empty for the whole
	// document.
	Path   string
	Reason string
}

// Error formats as "file:line:col: path: reason", leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line) + ":" + strconv.Itoa(e.Column))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

type lineCol struct{ line, col int }

// source indexes the parsed YAML both ways: document path to position (for
// validation errors, found by path) and position to path (for decoding
// errors, which the YAML library reports by token).
type source struct {
	file  string
	pos   map[string]lineCol
	paths map[lineCol]string
	opts  parseOptions
}

func newSource(file string, opts parseOptions) *source {
	return &source{file: file, pos: map[string]lineCol{}, paths: map[lineCol]string{}, opts: opts}
}

func posOf(tok *token.Token) (lineCol, bool) {
	if tok == nil || tok.Position == nil {
		return lineCol{}, false
	}
	return lineCol{tok.Position.Line, tok.Position.Column}, true
}

func (s *source) record(path string, tok *token.Token) {
	lc, ok := posOf(tok)
	if !ok {
		return
	}
	if _, seen := s.pos[path]; !seen {
		s.pos[path] = lc
	}
	if _, seen := s.paths[lc]; !seen {
		s.paths[lc] = path
	}
}

// recordPos locates path without claiming the token for it: a mapping
// starts at its first key, but that key's token belongs to the key's path.
func (s *source) recordPos(path string, tok *token.Token) {
	if lc, ok := posOf(tok); ok {
		if _, seen := s.pos[path]; !seen {
			s.pos[path] = lc
		}
	}
}

// index walks the document. depth bounds recursion on hostile input.
func (s *source) index(n ast.Node, path string, depth int) {
	if n == nil || depth > 256 {
		return
	}
	switch t := n.(type) {
	case *ast.MappingNode:
		// A block mapping's own token is its first ':'; errors read better
		// at the first key.
		if len(t.Values) > 0 && t.Values[0].Key != nil {
			s.recordPos(path, t.Values[0].Key.GetToken())
		}
		s.record(path, t.GetToken())
		for _, mv := range t.Values {
			s.indexPair(mv, path, depth)
		}
	case *ast.MappingValueNode:
		s.recordPos(path, t.Key.GetToken())
		s.indexPair(t, path, depth)
	case *ast.SequenceNode:
		s.record(path, t.GetToken())
		for i, v := range t.Values {
			s.index(v, path+"["+strconv.Itoa(i)+"]", depth+1)
		}
	case *ast.TagNode:
		s.record(path, t.GetToken())
		s.index(t.Value, path, depth+1)
	case *ast.AnchorNode:
		s.record(path, t.GetToken())
		s.index(t.Value, path, depth+1)
	default:
		s.record(path, t.GetToken())
	}
}

func (s *source) indexPair(mv *ast.MappingValueNode, path string, depth int) {
	if mv == nil || mv.Key == nil {
		return
	}
	key := ""
	if tok := mv.Key.GetToken(); tok != nil {
		key = tok.Value
	}
	child := joinKey(path, key)
	// The key locates the child too: unknown-field errors point at keys.
	if lc, ok := posOf(mv.Key.GetToken()); ok {
		if _, seen := s.paths[lc]; !seen {
			s.paths[lc] = child
		}
	}
	if isNull(mv.Value) {
		s.record(child, mv.Key.GetToken())
		return
	}
	s.index(mv.Value, child, depth+1)
	if _, ok := s.pos[child]; !ok {
		s.record(child, mv.Key.GetToken())
	}
}

// joinKey appends a mapping key to a path, quoting keys that would make the
// path ambiguous.
func joinKey(path, key string) string {
	if key == "" || strings.ContainsAny(key, ".[]\" ") {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// at returns the position of path, or of its nearest ancestor present in the
// document (a missing field is reported where its parent is).
func (s *source) at(path string) lineCol {
	if s == nil {
		return lineCol{}
	}
	for p := path; ; p = parentPath(p) {
		if lc, ok := s.pos[p]; ok {
			return lc
		}
		if p == "" {
			return lineCol{}
		}
	}
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (s *source) fileName() string {
	if s == nil {
		return ""
	}
	return s.file
}

// errorAt builds an *Error for path.
func (s *source) errorAt(path, reason string) *Error {
	lc := s.at(path)
	return &Error{File: s.fileName(), Line: lc.line, Column: lc.col, Path: path, Reason: reason}
}

// decodeError converts an error of the YAML library (or of our node
// unmarshalers) into an *Error located by its token.
func (s *source) decodeError(err error) *Error {
	var tok *token.Token
	reason := err.Error()
	var ne *nodeError
	var ye yaml.Error
	switch {
	case errors.As(err, &ne):
		tok, reason = ne.tok, ne.msg
	case errors.As(err, &ye):
		tok, reason = ye.GetToken(), friendlyYAMLMessage(ye)
	}
	e := &Error{File: s.file, Reason: reason}
	if lc, ok := posOf(tok); ok {
		e.Line, e.Column = lc.line, lc.col
		e.Path = s.paths[lc]
	}
	var ue *yaml.UnknownFieldError
	if errors.As(err, &ue) && filterEntryRE.MatchString(parentPath(e.Path)) {
		e.Reason = fmt.Sprintf("unknown filter %q (want headers, local_rate_limit, fault or cors)", e.Path[len(parentPath(e.Path))+1:])
	}
	return e
}

var filterEntryRE = regexp.MustCompile(`(^|\.)filters\[\d+\]$`)

// friendlyYAMLMessage rewords the library's messages that speak of Go types.
func friendlyYAMLMessage(ye yaml.Error) string {
	var te *yaml.TypeError
	var oe *yaml.OverflowError
	switch {
	case errors.As(ye, &te):
		return fmt.Sprintf("expected %s, got %s", kindWord(te.DstType), kindWord(te.SrcType))
	case errors.As(ye, &oe):
		return fmt.Sprintf("number %s is out of range for %s", oe.SrcNum, kindWord(oe.DstType))
	}
	msg := ye.GetMessage()
	// The parser says `mapping key "k" already defined at [3:5]`.
	if m := dupKeyRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("duplicate key %s (first at line %s, column %s)", m[1], m[2], m[3])
	}
	return msg
}

var dupKeyRE = regexp.MustCompile(`^mapping key (".*") already defined at \[(\d+):(\d+)\]$`)

func kindWord(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a non-negative integer (%d bits)", t.Bits())
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return kindWord(t.Elem())
	}
	return t.String()
}

// sortErrors orders errors by position so that reports read top to bottom.
func sortErrors(errs []*Error) {
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}

func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	sortErrors(errs)
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}
