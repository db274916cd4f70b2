package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
)

// client is one simulated proxy: one TCP connection, one ADS stream, one
// goroutine. It speaks just enough HTTP/2 and gRPC framing to subscribe,
// receive and ACK: 10,000 grpc-go ClientConns would cost this 2-core machine
// far more CPU per push than the server under test, and that cost would land
// in the latencies measured.
type client struct {
	id       int
	delta    bool
	types    []string
	clusters []string // EDS subscription
	omniNode bool     // send the node an OmniRelay proxy sends, capabilities and all

	conn net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	buf  []byte // gRPC message reassembly

	edsEpoch atomic.Int64 // epoch of the latest EDS response seen
	edsAt    atomic.Int64 // unix ns at which that epoch's first EDS response arrived
	got      atomic.Int64 // responses of any type
}

// epoch is the driver's current update number, read by every client when an
// EDS response arrives so that only the first response after an update counts.
type epoch = atomic.Int64

const streamID = 1

func (c *client) dial(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("client %d: dial: %w", c.id, err)
	}
	c.conn = conn
	c.bw = bufio.NewWriterSize(conn, 2048)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(conn, 4096))
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	// Windows large enough that the client never has to send WINDOW_UPDATE.
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}); err != nil {
		return err
	}
	if err := c.fr.WriteWindowUpdate(0, 1<<31-1-65535); err != nil {
		return err
	}
	// Like grpc-go and Envoy, wait for the server's SETTINGS and honour its
	// HPACK table size before sending headers.
	if err := c.bw.Flush(); err != nil {
		return err
	}
	tableSize := uint32(4096)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("client %d: waiting for SETTINGS: %w", c.id, err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if v, ok := sf.Value(http2.SettingHeaderTableSize); ok {
				tableSize = v
			}
			if err := c.fr.WriteSettingsAck(); err != nil {
				return err
			}
			break
		}
	}
	method := "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	if c.delta {
		method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
	}
	var hb []byte
	enc := hpack.NewEncoder(sliceWriter{&hb})
	enc.SetMaxDynamicTableSizeLimit(tableSize)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", addr},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: streamID, BlockFragment: hb, EndHeaders: true}); err != nil {
		return err
	}
	node := &corev3.Node{Id: fmt.Sprintf("xdsload-%d", c.id), Cluster: "xdsload"}
	if c.omniNode {
		omniRelayCaps.Apply(node)
	}
	for i, t := range c.types {
		if i > 0 {
			node = nil
		}
		if c.delta {
			req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: t}
			if t == resourcev3.EndpointType {
				req.ResourceNamesSubscribe = c.clusters
			}
			err = c.send(req)
		} else {
			req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}
			if t == resourcev3.EndpointType {
				req.ResourceNames = c.clusters
			}
			err = c.send(req)
		}
		if err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// omniRelayCaps is what an OmniRelay build advertises in its node
// (internal/dataplane/app.Capabilities of this build): ~1 KB on the wire,
// several KB once decoded.
var omniRelayCaps = capability.Set{Kind: capability.KindOmniRelay, Build: "1.2.3", Filters: []string{
	"envoy.filters.http.router", "envoy.filters.network.http_connection_manager", "envoy.filters.network.rbac",
	"envoy.filters.network.tcp_proxy", "envoy.filters.http.cors", "envoy.filters.http.fault",
	"envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn", "envoy.filters.http.local_ratelimit",
	"envoy.filters.http.rbac",
}}

type sliceWriter struct{ b *[]byte }

func (w sliceWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// send writes one gRPC message on the stream (not flushed).
func (c *client) send(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	msg := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(b)))
	copy(msg[5:], b)
	if err := c.fr.WriteData(streamID, false, msg); err != nil {
		return fmt.Errorf("client %d: write: %w", c.id, err)
	}
	return nil
}

// run reads until the connection fails or ctx ends, ACKing every response.
func (c *client) run(ctx context.Context, ep *epoch) error {
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer stop()
	defer c.conn.Close()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client %d: read: %w", c.id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = c.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("client %d: GOAWAY %v", c.id, f.ErrCode)
		case *http2.RSTStreamFrame:
			return fmt.Errorf("client %d: RST_STREAM %v", c.id, f.ErrCode)
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return fmt.Errorf("client %d: stream ended by the server", c.id)
			}
		case *http2.DataFrame:
			c.buf = append(c.buf, f.Data()...)
			err = c.drain(ep)
		}
		if err != nil {
			return err
		}
		if err := c.bw.Flush(); err != nil {
			return fmt.Errorf("client %d: flush: %w", c.id, err)
		}
	}
}

// drain handles the complete gRPC messages in buf.
func (c *client) drain(ep *epoch) error {
	for len(c.buf) >= 5 {
		n := int(binary.BigEndian.Uint32(c.buf[1:5]))
		if len(c.buf) < 5+n {
			return nil
		}
		if err := c.handle(c.buf[5:5+n], ep); err != nil {
			return err
		}
		c.buf = c.buf[5+n:]
	}
	if len(c.buf) == 0 {
		c.buf = nil
	}
	return nil
}

func (c *client) handle(b []byte, ep *epoch) error {
	now := time.Now().UnixNano()
	var typeURL string
	if c.delta {
		var m discoveryv3.DeltaDiscoveryResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("client %d: decode: %w", c.id, err)
		}
		typeURL = m.TypeUrl
		if err := c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce}); err != nil {
			return err
		}
	} else {
		var m discoveryv3.DiscoveryResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("client %d: decode: %w", c.id, err)
		}
		typeURL = m.TypeUrl
		req := &discoveryv3.DiscoveryRequest{TypeUrl: m.TypeUrl, VersionInfo: m.VersionInfo, ResponseNonce: m.Nonce}
		if typeURL == resourcev3.EndpointType {
			req.ResourceNames = c.clusters
		}
		if err := c.send(req); err != nil {
			return err
		}
	}
	c.got.Add(1)
	if typeURL == resourcev3.EndpointType {
		if e := ep.Load(); c.edsEpoch.Load() < e {
			c.edsAt.Store(now)
			c.edsEpoch.Store(e)
		}
	}
	return nil
}
