package dsl

import (
	"reflect"
	"unsafe"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// The CEL values below read the stream in place. Lookups (m["k"], "k" in m,
// size(m)) touch no heap; the rarer whole-map operations (iteration,
// equality, conversion) materialise an ordinary CEL map and delegate to it.

// cellCount bounds the strings and ints one evaluation can return without
// allocating; past it values are boxed as usual.
const cellCount = 32

// cells hands out CEL values whose payload lives in the evaluation state, so
// that returning a string or an int to the interpreter does not box it on
// the heap. A value is valid until the next reset, which happens when an
// evaluation starts: the plugin consumes every result before that.
type cells struct {
	strs [cellCount]string
	ints [cellCount]int64
	ns   int
	ni   int
}

func (c *cells) reset() {
	// Drop references into header arenas so a pooled state keeps none alive.
	clear(c.strs[:c.ns])
	c.ns, c.ni = 0, 0
}

// iface is the runtime layout of a non-empty interface value.
type iface struct {
	tab  unsafe.Pointer
	data unsafe.Pointer
}

// Type words of ref.Val holding a types.String and a types.Int. They are
// computed once and never change: they are properties of the binary.
var (
	stringTab = ifaceTab(types.String(""))
	intTab    = ifaceTab(types.Int(0))
)

func ifaceTab(v ref.Val) unsafe.Pointer { return (*iface)(unsafe.Pointer(&v)).tab }

// str returns b as a CEL string aliasing b. b must stay unchanged until the
// next reset (header arenas are append-only while a stream runs).
func (c *cells) str(b []byte) ref.Val {
	if c.ns == cellCount {
		return types.String(b)
	}
	p := &c.strs[c.ns]
	c.ns++
	*p = unsafe.String(unsafe.SliceData(b), len(b))
	var v ref.Val
	*(*iface)(unsafe.Pointer(&v)) = iface{tab: stringTab, data: unsafe.Pointer(p)}
	return v
}

// strString is str for a string.
func (c *cells) strString(s string) ref.Val {
	return c.str(unsafe.Slice(unsafe.StringData(s), len(s)))
}

func (c *cells) int(n int64) ref.Val {
	if c.ni == cellCount {
		return types.Int(n)
	}
	p := &c.ints[c.ni]
	c.ni++
	*p = n
	var v ref.Val
	*(*iface)(unsafe.Pointer(&v)) = iface{tab: intTab, data: unsafe.Pointer(p)}
	return v
}

// headerMap is request.headers or response.headers: the first value of each
// name, names compared without case.
type headerMap struct {
	h     *message.Headers
	cells *cells
}

var _ traits.Mapper = (*headerMap)(nil)

func (m *headerMap) find(name string) ([]byte, bool) {
	for i := 0; i < m.h.Len(); i++ {
		f := m.h.At(i)
		if message.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return nil, false
}

func (m *headerMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := m.find(string(k))
	if !found {
		return nil, false
	}
	return m.cells.str(v), true
}

func (m *headerMap) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := m.find(string(k))
	return types.Bool(found)
}

func (m *headerMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (m *headerMap) Size() ref.Val {
	n := 0
	for i := 0; i < m.h.Len(); i++ {
		if firstOf(m.h, i) {
			n++
		}
	}
	return m.cells.int(int64(n))
}

// firstOf reports whether field i is the first one with its name.
func firstOf(h *message.Headers, i int) bool {
	name := h.At(i).Name
	for j := 0; j < i; j++ {
		if string(h.At(j).Name) == string(name) {
			return false
		}
	}
	return true
}

func (m *headerMap) materialize() traits.Mapper {
	out := make(map[string]string, m.h.Len())
	for i := 0; i < m.h.Len(); i++ {
		f := m.h.At(i)
		if _, dup := out[string(f.Name)]; !dup {
			out[string(f.Name)] = string(f.Value)
		}
	}
	return types.DefaultTypeAdapter.NativeToValue(out).(traits.Mapper)
}

func (m *headerMap) Iterator() traits.Iterator { return m.materialize().Iterator() }
func (m *headerMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.materialize().ConvertToNative(t)
}
func (m *headerMap) ConvertToType(t ref.Type) ref.Val { return m.materialize().ConvertToType(t) }
func (m *headerMap) Equal(o ref.Val) ref.Val          { return m.materialize().Equal(o) }
func (m *headerMap) Type() ref.Type                   { return types.MapType }
func (m *headerMap) Value() any                       { return m.materialize().Value() }

// queryMap is request.query: parameters of the raw query string, first
// value, not percent-decoded (decoding would allocate on every lookup;
// compare with the encoded form).
type queryMap struct {
	q     []byte
	cells *cells
}

var _ traits.Mapper = (*queryMap)(nil)

func (m *queryMap) find(name string) ([]byte, bool) {
	q := m.q
	for len(q) > 0 {
		var part []byte
		part, q = cut(q, '&')
		k, v := cut(part, '=')
		if string(k) == name {
			return v, true
		}
	}
	return nil, false
}

func cut(b []byte, sep byte) (before, after []byte) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func (m *queryMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := m.find(string(k))
	if !found {
		return nil, false
	}
	return m.cells.str(v), true
}

func (m *queryMap) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := m.find(string(k))
	return types.Bool(found)
}

func (m *queryMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (m *queryMap) materialize() traits.Mapper {
	out := map[string]string{}
	q := m.q
	for len(q) > 0 {
		var part []byte
		part, q = cut(q, '&')
		if len(part) == 0 {
			continue
		}
		k, v := cut(part, '=')
		if _, dup := out[string(k)]; !dup {
			out[string(k)] = string(v)
		}
	}
	return types.DefaultTypeAdapter.NativeToValue(out).(traits.Mapper)
}

func (m *queryMap) Size() ref.Val             { return m.materialize().Size() }
func (m *queryMap) Iterator() traits.Iterator { return m.materialize().Iterator() }
func (m *queryMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.materialize().ConvertToNative(t)
}
func (m *queryMap) ConvertToType(t ref.Type) ref.Val { return m.materialize().ConvertToType(t) }
func (m *queryMap) Equal(o ref.Val) ref.Val          { return m.materialize().Equal(o) }
func (m *queryMap) Type() ref.Type                   { return types.MapType }
func (m *queryMap) Value() any                       { return m.materialize().Value() }

// metaMap is the metadata variable: keys set by set_metadata on this
// stream, in order, later sets of a key replacing earlier ones.
type metaMap struct {
	kv    []metaEntry
	cells *cells
}

type metaEntry struct{ key, value string }

var _ traits.Mapper = (*metaMap)(nil)

func (m *metaMap) set(key, value string) {
	for i := range m.kv {
		if m.kv[i].key == key {
			m.kv[i].value = value
			return
		}
	}
	m.kv = append(m.kv, metaEntry{key, value})
}

func (m *metaMap) get(key string) (string, bool) {
	for i := range m.kv {
		if m.kv[i].key == key {
			return m.kv[i].value, true
		}
	}
	return "", false
}

func (m *metaMap) reset() {
	clear(m.kv)
	m.kv = m.kv[:0]
}

func (m *metaMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := m.get(string(k))
	if !found {
		return nil, false
	}
	return m.cells.strString(v), true
}

func (m *metaMap) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := m.get(string(k))
	return types.Bool(found)
}

func (m *metaMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (m *metaMap) Size() ref.Val { return m.cells.int(int64(len(m.kv))) }

func (m *metaMap) materialize() traits.Mapper {
	out := make(map[string]string, len(m.kv))
	for _, e := range m.kv {
		out[e.key] = e.value
	}
	return types.DefaultTypeAdapter.NativeToValue(out).(traits.Mapper)
}

func (m *metaMap) Iterator() traits.Iterator { return m.materialize().Iterator() }
func (m *metaMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.materialize().ConvertToNative(t)
}
func (m *metaMap) ConvertToType(t ref.Type) ref.Val { return m.materialize().ConvertToType(t) }
func (m *metaMap) Equal(o ref.Val) ref.Val          { return m.materialize().Equal(o) }
func (m *metaMap) Type() ref.Type                   { return types.MapType }
func (m *metaMap) Value() any                       { return m.materialize().Value() }
