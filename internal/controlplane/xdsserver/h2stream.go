package xdsserver

import (
	"encoding/binary"
	"strconv"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// routeOf maps a gRPC method path to the stream kind and type it serves:
// the same methods Register puts on a grpc.Server.
func routeOf(path string) (h2route, bool) {
	switch path {
	case discoveryv3.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName:
		return h2route{routeSotW, ""}, true
	case discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName:
		return h2route{routeDelta, ""}, true
	case clusterservice.ClusterDiscoveryService_StreamClusters_FullMethodName:
		return h2route{routeSotW, resourcev3.ClusterType}, true
	case clusterservice.ClusterDiscoveryService_DeltaClusters_FullMethodName:
		return h2route{routeDelta, resourcev3.ClusterType}, true
	case clusterservice.ClusterDiscoveryService_FetchClusters_FullMethodName:
		return h2route{routeFetch, resourcev3.ClusterType}, true
	case listenerservice.ListenerDiscoveryService_StreamListeners_FullMethodName:
		return h2route{routeSotW, resourcev3.ListenerType}, true
	case listenerservice.ListenerDiscoveryService_DeltaListeners_FullMethodName:
		return h2route{routeDelta, resourcev3.ListenerType}, true
	case listenerservice.ListenerDiscoveryService_FetchListeners_FullMethodName:
		return h2route{routeFetch, resourcev3.ListenerType}, true
	case routeservice.RouteDiscoveryService_StreamRoutes_FullMethodName:
		return h2route{routeSotW, resourcev3.RouteType}, true
	case routeservice.RouteDiscoveryService_DeltaRoutes_FullMethodName:
		return h2route{routeDelta, resourcev3.RouteType}, true
	case routeservice.RouteDiscoveryService_FetchRoutes_FullMethodName:
		return h2route{routeFetch, resourcev3.RouteType}, true
	case endpointservice.EndpointDiscoveryService_StreamEndpoints_FullMethodName:
		return h2route{routeSotW, resourcev3.EndpointType}, true
	case endpointservice.EndpointDiscoveryService_DeltaEndpoints_FullMethodName:
		return h2route{routeDelta, resourcev3.EndpointType}, true
	case endpointservice.EndpointDiscoveryService_FetchEndpoints_FullMethodName:
		return h2route{routeFetch, resourcev3.EndpointType}, true
	case secretservice.SecretDiscoveryService_StreamSecrets_FullMethodName:
		return h2route{routeSotW, resourcev3.SecretType}, true
	case secretservice.SecretDiscoveryService_DeltaSecrets_FullMethodName:
		return h2route{routeDelta, resourcev3.SecretType}, true
	case secretservice.SecretDiscoveryService_FetchSecrets_FullMethodName:
		return h2route{routeFetch, resourcev3.SecretType}, true
	}
	return h2route{}, false
}

// handle decodes one request and hands it to the stream's xDS state, which
// the first request creates. It runs on the connection's reader goroutine.
func (st *h2stream) handle(b []byte) error {
	switch st.route.kind {
	case routeSotW:
		req := &discoveryv3.DiscoveryRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return status.Errorf(codes.Internal, "xds: decoding the request: %v", err)
		}
		if st.sotw == nil {
			c, err := st.c.s.open(req.GetNode(), st.c.peer())
			if err != nil {
				return err
			}
			st.xc, c.lean = c, st
			st.sotw = &sotwConn{conn: c, stream: leanSotW{st}, typeURL: st.route.typeURL}
			st.sotw.start(st.sotw.pushAll)
			if err := c.arm(st.finish); err != nil {
				return err
			}
		}
		return st.xc.step(func() error { return st.sotw.handle(req) })
	case routeDelta:
		req := &discoveryv3.DeltaDiscoveryRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return status.Errorf(codes.Internal, "xds: decoding the request: %v", err)
		}
		if st.delta == nil {
			c, err := st.c.s.open(req.GetNode(), st.c.peer())
			if err != nil {
				return err
			}
			st.xc, c.lean = c, st
			st.delta = &deltaConn{conn: c, stream: leanDelta{st}, typeURL: st.route.typeURL}
			st.delta.start(st.delta.pushAll)
			if err := c.arm(st.finish); err != nil {
				return err
			}
		}
		return st.xc.step(func() error { return st.delta.handle(req) })
	case routeFetch:
		if st.fetch != nil {
			return status.Error(codes.Internal, "xds: more than one request on a unary call")
		}
		st.fetch = append(make([]byte, 0, len(b)+1), b...) // non-nil even when empty
		return nil
	}
	return status.Error(codes.Unimplemented, "xds: unknown method")
}

