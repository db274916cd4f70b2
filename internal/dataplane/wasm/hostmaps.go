package wasm

import (
	"bytes"
	"context"
	"strconv"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Proxy-Wasm map and buffer types.
const (
	mapRequestHeaders       = 0
	mapRequestTrailers      = 1
	mapResponseHeaders      = 2
	mapResponseTrailers     = 3
	mapHTTPCallRespHeaders  = 6
	mapHTTPCallRespTrailers = 7

	bufRequestBody      = 0
	bufResponseBody     = 1
	bufHTTPCallRespBody = 4
	bufVMConfig         = 6
	bufPluginConfig     = 7
)

// Pseudo-header names as the guest sees them; read-only.
var (
	pMethod    = []byte(":method")
	pScheme    = []byte(":scheme")
	pAuthority = []byte(":authority")
	pPath      = []byte(":path")
	pStatus    = []byte(":status")
)

func requestHeaderCount(r *message.Request) int   { return 4 + r.Header.Len() }
func responseHeaderCount(r *message.Response) int { return 1 + r.Header.Len() }

// headerTarget resolves a map type to the headers it names; pseudo is true
// for request/response headers (which carry pseudo-headers too).
func (st *streamCtx) headerTarget(typ uint64) (h *message.Headers, ok bool) {
	s := st.s
	switch typ {
	case mapRequestHeaders:
		return &s.Req.Header, true
	case mapRequestTrailers:
		return &s.Req.Trailer, true
	case mapResponseHeaders:
		if s.Resp != nil && st.resp {
			return &s.Resp.Header, true
		}
	case mapResponseTrailers:
		if s.Resp != nil && st.resp {
			return &s.Resp.Trailer, true
		}
	}
	return nil, false
}

// pairsOf lists a map's fields into in.pairs (pseudo-headers first).
func (in *instance) pairsOf(typ uint64) ([]pair, bool) {
	switch typ {
	case mapHTTPCallRespHeaders, mapHTTPCallRespTrailers:
		r := in.callResponse()
		if r == nil {
			return nil, false
		}
		if typ == mapHTTPCallRespHeaders {
			return r.headers, true
		}
		return r.trailers, true
	}
	st := in.stream()
	if st == nil {
		return nil, false
	}
	ps := in.pairs[:0]
	switch typ {
	case mapRequestHeaders:
		r := st.s.Req
		ps = append(ps, pair{pMethod, r.Method}, pair{pScheme, r.Scheme}, pair{pAuthority, r.Authority}, pair{pPath, r.Path})
	case mapResponseHeaders:
		if st.s.Resp == nil || !st.resp {
			return nil, false
		}
		in.scratch = strconv.AppendInt(in.scratch[:0], int64(st.s.Resp.Status), 10)
		ps = append(ps, pair{pStatus, in.scratch})
	}
	h, ok := st.headerTarget(typ)
	if !ok {
		return nil, false
	}
	for i := 0; i < h.Len(); i++ {
		f := h.At(i)
		ps = append(ps, pair{f.Name, f.Value})
	}
	in.pairs = ps
	return ps, true
}

func hostGetHeaderMapPairs(ctx context.Context, in *instance, a []uint64) uint32 {
	ps, ok := in.pairsOf(a[0])
	if !ok {
		return statusNotFound
	}
	// Serialized into a buffer the instance keeps: returnBytes copies it
	// into guest memory at once.
	in.mapBuf = appendMap(in.mapBuf[:0], ps)
	return in.returnBytes(ctx, in.mapBuf, u32(a[1]), u32(a[2]))
}

func hostGetHeaderMapSize(_ context.Context, in *instance, a []uint64) uint32 {
	ps, ok := in.pairsOf(a[0])
	if !ok {
		return statusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[1]), uint32(mapSize(ps))) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// lowerName returns name lower-cased; guests may send any case.
func (in *instance) lowerName(name []byte) []byte {
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			return bytes.ToLower(name)
		}
	}
	return name
}

func hostGetHeaderMapValue(ctx context.Context, in *instance, a []uint64) uint32 {
	key, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	key = in.lowerName(key)
	st := in.stream()
	if st == nil && a[0] != mapHTTPCallRespHeaders && a[0] != mapHTTPCallRespTrailers {
		return statusNotFound
	}
	var v []byte
	found := false
	switch a[0] {
	case mapRequestHeaders, mapResponseHeaders:
		if len(key) > 0 && key[0] == ':' {
			v, found = st.pseudo(a[0], key, in)
			break
		}
		fallthrough
	case mapRequestTrailers, mapResponseTrailers:
		h, ok := st.headerTarget(a[0])
		if !ok {
			return statusNotFound
		}
		for i := 0; i < h.Len(); i++ {
			if f := h.At(i); bytes.Equal(f.Name, key) {
				v, found = f.Value, true
				break
			}
		}
	case mapHTTPCallRespHeaders, mapHTTPCallRespTrailers:
		ps, ok := in.pairsOf(a[0])
		if !ok {
			return statusNotFound
		}
		for _, p := range ps {
			if bytes.Equal(p.Name, key) {
				v, found = p.Value, true
				break
			}
		}
	default:
		return statusBadArgument
	}
	if !found {
		return statusNotFound
	}
	return in.returnBytes(ctx, v, u32(a[3]), u32(a[4]))
}

