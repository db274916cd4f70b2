// Package message owns the data plane's in-memory HTTP message: a header list,
// a request and a response that every protocol codec (HTTP/1.1, HTTP/2, the
// in-process host) fills in and every filter reads and edits.
//
// It is hand-written rather than built on net/http's types because the proxy's
// request path must not allocate per request: header names and values are byte
// slices into an arena owned by the message and reused across requests on the
// same connection. The cost is a lifetime rule that every user must respect:
// byte slices obtained from a message are valid only until the message is
// Reset (normally when the stream completes). Copy what you keep.
package message

import "bytes"

// Field is one header field. Name is always lower-case (HTTP/2 rules, also
// applied to HTTP/1.1 on the way in) so that lookups are a byte comparison.
type Field struct {
	Name  []byte
	Value []byte
}

// Headers is an ordered multi-map of header fields. The zero value is ready to
// use. It is not safe for concurrent use; a stream owns its messages.
type Headers struct {
	fields []Field
	arena  []byte
}

// Len returns the number of fields, counting repeated names separately.
func (h *Headers) Len() int { return len(h.fields) }

// At returns the i-th field. The returned slices alias the header storage.
func (h *Headers) At(i int) Field { return h.fields[i] }

// Reset empties the list while keeping its storage for reuse.
func (h *Headers) Reset() {
	for i := range h.fields {
		h.fields[i] = Field{}
	}
	h.fields = h.fields[:0]
	h.arena = h.arena[:0]
}

// Get returns the first value of name, which must be lower-case.
func (h *Headers) Get(name string) ([]byte, bool) {
	for i := range h.fields {
		if string(h.fields[i].Name) == name {
			return h.fields[i].Value, true
		}
	}
	return nil, false
}

// GetString is Get for callers that keep the value; it allocates.
func (h *Headers) GetString(name string) string {
	v, _ := h.Get(name)
	return string(v)
}

// Has reports whether name is present.
func (h *Headers) Has(name string) bool {
	_, ok := h.Get(name)
	return ok
}

// Count returns how many fields are named name.
func (h *Headers) Count(name string) int {
	n := 0
	for i := range h.fields {
		if string(h.fields[i].Name) == name {
			n++
		}
	}
	return n
}

// Add appends a field, copying name (lower-cased) and value into the arena.
func (h *Headers) Add(name, value string) {
	n := h.copyLower(name)
	v := h.copyString(value)
	h.fields = append(h.fields, Field{Name: n, Value: v})
}

// AddBytes is Add for byte-slice input.
func (h *Headers) AddBytes(name, value []byte) {
	n := h.copyLowerBytes(name)
	v := h.copyBytes(value)
	h.fields = append(h.fields, Field{Name: n, Value: v})
}

// AddLowerNoCopy appends a field whose name is already lower-case, without
// copying either slice. The caller guarantees both outlive the message: codecs
// use it for slices that already point into a buffer the message owns.
func (h *Headers) AddLowerNoCopy(name, value []byte) {
	h.fields = append(h.fields, Field{Name: name, Value: value})
}

// Set replaces every field named name with one field holding value.
func (h *Headers) Set(name, value string) {
	ln := lowerIfNeeded(name)
	for i := range h.fields {
		if string(h.fields[i].Name) == ln {
			h.fields[i].Value = h.copyString(value)
			h.delFrom(ln, i+1)
			return
		}
	}
	h.Add(ln, value)
}

// SetBytes is Set for a byte-slice value.
func (h *Headers) SetBytes(name string, value []byte) {
	ln := lowerIfNeeded(name)
	for i := range h.fields {
		if string(h.fields[i].Name) == ln {
			h.fields[i].Value = h.copyBytes(value)
			h.delFrom(ln, i+1)
			return
		}
	}
	h.AddBytes([]byte(ln), value)
}

// Del removes every field named name (lower-case) and reports how many.
func (h *Headers) Del(name string) int {
	return h.delFrom(name, 0)
}

func (h *Headers) delFrom(name string, start int) int {
	j := start
	removed := 0
	for i := start; i < len(h.fields); i++ {
		if string(h.fields[i].Name) == name {
			removed++
			continue
		}
		h.fields[j] = h.fields[i]
		j++
	}
	for k := j; k < len(h.fields); k++ {
		h.fields[k] = Field{}
	}
	h.fields = h.fields[:j]
	return removed
}

// Filter keeps only the fields for which keep returns true.
func (h *Headers) Filter(keep func(f Field) bool) {
	j := 0
	for i := range h.fields {
		if keep(h.fields[i]) {
			h.fields[j] = h.fields[i]
			j++
		}
	}
	for k := j; k < len(h.fields); k++ {
		h.fields[k] = Field{}
	}
	h.fields = h.fields[:j]
}

// CopyFrom replaces h's content with a deep copy of src.
func (h *Headers) CopyFrom(src *Headers) {
	h.Reset()
	for i := range src.fields {
		h.AddBytes(src.fields[i].Name, src.fields[i].Value)
	}
}

// HasToken reports whether the comma-separated list in header name contains
// token (ASCII case-insensitive), as for Connection or Transfer-Encoding.
func (h *Headers) HasToken(name, token string) bool {
	for i := range h.fields {
		if string(h.fields[i].Name) != name {
			continue
		}
		v := h.fields[i].Value
		for len(v) > 0 {
			var part []byte
			if c := bytes.IndexByte(v, ','); c >= 0 {
				part, v = v[:c], v[c+1:]
			} else {
				part, v = v, nil
			}
			if equalFoldASCII(bytes.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func (h *Headers) copyString(s string) []byte {
	start := len(h.arena)
	h.arena = append(h.arena, s...)
	return h.arena[start:len(h.arena):len(h.arena)]
}

func (h *Headers) copyBytes(b []byte) []byte {
	start := len(h.arena)
	h.arena = append(h.arena, b...)
	return h.arena[start:len(h.arena):len(h.arena)]
}

func (h *Headers) copyLower(s string) []byte {
	start := len(h.arena)
	for i := 0; i < len(s); i++ {
		h.arena = append(h.arena, toLower(s[i]))
	}
	return h.arena[start:len(h.arena):len(h.arena)]
}

func (h *Headers) copyLowerBytes(b []byte) []byte {
	start := len(h.arena)
	for _, c := range b {
		h.arena = append(h.arena, toLower(c))
	}
	return h.arena[start:len(h.arena):len(h.arena)]
}

// Arena exposes the header arena so that a codec can append raw bytes and
// then reference them with AddLowerNoCopy. Returned slices must be capped by
// the caller (s[a:b:b]) so later appends never write into them.
func (h *Headers) Arena() *[]byte { return &h.arena }

func toLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

func lowerIfNeeded(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = toLower(b[j])
			}
			return string(b)
		}
	}
	return s
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if toLower(b[i]) != toLower(s[i]) {
			return false
		}
	}
	return true
}

// EqualFold reports whether b equals s ignoring ASCII case.
func EqualFold(b []byte, s string) bool { return equalFoldASCII(b, s) }
