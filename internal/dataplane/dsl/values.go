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

// lazyMap is the traits.Mapper the maps below share: lookups go to the
// source in place; whole-map operations go to the map it materialises.
// Each map embeds one pointing at itself (bind), so the CEL value handed to
// the interpreter is the map's own pointer and nothing is allocated.
type lazyMap struct {
	src   mapSource
	cells *cells
}

type mapSource interface {
	// lookup returns the value of key; the string may alias the stream's
	// buffers (valid until the next cells reset).
	lookup(key string) (string, bool)
	materialize() traits.Mapper
}

func (m *lazyMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	v, found := m.src.lookup(string(k))
	if !found {
		return nil, false
	}
	return m.cells.strString(v), true
}

func (m *lazyMap) Contains(key ref.Val) ref.Val {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key)
	}
	_, found := m.src.lookup(string(k))
	return types.Bool(found)
}

func (m *lazyMap) Get(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (m *lazyMap) Iterator() traits.Iterator { return m.src.materialize().Iterator() }
func (m *lazyMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.src.materialize().ConvertToNative(t)
}
func (m *lazyMap) ConvertToType(t ref.Type) ref.Val { return m.src.materialize().ConvertToType(t) }
func (m *lazyMap) Equal(o ref.Val) ref.Val          { return m.src.materialize().Equal(o) }
func (m *lazyMap) Type() ref.Type                   { return types.MapType }
func (m *lazyMap) Value() any                       { return m.src.materialize().Value() }

// alias views b as a string without copying; b must not change while the
// string is in use (header arenas are append-only while a stream runs).
func alias(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// headerMap is request.headers or response.headers: the first value of each
// name, names compared without case.
type headerMap struct {
	lazyMap
	h *message.Headers
}

var _ traits.Mapper = (*headerMap)(nil)

func (m *headerMap) bind(c *cells) { m.lazyMap = lazyMap{src: m, cells: c} }

func (m *headerMap) lookup(name string) (string, bool) {
	for i := 0; i < m.h.Len(); i++ {
		f := m.h.At(i)
		if message.EqualFold(f.Name, name) {
			return alias(f.Value), true
		}
	}
	return "", false
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

// queryMap is request.query: parameters of the raw query string, first
// value, not percent-decoded (decoding would allocate on every lookup;
// compare with the encoded form).
type queryMap struct {
	lazyMap
	q []byte
}

var _ traits.Mapper = (*queryMap)(nil)

func (m *queryMap) bind(c *cells) { m.lazyMap = lazyMap{src: m, cells: c} }

func (m *queryMap) lookup(name string) (string, bool) {
	q := m.q
	for len(q) > 0 {
		var part []byte
		part, q = cut(q, '&')
		k, v := cut(part, '=')
		if string(k) == name {
			return alias(v), true
		}
	}
	return "", false
}

func cut(b []byte, sep byte) (before, after []byte) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
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

func (m *queryMap) Size() ref.Val { return m.materialize().Size() }

// metaMap is the metadata variable: keys set by set_metadata on this
// stream, in order, later sets of a key replacing earlier ones.
type metaMap struct {
	lazyMap
	kv []metaEntry
}

type metaEntry struct{ key, value string }

var _ traits.Mapper = (*metaMap)(nil)

func (m *metaMap) bind(c *cells) { m.lazyMap = lazyMap{src: m, cells: c} }

func (m *metaMap) set(key, value string) {
	for i := range m.kv {
		if m.kv[i].key == key {
			m.kv[i].value = value
			return
		}
	}
	m.kv = append(m.kv, metaEntry{key, value})
}

func (m *metaMap) lookup(key string) (string, bool) {
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

func (m *metaMap) Size() ref.Val { return m.cells.int(int64(len(m.kv))) }

func (m *metaMap) materialize() traits.Mapper {
	out := make(map[string]string, len(m.kv))
	for _, e := range m.kv {
		out[e.key] = e.value
	}
	return types.DefaultTypeAdapter.NativeToValue(out).(traits.Mapper)
}