// pseudo reads a pseudo-header of the request or response headers.
func (st *streamCtx) pseudo(typ uint64, key []byte, in *instance) ([]byte, bool) {
	if typ == mapResponseHeaders {
		if bytes.Equal(key, pStatus) && st.s.Resp != nil && st.resp {
			in.scratch = strconv.AppendInt(in.scratch[:0], int64(st.s.Resp.Status), 10)
			return in.scratch, true
		}
		return nil, false
	}
	r := st.s.Req
	switch {
	case bytes.Equal(key, pMethod):
		return r.Method, true
	case bytes.Equal(key, pScheme):
		return r.Scheme, true
	case bytes.Equal(key, pAuthority):
		return r.Authority, true
	case bytes.Equal(key, pPath):
		return r.Path, true
	}
	return nil, false
}

// setPseudo writes a pseudo-header; unknown ones are refused.
func (st *streamCtx) setPseudo(typ uint64, key, val []byte) uint32 {
	if typ == mapResponseHeaders {
		if !bytes.Equal(key, pStatus) || st.s.Resp == nil {
			return statusBadArgument
		}
		code, err := strconv.Atoi(string(val))
		if err != nil || code < 100 || code > 999 {
			return statusBadArgument
		}
		st.s.Resp.Status = code
		return statusOK
	}
	r := st.s.Req
	switch {
	case bytes.Equal(key, pMethod):
		r.SetMethod(string(val))
	case bytes.Equal(key, pScheme):
		r.SetScheme(string(val))
	case bytes.Equal(key, pAuthority):
		r.SetAuthorityBytes(val)
		st.s.ClearRoute()
	case bytes.Equal(key, pPath):
		r.SetPathBytes(val)
		st.s.ClearRoute()
	default:
		return statusBadArgument
	}
	return statusOK
}

