package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
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
	// filter state, readable by later calls of the same plugin. A property
	// declared read-only (declare_property) can be set once.
	if _, builtin := in.property(path); builtin && st.props[string(path)] == nil {
		return statusBadArgument
	}
	if d, ok := in.p.declared(string(bytes.TrimRight(path, "\x00"))); ok && d.readonly && st.props[string(path)] != nil {
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
	case "plugin_name":
		return []byte(p.name), true
	case "plugin_root_id":
		return []byte(p.vm.RootID), true
	case "plugin_vm_id":
		return []byte(p.vm.ID), true
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
	if rest, ok := bytes.CutPrefix(path, []byte("route_metadata")); ok && (len(rest) == 0 || rest[0] == 0) {
		if s.Route != nil {
			return metadataProperty(s.Route.Metadata, bytes.TrimPrefix(rest, []byte{0}))
		}
		return nil, false
	}
	if rest, ok := bytes.CutPrefix(path, []byte("cluster_metadata")); ok && (len(rest) == 0 || rest[0] == 0) {
		if md := in.p.rt.opts.ClusterMetadata; md != nil && s.UpstreamCluster != "" {
			return metadataProperty(md(s.UpstreamCluster), bytes.TrimPrefix(rest, []byte{0}))
		}
		return nil, false
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

// metadataProperty resolves route_metadata / cluster_metadata paths:
// "filter_metadata", a filter name, then keys into its Struct, as Envoy's
// attributes do. A string is its bytes, a number 8-byte little-endian
// float64 and a bool one byte (Envoy's encodings); a struct is a pairs map
// (the header-map layout: SDKs read it with GetPropertyMap) whose
// non-string values are JSON; the bare metadata is the serialized proto.
func metadataProperty(md *corev3.Metadata, rest []byte) ([]byte, bool) {
	if md == nil {
		return nil, false
	}
	if len(rest) == 0 {
		b, err := proto.Marshal(md)
		return b, err == nil
	}
	segs := bytes.Split(rest, []byte{0})
	if string(segs[0]) != "filter_metadata" {
		return nil, false
	}
	if len(segs) == 1 {
		b, err := proto.Marshal(md)
		return b, err == nil
	}
	s, ok := md.GetFilterMetadata()[string(segs[1])]
	if !ok {
		return nil, false
	}
	v := structpb.NewStructValue(s)
	for _, k := range segs[2:] {
		st := v.GetStructValue()
		if st == nil {
			return nil, false
		}
		if v, ok = st.GetFields()[string(k)]; !ok {
			return nil, false
		}
	}
	return encodeValue(v)
}

func encodeValue(v *structpb.Value) ([]byte, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return []byte(k.StringValue), true
	case *structpb.Value_NumberValue:
		return binary.LittleEndian.AppendUint64(nil, math.Float64bits(k.NumberValue)), true
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return []byte{1}, true
		}
		return []byte{0}, true
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		keys := make([]string, 0, len(fields))
		for key := range fields {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		ps := make([]pair, 0, len(keys))
		for _, key := range keys {
			fv := fields[key]
			val := []byte(fv.GetStringValue())
			if _, isStr := fv.GetKind().(*structpb.Value_StringValue); !isStr {
				b, err := protojson.Marshal(fv)
				if err != nil {
					return nil, false
				}
				val = b
			}
			ps = append(ps, pair{[]byte(key), val})
		}
		return appendMap(nil, ps), true
	case *structpb.Value_ListValue:
		b, err := protojson.Marshal(v)
		return b, err == nil
	}
	return nil, false
}
