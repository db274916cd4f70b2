package xdsserver

import (
	"context"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// testTimeout bounds every wait for a message that must arrive.
const testTimeout = 10 * time.Second

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func cluster(t testing.TB, name string) *Resource {
	return &Resource{Name: name, Body: mustAny(t, &clusterv3.Cluster{Name: name})}
}

// cla is an endpoint assignment whose content depends on port, so changing
// the port changes the resource's version.
func cla(t testing.TB, name string, port uint32) *Resource {
	return &Resource{Name: name, Body: mustAny(t, &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}},
			}},
		}}}},
	})}
}

func listener(t testing.TB, name string) *Resource {
	return &Resource{Name: name, Body: mustAny(t, &listenerv3.Listener{Name: name})}
}

func signedCluster(t testing.TB, name string) *Resource {
	r := cluster(t, name)
	s, err := structpb.NewStruct(map[string]any{"envelope": "test-envelope"})
	if err != nil {
		t.Fatal(err)
	}
	r.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"omnirelay.dsse": s}}
	return r
}

func snapshot(version string, rs map[string][]*Resource) *Snapshot {
	return &Snapshot{Version: version, Resources: rs}
}

// leanTransport makes startServer use Server.Serve instead of a grpc.Server.
// TestMain sets it between its two runs of the tests, never during one.
var leanTransport bool

// testServer is a real gRPC server on 127.0.0.1 serving a fresh cache.
type testServer struct {
	cache  *Cache
	addr   string
	server *Server
}

// pendingBytes is what the lean transport holds for clients short of window.
func (s *Server) pendingBytes() int {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	n := 0
	for c := range s.conns {
		c.wmu.Lock()
		for _, st := range c.blocked {
			n += len(st.pending)
		}
		c.wmu.Unlock()
	}
	return n
}

func startServer(t *testing.T, o Options) *testServer {
	t.Helper()
	if o.Cache == nil {
		o.Cache = NewCache()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(o)
	served := make(chan struct{})
	if leanTransport {
		go func() {
			defer close(served)
			if err := srv.Serve(lis); err != nil {
				t.Errorf("serve: %v", err)
			}
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-served
		})
		return &testServer{cache: o.Cache, addr: lis.Addr().String(), server: srv}
	}
	g := grpc.NewServer(ServerOptions()...)
	srv.Register(g)
	go func() {
		defer close(served)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-served
	})
	return &testServer{cache: o.Cache, addr: lis.Addr().String(), server: srv}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func node(id string) *corev3.Node { return &corev3.Node{Id: id} }

// sotwClient wraps an ADS SotW stream with a receive goroutine so that tests
// can wait for a message with a deadline.
type sotwClient struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	msgs   chan *discoveryv3.DiscoveryResponse
	cancel context.CancelFunc
	err    error // the stream's final error, set before msgs is closed
}

func newSotW(t *testing.T, cc *grpc.ClientConn) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st, msgs: make(chan *discoveryv3.DiscoveryResponse, 64), cancel: cancel}
	go func() {
		defer close(c.msgs)
		for {
			m, err := st.Recv()
			if err != nil {
				c.err = err
				return
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *sotwClient) close() {
	c.cancel()
	for range c.msgs {
	}
}

func (c *sotwClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *sotwClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("stream closed")
		}
		return m
	case <-time.After(testTimeout):
		c.t.Fatal("no response")
	}
	return nil
}

// ack acknowledges m.
func (c *sotwClient) ack(m *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: m.TypeUrl, VersionInfo: m.VersionInfo, ResponseNonce: m.Nonce, ResourceNames: names})
}

// barrier proves that nothing was queued before it: it subscribes to a
// listener that exists only for this purpose and expects the very next
// message to be its LDS answer (the server handles a stream's requests in order).
func (c *sotwClient) barrier(name string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name}})
	m := c.recv()
	if m.TypeUrl != resourcev3.ListenerType {
		c.t.Fatalf("before the barrier: unexpected %s response version %s (%d resources)", m.TypeUrl, m.VersionInfo, len(m.Resources))
	}
}

type deltaClient struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	msgs   chan *discoveryv3.DeltaDiscoveryResponse
	cancel context.CancelFunc
}

func newDelta(t *testing.T, cc *grpc.ClientConn) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &deltaClient{t: t, stream: st, msgs: make(chan *discoveryv3.DeltaDiscoveryResponse, 64), cancel: cancel}
	go func() {
		defer close(c.msgs)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *deltaClient) close() {
	c.cancel()
	for range c.msgs {
	}
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("stream closed")
		}
		return m
	case <-time.After(testTimeout):
		c.t.Fatal("no response")
	}
	return nil
}

func (c *deltaClient) ack(m *discoveryv3.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce})
}

// barrier: see sotwClient.barrier.
func (c *deltaClient) barrier(name string) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNamesSubscribe: []string{name}})
	m := c.recv()
	if m.TypeUrl != resourcev3.ListenerType {
		c.t.Fatalf("before the barrier: unexpected %s response (%d resources, removed %v)", m.TypeUrl, len(m.Resources), m.RemovedResources)
	}
}

func names(rs []*anypb.Any) []string {
	var out []string
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			out = append(out, "?"+err.Error())
			continue
		}
		switch v := m.(type) {
		case *clusterv3.Cluster:
			out = append(out, v.Name)
		case *endpointv3.ClusterLoadAssignment:
			out = append(out, v.ClusterName)
		case *listenerv3.Listener:
			out = append(out, v.Name)
		case *discoveryv3.Resource:
			out = append(out, "wrapped:"+v.Name)
		default:
			out = append(out, string(m.ProtoReflect().Descriptor().FullName()))
		}
	}
	return out
}

func deltaNames(rs []*discoveryv3.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