// mutate applies add (add=true) or replace to one field.
func (in *instance) mutate(a []uint64, add bool) uint32 {
	key, ok1 := in.read(u32(a[1]), u32(a[2]))
	val, ok2 := in.read(u32(a[3]), u32(a[4]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	key = in.lowerName(key)
	if len(key) > 0 && key[0] == ':' && (a[0] == mapRequestHeaders || a[0] == mapResponseHeaders) {
		return st.setPseudo(a[0], key, val)
	}
	h, ok := st.headerTarget(a[0])
	if !ok {
		return statusBadArgument
	}
	if add {
		h.AddBytes(key, val)
	} else {
		h.SetBytes(string(key), val)
	}
	if a[0] == mapRequestHeaders && !st.resp {
		st.s.ClearRoute()
	}
	return statusOK
}

func hostAddHeaderMapValue(_ context.Context, in *instance, a []uint64) uint32 {
	return in.mutate(a, true)
}

func hostReplaceHeaderMapValue(_ context.Context, in *instance, a []uint64) uint32 {
	return in.mutate(a, false)
}

func hostRemoveHeaderMapValue(_ context.Context, in *instance, a []uint64) uint32 {
	key, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	h, ok := st.headerTarget(a[0])
	if !ok {
		return statusBadArgument
	}
	key = in.lowerName(key)
	if len(key) > 0 && key[0] == ':' {
		return statusOK // pseudo-headers cannot be removed; Envoy ignores it too
	}
	h.Del(string(key))
	if a[0] == mapRequestHeaders && !st.resp {
		st.s.ClearRoute()
	}
	return statusOK
}

func hostSetHeaderMapPairs(_ context.Context, in *instance, a []uint64) uint32 {
	raw, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	h, ok := st.headerTarget(a[0])
	if !ok {
		return statusBadArgument
	}
	ps, err := parseMap(raw, in.pairs[:0])
	in.pairs = ps[:0]
	if err != nil {
		return statusSerializationFailed
	}
	// The guest's bytes alias its memory: Add copies them into the arena.
	h.Reset()
	for _, p := range ps {
		name := in.lowerName(p.Name)
		if len(name) > 0 && name[0] == ':' {
			if (a[0] == mapRequestHeaders || a[0] == mapResponseHeaders) && st.setPseudo(a[0], name, p.Value) != statusOK {
				return statusBadArgument
			}
			continue
		}
		h.AddBytes(name, p.Value)
	}
	if a[0] == mapRequestHeaders && !st.resp {
		st.s.ClearRoute()
	}
	return statusOK
}

// buffer returns the bytes of a buffer type and, for bodies, where to store
// a replacement.
func (in *instance) buffer(typ uint64) ([]byte, *[]byte, bool) {
	switch typ {
	case bufVMConfig:
		return in.p.vm.Config, nil, true
	case bufPluginConfig:
		return in.p.config, nil, true
	case bufHTTPCallRespBody:
		if r := in.callResponse(); r != nil {
			return r.body, nil, true
		}
		return nil, nil, false
	}
	st := in.stream()
	if st == nil {
		return nil, nil, false
	}
	switch typ {
	case bufRequestBody, bufDownstreamData: // network.go: a connection's data
		return st.reqBody, &st.reqBody, true
	case bufResponseBody, bufUpstreamData:
		return st.respBody, &st.respBody, true
	}
	return nil, nil, false
}

// callResponse is the HTTP call response being delivered
// (proxy_on_http_call_response runs on the root context, which the guest
// may switch to the stream that made the call: the response stays readable
// from either).
func (in *instance) callResponse() *callResult { return in.callResp }

func hostGetBufferBytes(ctx context.Context, in *instance, a []uint64) uint32 {
	b, _, ok := in.buffer(a[0])
	if !ok {
		return statusNotFound
	}
	start, max := u32(a[1]), u32(a[2])
	if uint64(start) > uint64(len(b)) {
		return statusBadArgument
	}
	b = b[start:]
	if uint64(max) < uint64(len(b)) {
		b = b[:max]
	}
	return in.returnBytes(ctx, b, u32(a[3]), u32(a[4]))
}

func hostGetBufferStatus(_ context.Context, in *instance, a []uint64) uint32 {
	b, _, ok := in.buffer(a[0])
	if !ok {
		return statusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[1]), uint32(len(b))) || !in.mem.WriteUint32Le(u32(a[2]), 0) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// hostSetBufferBytes replaces bytes [start, start+size) of a body with the
// guest's data (start=0, size=len replaces all; size=0 inserts).
func hostSetBufferBytes(_ context.Context, in *instance, a []uint64) uint32 {
	data, ok := in.read(u32(a[3]), u32(a[4]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	b, dst, ok := in.buffer(a[0])
	if !ok || dst == nil {
		return statusBadArgument
	}
	start, size := uint64(u32(a[1])), uint64(u32(a[2]))
	if start > uint64(len(b)) {
		// A start past the end appends, as in Envoy: SDKs append with
		// start = MaxInt32, size = 0 (they cannot know the length).
		start = uint64(len(b))
	}
	end := min(start+size, uint64(len(b)))
	nb := make([]byte, 0, uint64(len(b))-(end-start)+uint64(len(data)))
	nb = append(nb, b[:start]...)
	nb = append(nb, data...)
	nb = append(nb, b[end:]...)
	*dst = nb
	return statusOK
}

// replaceResponse releases an upstream response about to be replaced by a
// local one.
func (st *streamCtx) replaceResponse() {
	if st.s.Resp != nil && st.s.Resp.Close != nil {
		st.s.Resp.Close()
		st.s.Resp.Close = nil
	}
}

func hostSendLocalResponse(_ context.Context, in *instance, a []uint64) uint32 {
	status := int(u32(a[0]))
	body, ok1 := in.read(u32(a[3]), u32(a[4]))
	hdrs, ok2 := in.read(u32(a[5]), u32(a[6]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	if st.tr.active {
		return statusBadArgument // the head is sent (trailers.go)
	}
	if status < 200 || status > 599 {
		return statusBadArgument
	}
	ps, err := parseMap(hdrs, in.pairs[:0])
	in.pairs = ps[:0]
	if err != nil {
		return statusSerializationFailed
	}
	st.replaceResponse()
	s := st.s
	if ct, _ := s.Req.Header.Get("content-type"); message.IsGRPC(ct) {
		// Reply maps the status to a gRPC trailers-only response.
		s.Reply(status, string(body))
	} else {
		r := s.LocalResponse()
		r.Status = status
		r.Body = bytes.NewReader(append([]byte(nil), body...))
		r.ContentLength = int64(len(body))
		if len(body) > 0 {
			r.Header.Set("content-type", "text/plain; charset=utf-8")
		}
		s.Resp = r
	}
	for _, p := range ps {
		switch name := in.lowerName(p.Name); {
		case len(name) == 0 || name[0] == ':':
		case string(name) == "content-type":
			s.Resp.Header.SetBytes("content-type", p.Value)
		default:
			s.Resp.Header.AddBytes(name, p.Value)
		}
	}
	st.local = true
	return statusOK
}