// halfClose handles the client's END_STREAM: a streaming call ends with OK,
// as a grpc-go handler returns when Recv says EOF; a unary call is answered.
func (st *h2stream) halfClose() {
	c := st.c
	c.wmu.Lock()
	st.recvDone = true
	done := st.done
	c.wmu.Unlock()
	switch {
	case done:
		c.remove(st)
	case len(st.msg) > 0:
		st.fail(status.Error(codes.Internal, "xds: request cut short by the end of the stream"))
	case st.route.kind == routeFetch:
		if st.fetch == nil {
			st.fail(status.Error(codes.Internal, "xds: unary call without a request"))
			return
		}
		req := &discoveryv3.DiscoveryRequest{}
		if err := proto.Unmarshal(st.fetch, req); err != nil {
			st.fail(status.Errorf(codes.Internal, "xds: decoding the request: %v", err))
			return
		}
		st.fetch = nil
		resp, err := c.s.fetch(st.route.typeURL, req, c.peer())
		if err == nil {
			err = st.send(resp)
		}
		st.fail(err)
	default:
		st.fail(nil)
	}
}

// fail ends the stream with err's status (OK for nil) and forgets it. Reader
// goroutine only.
func (st *h2stream) fail(err error) {
	st.finish(err)
	st.c.remove(st)
}

// finish sends the stream's status, after any pending response bytes, and
// ends its xDS state. Any goroutine; only the first call does anything.
func (st *h2stream) finish(err error) {
	c := st.c
	c.wmu.Lock()
	if !st.done {
		st.done = true
		tr := appendStatus(nil, st.id, !st.headersSent, err)
		st.headersSent = true
		if !st.recvDone {
			// The client may still be sending: tell it to stop (RFC 9113 §8.1).
			tr = http2core.AppendRSTStream(tr, st.id, http2.ErrCodeNo)
		}
		if len(st.pending) == 0 {
			c.out = append(c.out, tr...)
		} else {
			st.trailers = tr
		}
		c.flushLocked()
	}
	c.wmu.Unlock()
	st.end()
}

// end releases the stream's xDS state (its cache subscription).
func (st *h2stream) end() {
	if st.xc != nil {
		st.xc.close()
	}
}

// send queues one response message and writes what the windows allow. It
// never blocks: a client that grants no window accumulates pending bytes up
// to h2MaxPending, then loses the stream.
func (st *h2stream) send(m proto.Message) error {
	buf := make([]byte, 5, 5+proto.Size(m))
	buf, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(buf, m)
	if err != nil {
		return status.Errorf(codes.Internal, "xds: encoding the response: %v", err)
	}
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(buf)-5))
	c := st.c
	c.wmu.Lock()
	if st.done || c.werr != nil {
		c.wmu.Unlock()
		return status.Error(codes.Unavailable, "xds: stream closed")
	}
	if len(st.pending)+len(buf) > h2MaxPending {
		c.wmu.Unlock()
		err := status.Errorf(codes.ResourceExhausted, "xds: client left %d bytes of responses unread", len(st.pending))
		st.finish(err)
		return err
	}
	if !st.headersSent {
		st.headersSent = true
		c.out = appendResponseHeaders(c.out, st.id)
	}
	if st.pending == nil {
		st.pending = buf
	} else {
		st.pending = append(st.pending, buf...)
	}
	c.writeDataLocked(st)
	c.flushLocked()
	c.wmu.Unlock()
	return nil
}

