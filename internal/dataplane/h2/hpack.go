package h2

import (
	"unsafe"

	"golang.org/x/net/http2/hpack"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// hpackEncoder encodes header blocks (RFC 7541) without allocating in steady
// state. hpack.Encoder stores the strings it is handed in its dynamic table,
// which would force a string copy per field on a path whose fields live in a
// message arena; this encoder copies a field into table storage only when it
// is inserted, and reuses the storage of evicted entries.
//
// It is used under the connection's mutex, one header block at a time.
type hpackEncoder struct {
	// entries holds the dynamic table, oldest first: HPACK index 62 is the
	// last element.
	entries []dynEntry
	free    [][]byte
	size    uint32 // RFC 7541 4.1 size of the table
	maxSize uint32 // current table size limit
	// pendingMax/pendingUpdate carry a table size change (a new peer
	// SETTINGS_HEADER_TABLE_SIZE) to the start of the next header block;
	// pendingMin is the smallest size seen since, which must be signalled
	// first (RFC 7541 4.2).
	pendingUpdate bool
	pendingMin    uint32
}

type dynEntry struct {
	buf     []byte // name followed by value
	nameLen int
}

func (e *dynEntry) name() []byte  { return e.buf[:e.nameLen] }
func (e *dynEntry) value() []byte { return e.buf[e.nameLen:] }

func newHpackEncoder() hpackEncoder {
	return hpackEncoder{maxSize: http2core.DefaultHeaderTableSize}
}

// setMaxSize applies the peer's SETTINGS_HEADER_TABLE_SIZE, capped at the
// default: a larger table buys little for proxied traffic.
func (e *hpackEncoder) setMaxSize(v uint32) {
	if v > http2core.DefaultHeaderTableSize {
		v = http2core.DefaultHeaderTableSize
	}
	if v == e.maxSize {
		return
	}
	if !e.pendingUpdate || v < e.pendingMin {
		e.pendingMin = v
	}
	e.pendingUpdate = true
	e.maxSize = v
	e.evictTo(v)
}

// begin starts a header block, emitting any pending table size update.
func (e *hpackEncoder) begin(dst []byte) []byte {
	if e.pendingUpdate {
		e.pendingUpdate = false
		if e.pendingMin < e.maxSize {
			dst = appendVarInt(dst, 5, 0x20, uint64(e.pendingMin))
		}
		dst = appendVarInt(dst, 5, 0x20, uint64(e.maxSize))
	}
	return dst
}

// field encodes one header field. Sensitive fields are never indexed, by us
// or by intermediaries (RFC 7541 7.1.3).
func (e *hpackEncoder) field(dst []byte, name, value []byte) []byte {
	sidx, pair := staticIndex(name, value)
	if pair {
		return appendVarInt(dst, 7, 0x80, uint64(sidx))
	}
	didx, dpair := e.search(name, value)
	if dpair {
		return appendVarInt(dst, 7, 0x80, uint64(didx))
	}
	nidx := sidx
	if nidx == 0 {
		nidx = didx
	}
	switch policy := indexPolicy(name, value); {
	case policy == indexNever:
		dst = appendVarInt(dst, 4, 0x10, uint64(nidx))
	case policy == indexNo || uint32(len(name)+len(value)+32) > e.maxSize:
		dst = appendVarInt(dst, 4, 0x00, uint64(nidx))
	default:
		dst = appendVarInt(dst, 6, 0x40, uint64(nidx))
		e.insert(name, value)
	}
	if nidx == 0 {
		dst = appendString(dst, name)
	}
	return appendString(dst, value)
}

// fieldString is field for constant strings (pseudo-header names).
func (e *hpackEncoder) fieldString(dst []byte, name string, value []byte) []byte {
	return e.field(dst, unsafe.Slice(unsafe.StringData(name), len(name)), value)
}

func (e *hpackEncoder) search(name, value []byte) (idx int, pair bool) {
	n := len(e.entries)
	for i := n - 1; i >= 0; i-- {
		en := &e.entries[i]
		if string(en.name()) != string(name) {
			continue
		}
		hidx := len(staticTable) + n - i
		if string(en.value()) == string(value) {
			return hidx, true
		}
		if idx == 0 {
			idx = hidx
		}
	}
	return idx, false
}

func (e *hpackEncoder) insert(name, value []byte) {
	sz := uint32(len(name) + len(value) + 32)
	e.evictTo(e.maxSize - sz)
	var buf []byte
	if k := len(e.free); k > 0 {
		buf = e.free[k-1][:0]
		e.free = e.free[:k-1]
	}
	buf = append(append(buf, name...), value...)
	e.entries = append(e.entries, dynEntry{buf: buf, nameLen: len(name)})
	e.size += sz
}

func (e *hpackEncoder) evictTo(limit uint32) {
	drop := 0
	for e.size > limit && drop < len(e.entries) {
		en := &e.entries[drop]
		e.size -= uint32(len(en.buf) + 32)
		e.free = append(e.free, en.buf)
		drop++
	}
	if drop > 0 {
		n := copy(e.entries, e.entries[drop:])
		for i := n; i < len(e.entries); i++ {
			e.entries[i] = dynEntry{}
		}
		e.entries = e.entries[:n]
	}
}

const (
	indexYes = iota
	indexNo
	indexNever
)

// indexPolicy keeps values that change per message out of the dynamic table,
// where they would only evict useful entries (nghttp2 makes the same call),
// and never indexes credentials.
func indexPolicy(name, value []byte) int {
	switch string(name) {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return indexNever
	case ":path", "content-length", "date", "etag", "age", "expires", "last-modified",
		"if-modified-since", "if-none-match", "location", "x-request-id", "traceparent",
		"tracestate", "grpc-timeout", "grpc-message", "x-envoy-expected-rq-timeout-ms":
		return indexNo
	}
	if len(value) > 256 {
		return indexNo
	}
	return indexYes
}

func appendVarInt(dst []byte, n byte, first byte, i uint64) []byte {
	k := uint64((1 << n) - 1)
	if i < k {
		return append(dst, first|byte(i))
	}
	dst = append(dst, first|byte(k))
	i -= k
	for ; i >= 128; i >>= 7 {
		dst = append(dst, byte(0x80|(i&0x7f)))
	}
	return append(dst, byte(i))
}

func appendString(dst []byte, b []byte) []byte {
	// The hpack helpers take strings but keep nothing: view the bytes.
	s := unsafe.String(unsafe.SliceData(b), len(b))
	if hl := hpack.HuffmanEncodeLength(s); hl < uint64(len(b)) {
		dst = appendVarInt(dst, 7, 0x80, hl)
		return hpack.AppendHuffmanString(dst, s)
	}
	dst = appendVarInt(dst, 7, 0, uint64(len(b)))
	return append(dst, b...)
}

// staticTable is RFC 7541 Appendix A; index i+1 is element i.
var staticTable = [...][2]string{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"},
	{":path", "/index.html"}, {":scheme", "http"}, {":scheme", "https"}, {":status", "200"},
	{":status", "204"}, {":status", "206"}, {":status", "304"}, {":status", "400"},
	{":status", "404"}, {":status", "500"}, {"accept-charset", ""}, {"accept-encoding", "gzip, deflate"},
	{"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""}, {"access-control-allow-origin", ""},
	{"age", ""}, {"allow", ""}, {"authorization", ""}, {"cache-control", ""},
	{"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
	{"content-location", ""}, {"content-range", ""}, {"content-type", ""}, {"cookie", ""},
	{"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""},
	{"from", ""}, {"host", ""}, {"if-match", ""}, {"if-modified-since", ""},
	{"if-none-match", ""}, {"if-range", ""}, {"if-unmodified-since", ""}, {"last-modified", ""},
	{"link", ""}, {"location", ""}, {"max-forwards", ""}, {"proxy-authenticate", ""},
	{"proxy-authorization", ""}, {"range", ""}, {"referer", ""}, {"refresh", ""},
	{"retry-after", ""}, {"server", ""}, {"set-cookie", ""}, {"strict-transport-security", ""},
	{"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""},
	{"www-authenticate", ""},
}

// staticIndex returns the static table index of name (0 when absent) and
// whether the entry also matches value.
func staticIndex(name, value []byte) (int, bool) {
	idx := staticNameIndex(name)
	if idx == 0 {
		return 0, false
	}
	for i := idx; i <= len(staticTable) && staticTable[i-1][0] == string(name); i++ {
		if v := staticTable[i-1][1]; v != "" && v == string(value) {
			return i, true
		}
	}
	return idx, false
}

func staticNameIndex(name []byte) int {
	switch string(name) {
	case ":authority":
		return 1
	case ":method":
		return 2
	case ":path":
		return 4
	case ":scheme":
		return 6
	case ":status":
		return 8
	case "accept-charset":
		return 15
	case "accept-encoding":
		return 16
	case "accept-language":
		return 17
	case "accept-ranges":
		return 18
	case "accept":
		return 19
	case "access-control-allow-origin":
		return 20
	case "age":
		return 21
	case "allow":
		return 22
	case "authorization":
		return 23
	case "cache-control":
		return 24
	case "content-disposition":
		return 25
	case "content-encoding":
		return 26
	case "content-language":
		return 27
	case "content-length":
		return 28
	case "content-location":
		return 29
	case "content-range":
		return 30
	case "content-type":
		return 31
	case "cookie":
		return 32
	case "date":
		return 33
	case "etag":
		return 34
	case "expect":
		return 35
	case "expires":
		return 36
	case "from":
		return 37
	case "host":
		return 38
	case "if-match":
		return 39
	case "if-modified-since":
		return 40
	case "if-none-match":
		return 41
	case "if-range":
		return 42
	case "if-unmodified-since":
		return 43
	case "last-modified":
		return 44
	case "link":
		return 45
	case "location":
		return 46
	case "max-forwards":
		return 47
	case "proxy-authenticate":
		return 48
	case "proxy-authorization":
		return 49
	case "range":
		return 50
	case "referer":
		return 51
	case "refresh":
		return 52
	case "retry-after":
		return 53
	case "server":
		return 54
	case "set-cookie":
		return 55
	case "strict-transport-security":
		return 56
	case "transfer-encoding":
		return 57
	case "user-agent":
		return 58
	case "vary":
		return 59
	case "via":
		return 60
	case "www-authenticate":
		return 61
	}
	return 0
}
