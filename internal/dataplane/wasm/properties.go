package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
)

// Property values follow Envoy's encoding: strings as raw bytes, integers
// as 8-byte little-endian, booleans as one byte. The path arrives as
// NUL-separated segments ("request\x00path").

func hostGetProperty(ctx context.Context, in *instance, a []uint64) uint32 {
	path, ok := in.read(u32(a[0]), u32(a[1]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	v, found := in.property(path)
	if !found {
		return statusNotFound
	}
	return in.returnBytes(ctx, v, u32(a[2]), u32(a[3]))
}

func hostSetProperty(_ context.Context, in *instance, a []uint64) uint32 {
	path, ok1 := in.read(u32(a[0]), u32(a[1]))
	val, ok2 := in.read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	// Host-defined properties are read-only; anything else is the stream's
	// filter state, readable by later calls of the same plugin.
	if _, builtin := in.property(path); builtin && st.props[string(path)] == nil {
		return statusBadArgument
	}
	if st.props == nil {
		st.props = map[string][]byte{}
	}
	st.props[string(path)] = append([]byte(nil), val...)
	return statusOK
}

func le64(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

// property resolves a property path.
func (in *instance) property(path []byte) ([]byte, bool) {
	path = bytes.TrimRight(path, "\x00")
	p := in.p
	switch string(path) {
	case "plugin_name", "plugin_root_id":
		return []byte(p.name), true
	case "plugin_vm_id":
		return nil, true
	}
	st := in.stream()
	if st == nil {
		return nil, false
	}
	if v, ok := st.props[string(path)]; ok {
		return v, true
	}
	s := st.s
	r := s.Req
	d := s.Downstream
	switch string(path) {
	case "request\x00path":
		return r.Path, true
	case "request\x00url_path":
		return r.PathOnly(), true
	case "request\x00host":
		return r.Authority, true
	case "request\x00scheme":
		return r.Scheme, true
	case "request\x00method":
		return r.Method, true
	case "request\x00query":
		return r.Query(), true
	case "request\x00protocol":
		return []byte("HTTP/" + strconv.Itoa(int(r.ProtoMajor)) + "." + strconv.Itoa(int(r.ProtoMinor))), true
	case "request\x00id":
		v, ok := r.Header.Get("x-request-id")
		return v, ok
	case "request\x00size":
		return le64(r.ContentLength), r.ContentLength >= 0
	case "request\x00time":
		return le64(s.Start.UnixNano()), true
	case "response\x00code":
		if s.Resp == nil || !st.resp {
			return nil, false
		}
		return le64(int64(s.Resp.Status)), true
	case "source\x00address":
		return []byte(d.RemoteAddr.String()), d.RemoteAddr.IsValid()
	case "source\x00port":
		return le64(int64(d.RemoteAddr.Port())), d.RemoteAddr.IsValid()
	case "destination\x00address":
		return []byte(d.LocalAddr.String()), d.LocalAddr.IsValid()
	case "destination\x00port":
		return le64(int64(d.LocalAddr.Port())), d.LocalAddr.IsValid()
	case "connection\x00mtls":
		if d.PeerIdentity != "" {
			return []byte{1}, true
		}
		return []byte{0}, true
	case "connection\x00tls_version":
		if d.TLS == nil {
			return nil, false
		}
		return []byte(tlsVersion(d.TLS.Version)), true
	case "connection\x00requested_server_name":
		if d.TLS == nil {
			return nil, false
		}
		return []byte(d.TLS.ServerName), true
	case "connection\x00uri_san_peer_certificate", "connection\x00peer_identity":
		return []byte(d.PeerIdentity), d.PeerIdentity != ""
	case "listener_name":
		return []byte(d.Listener), true
	case "route_name":
		if rt := s.Route; rt != nil {
			return []byte(rt.Name), true
		}
		return nil, false
	case "cluster_name":
		return []byte(s.UpstreamCluster), s.UpstreamCluster != ""
	case "upstream\x00address":
		return []byte(s.UpstreamHost), s.UpstreamHost != ""
	}
	return nil, false
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	return "unknown"
}