// busy reports whether a response is still waiting for window, and if so
// asks for a notification once it has gone out.
func (st *h2stream) busy() bool {
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	if len(st.pending) == 0 {
		return false
	}
	st.wantPush = true
	return true
}

// leanSotW and leanDelta give the stream kinds their Send.
type leanSotW struct{ st *h2stream }

func (l leanSotW) Send(m *discoveryv3.DiscoveryResponse) error { return l.st.send(m) }

type leanDelta struct{ st *h2stream }

func (l leanDelta) Send(m *discoveryv3.DeltaDiscoveryResponse) error { return l.st.send(m) }

// Frame encoding (the frames themselves: internal/shared/http2core). Header
// blocks use only HPACK representations that never touch the dynamic table
// (static-indexed fields and literals without indexing), so the server keeps
// no encoder state per connection.

// appendSettings appends the server's SETTINGS: no HPACK dynamic table for
// the client's encoder to fill, and the stream limits the transport keeps.
func appendSettings(b []byte) []byte {
	return http2core.AppendSettings(b,
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
	)
}

// hpackStatus200 is ":status: 200", index 8 of the static table.
const hpackStatus200 = 0x88

// appendHeaderBlock appends the fields of a response's first HEADERS frame.
func appendResponseFields(b []byte) []byte {
	b = append(b, hpackStatus200)
	// content-type (static name index 31), literal without indexing.
	b = appendHpackInt(b, 0x00, 4, 31)
	return appendHpackString(b, "application/grpc")
}

func appendResponseHeaders(b []byte, id uint32) []byte {
	var block [32]byte
	return http2core.AppendHeaderBlock(b, id, appendResponseFields(block[:0]), false, http2core.DefaultMaxFrameSize)
}

// appendStatus appends the frame that ends a response: trailers, or, when no
// headers were sent, a trailers-only response.
func appendStatus(b []byte, id uint32, trailersOnly bool, err error) []byte {
	s := status.Convert(err)
	var block []byte
	if trailersOnly {
		block = appendResponseFields(block)
	}
	block = appendLiteral(block, "grpc-status", strconv.Itoa(int(s.Code())))
	if msg := s.Message(); msg != "" {
		if len(msg) > h2MaxStatusMsg {
			msg = msg[:h2MaxStatusMsg]
		}
		block = appendLiteral(block, "grpc-message", percentEncode(msg))
	}
	// Split at the smallest frame size a peer may ask for: grpc-message can
	// take a 4 KB message to 12 KB once percent-encoded.
	return http2core.AppendHeaderBlock(b, id, block, true, http2core.DefaultMaxFrameSize)
}

// appendLiteral appends a literal header field without indexing, new name.
func appendLiteral(b []byte, name, value string) []byte {
	b = append(b, 0x00)
	b = appendHpackString(b, name)
	return appendHpackString(b, value)
}

func appendHpackString(b []byte, s string) []byte {
	b = appendHpackInt(b, 0x00, 7, uint64(len(s))) // no Huffman coding
	return append(b, s...)
}

// appendHpackInt encodes v with an n-bit prefix after the bits in first
// (RFC 7541 §5.1).
func appendHpackInt(b []byte, first byte, n uint, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(limit))
	v -= limit
	for v >= 128 {
		b = append(b, byte(v%128)|0x80)
		v /= 128
	}
	return append(b, byte(v))
}

// percentEncode escapes a grpc-message value as the gRPC HTTP/2 spec asks:
// bytes outside printable ASCII, and '%', become %XX.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	out := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			out = append(out, '%', hex[c>>4], hex[c&15])
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
