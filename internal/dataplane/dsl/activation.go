package dsl

import (
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
)

// evalState is one stream's view for the rules: the CEL activation (it
// resolves variables straight from the Stream, so no map is built per
// request) plus what the stream's rules keep between phases. States are
// pooled per plugin.
type evalState struct {
	s      *filter.Stream
	plugin *Plugin

	cells   cells
	reqHdr  headerMap
	respHdr headerMap
	query   queryMap
	meta    metaMap
	claims  ref.Val // resolved lazily, once per stream

	// ipBuf backs connection.remote_ip for one evaluation; pathBuf holds a
	// rewritten path before the request copies it.
	ipBuf   []byte
	pathBuf []byte
}

var _ interpreter.Activation = (*evalState)(nil)

func newEvalState(p *Plugin) *evalState {
	st := &evalState{plugin: p}
	st.reqHdr.bind(&st.cells)
	st.respHdr.bind(&st.cells)
	st.query.bind(&st.cells)
	st.meta.bind(&st.cells)
	return st
}

func (st *evalState) bind(s *filter.Stream) {
	st.s = s
	st.reqHdr.h = &s.Req.Header
	st.query.q = s.Req.Query()
}

func (st *evalState) release() {
	st.s = nil
	st.reqHdr.h = nil
	st.respHdr.h = nil
	st.query.q = nil
	st.claims = nil
	st.meta.reset()
	st.cells.reset()
}

// ResolveName implements interpreter.Activation. Names are the qualified
// variables of dslrules; the checker has already refused any other.
func (st *evalState) ResolveName(name string) (any, bool) {
	s := st.s
	switch name {
	case dslrules.VarRequestMethod:
		return st.cells.str(s.Req.Method), true
	case dslrules.VarRequestPath:
		return st.cells.str(s.Req.PathOnly()), true
	case dslrules.VarRequestHost:
		return st.cells.str(s.Req.Host()), true
	case dslrules.VarRequestScheme:
		return st.cells.str(s.Req.Scheme), true
	case dslrules.VarRequestQuery:
		return &st.query, true
	case dslrules.VarRequestHeaders:
		return &st.reqHdr, true
	case dslrules.VarConnRemoteIP:
		if !s.Downstream.RemoteAddr.IsValid() {
			return types.String(""), true
		}
		// AppendTo writes into a buffer the state owns: no allocation once
		// it has grown. Earlier cells keep their bytes (appends past them
		// or into a new array never rewrite them).
		n := len(st.ipBuf)
		st.ipBuf = s.Downstream.RemoteAddr.Addr().AppendTo(st.ipBuf)
		return st.cells.str(st.ipBuf[n:len(st.ipBuf):len(st.ipBuf)]), true
	case dslrules.VarConnTLS:
		return types.Bool(s.Downstream.TLS != nil), true
	case dslrules.VarConnSNI:
		if s.Downstream.TLS == nil {
			return types.String(""), true
		}
		return st.cells.strString(s.Downstream.TLS.ServerName), true
	case dslrules.VarPeerSPIFFEID:
		return st.cells.strString(s.Downstream.PeerIdentity), true
	case dslrules.VarJWTClaims:
		if st.claims == nil {
			st.claims = st.plugin.claimsOf(s)
		}
		return st.claims, true
	case dslrules.VarMetadata:
		return &st.meta, true
	case dslrules.VarConfig:
		return st.plugin.config, true
	case dslrules.VarResponseStatus:
		if s.Resp == nil {
			return st.cells.int(0), true
		}
		return st.cells.int(int64(s.Resp.Status)), true
	case dslrules.VarResponseHeaders:
		if st.respHdr.h == nil {
			return types.DefaultTypeAdapter.NativeToValue(map[string]string{}), true
		}
		return &st.respHdr, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (st *evalState) Parent() interpreter.Activation { return nil }
