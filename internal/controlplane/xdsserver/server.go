package xdsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Callbacks are optional hooks, called from the goroutine that receives the
// stream's requests (gRPC's handler goroutine, or the lean transport's
// connection reader); they must not block for long, as they delay that
// stream's responses (and, on the lean transport, its connection's other
// streams). Version in OnNack is the version of the response the client
// rejected. OnStreamOpen gets the node as the client sent it; the others get
// its identity only (id, cluster, locality, user agent name): the server does
// not keep a node's capability data for the life of every stream.
type Callbacks struct {
	OnStreamOpen  func(id int64, node *corev3.Node)
	OnStreamClose func(id int64, node *corev3.Node)
	OnAck         func(id int64, node *corev3.Node, typeURL, version string)
	OnNack        func(id int64, node *corev3.Node, typeURL, version, detail string)
}

// Options configure a Server. Cache is required. Group maps a node to the
// cache group it is served from (it may call Cache.Set to create the group);
// nil means the node id. An error from Group ends the stream with that
// error's gRPC status, or InvalidArgument.
type Options struct {
	Cache     *Cache
	Group     func(node *corev3.Node) (string, error)
	Callbacks Callbacks
	Log       *slog.Logger
	// Authorize, when set, decides whether a stream (or Fetch call) may
	// open, from the node it claims and what the transport knows of the
	// client; it runs before Group. An error ends the stream with its gRPC
	// status (PermissionDenied when it has none). secrets reports whether
	// the stream may receive SDS secrets: a stream that may not has its
	// secret subscriptions ignored (the client waits for them as for any
	// absent resource) and a secret Fetch is refused. Without Authorize
	// every stream may.
	Authorize func(node *corev3.Node, p Peer) (secrets bool, err error)
	// LoadReports, when set, takes LRS streams on both transports; without
	// it the service is not offered (lean: Unimplemented).
	LoadReports LoadReports
}

// Peer is what the transport knows of a stream's client.
type Peer struct {
	Addr net.Addr
	// TLS is the connection's state, nil on a plaintext connection. A
	// client certificate is verified only if VerifiedChains is non-empty.
	TLS *tls.ConnectionState
}

// peerOf is the Peer of a grpc-go stream or call.
func peerOf(ctx context.Context) Peer {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}
	}
	out := Peer{Addr: p.Addr}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		out.TLS = &info.State
	}
	return out
}

// SetAuthorize sets Options.Authorize on a server built elsewhere (MeshKit
// builds its own). It must be called before any stream is served.
func (s *Server) SetAuthorize(f func(node *corev3.Node, p Peer) (secrets bool, err error)) {
	s.auth = f
}

// authorize runs Options.Authorize.
func (s *Server) authorize(node *corev3.Node, p Peer) (secrets bool, err error) {
	if s.auth == nil {
		return true, nil
	}
	secrets, err = s.auth(node, p)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.PermissionDenied, err.Error())
		}
		s.log.Warn("xds stream refused", "node", node.GetId(), "peer", addrString(p.Addr), "error", err)
		return false, err
	}
	return secrets, nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Server serves a Cache over xDS. Register it on a grpc.Server.
type Server struct {
	cache  *Cache
	group  func(*corev3.Node) (string, error)
	auth   func(*corev3.Node, Peer) (bool, error)
	lrs    LoadReports
	cb     Callbacks
	log    *slog.Logger
	nextID atomic.Int64

	// The lean transport (Serve, Stop).
	lmu       sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*h2conn]struct{}
	stopped   bool
	lwg       sync.WaitGroup // connection readers and flushers
	frameBufs sync.Pool      // *[]byte of h2MaxReadFrame bytes: DATA payloads being read

	// Open streams by node id, for CloseNode; kept only with Authorize.
	nmu    sync.Mutex
	byNode map[string][]*nodeTrack
}

// New returns a server for o.Cache.
func New(o Options) *Server {
	s := &Server{cache: o.Cache, group: o.Group, auth: o.Authorize, lrs: o.LoadReports, cb: o.Callbacks, log: o.Log,
		listeners: make(map[net.Listener]struct{}), conns: make(map[*h2conn]struct{})}
	s.frameBufs.New = func() any { b := make([]byte, h2MaxReadFrame); return &b }
	if s.group == nil {
		s.group = func(n *corev3.Node) (string, error) { return n.GetId(), nil }
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Register adds ADS (SotW and delta) and the per-type CDS, LDS, RDS, EDS and
// SDS services to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, adsService{s: s})
	clusterservice.RegisterClusterDiscoveryServiceServer(g, cdsService{s: s})
	listenerservice.RegisterListenerDiscoveryServiceServer(g, ldsService{s: s})
	routeservice.RegisterRouteDiscoveryServiceServer(g, rdsService{s: s})
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, edsService{s: s})
	secretservice.RegisterSecretDiscoveryServiceServer(g, sdsService{s: s})
	if s.lrs != nil {
		lrsv3.RegisterLoadReportingServiceServer(g, lrsService{s: s})
	}
}

// ServerOptions returns gRPC server options for many long-lived, mostly idle
// xDS streams. Memory per connection dominates at 10,000 clients: gRPC's
// default 32 KiB read and write buffers per connection alone would exceed
// the 30 KB per client budget, so both are small and the write buffer is
// returned to a shared pool between flushes. A zero HPACK table size tells
// clients not to index their headers: each stream sends its headers once, so
// the ~1 KB dynamic table per connection would buy nothing. Flow-control
// windows stay at 1 MiB so that a large first snapshot is not throttled.
// Even so a grpc-go connection costs ~30 KB before any xDS state (its four
// goroutines and transport; docs/xds-scale.md): Serve, the lean transport,
// is the way to stay within the budget.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.HeaderTableSize(0),
		grpc.ReadBufferSize(4 << 10),
		grpc.WriteBufferSize(4 << 10),
		grpc.SharedWriteBuffer(true),
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(1 << 20),
		grpc.MaxConcurrentStreams(16),
		grpc.MaxRecvMsgSize(16 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}
}

// typeRank orders the types of one push: secrets and clusters before what
// refers to them (endpoints, listeners, routes), so that a proxy never sees a
// reference before its target.
func typeRank(t string) int {
	switch t {
	case resourcev3.SecretType:
		return 0
	case resourcev3.ClusterType:
		return 1
	case resourcev3.EndpointType:
		return 2
	case resourcev3.ListenerType:
		return 3
	case resourcev3.RouteType:
		return 4
	}
	return 5
}

// fullState reports whether the type is one whose SotW responses always
// carry every subscribed resource and where an empty first subscription
// means wildcard (LDS and CDS in the xDS protocol).
func fullState(typeURL string) bool {
	return typeURL == resourcev3.ListenerType || typeURL == resourcev3.ClusterType
}

// maxWatches caps the distinct type URLs one stream may subscribe to, so a
// client sending garbage type URLs cannot grow the server's memory.
const maxWatches = 32

// conn is what both stream kinds share: identity, group, the state it last
// pushed from, and the push machinery.
type conn struct {
	s     *Server
	id    int64
	node  *corev3.Node
	group string

	// mu serializes request handling and pushes, and with them Send (a gRPC
	// stream allows one sender at a time).
	mu       sync.Mutex
	gs       *groupState  // guarded by mu
	failed   error        // a push's Send error, returned by the handler; guarded by mu
	onChange func() error // the stream kind's pushAll, called with mu held
	lean     *h2stream    // the lean transport's stream, nil on grpc-go
	// noSecrets: Authorize withheld SDS secrets from this stream.
	noSecrets bool
	trk       *nodeTrack // the stream's entry for CloseNode; nil without Authorize

	pending atomic.Bool // a push goroutine is scheduled and has not yet read the state
	closed  atomic.Bool
	waiting atomic.Int32 // watches whose latest response is not yet answered
}

// open resolves the node's group. The node must be on the first request.
func (s *Server) open(node *corev3.Node, p Peer) (*conn, error) {
	if node == nil {
		return nil, status.Error(codes.InvalidArgument, "xds: first request carries no node")
	}
	c := &conn{s: s, node: identity(node)}
	s.track(c)
	secrets, err := s.authorize(node, p)
	if err != nil {
		s.untrack(c)
		return nil, err
	}
	group, err := s.group(node)
	if err != nil {
		s.untrack(c)
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("xds: node %q: %v", node.GetId(), err))
	}
	c.id, c.group, c.noSecrets = s.nextID.Add(1), group, !secrets
	if s.cb.OnStreamOpen != nil {
		s.cb.OnStreamOpen(c.id, node)
	}
	s.log.Debug("xds stream open", "stream", c.id, "node", node.GetId(), "group", group)
	return c, nil
}

// identity is the part of a node a stream keeps for its lifetime. A node as
// proxies send it is mostly capability data (metadata, extensions, client
// features): an OmniRelay node decodes to ~5.7 KB of heap, an Envoy node with
// its extension list to far more, which would be kept once per stream.
func identity(n *corev3.Node) *corev3.Node {
	return &corev3.Node{Id: n.GetId(), Cluster: n.GetCluster(), Locality: n.GetLocality(), UserAgentName: n.GetUserAgentName()}
}

// start subscribes the stream to its group; from here on notify may run.
func (c *conn) start(onChange func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = onChange
	c.gs = c.s.cache.subscribe(c.group, c)
}

// serve is the handler goroutine's loop: receive, handle under mu. It
// returns when the client ends the stream or a request or push fails.
func serve[T any](c *conn, recv func() (*T, error), first *T, handle func(*T) error) error {
	defer c.close()
	for req := first; ; {
		if err := c.step(func() error { return handle(req) }); err != nil {
			return err
		}
		var err error
		if req, err = recv(); err != nil {
			return streamEnd(err)
		}
	}
}

// step handles one request under mu; a failed push fails the stream too.
func (c *conn) step(handle func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		// CloseNode ended the stream while this request was on its way.
		return status.Error(codes.Unavailable, "xds: stream closed")
	}
	if err := handle(); err != nil {
		return err
	}
	return c.failed
}

// close runs when the handler returns. It must not take mu: a push may hold
// it while blocked in Send, and only the handler's return (which cancels the
// stream) unblocks that Send.
func (c *conn) close() {
	if c.closed.Swap(true) {
		return // the lean transport may end a stream from two sides
	}
	c.s.cache.unsubscribe(c.group, c)
	c.s.untrack(c)
	if c.s.cb.OnStreamClose != nil {
		c.s.cb.OnStreamClose(c.id, c.node)
	}
	c.s.log.Debug("xds stream close", "stream", c.id, "node", c.node.GetId())
}

// notify is called by Cache.Set, from one of the goroutines that notify a
// batch of streams in turn. A stream that has answered everything it was sent
// is pushed right there: its client reads, so Send will not block, and no
// goroutine is started. Any other stream (its client may have stopped
// reading, and Send could block until its connection dies) or one whose lock
// is busy gets a goroutine of its own, at most one at a time; a push already
// waiting reads the newest state anyway.
func (c *conn) notify() {
	if c.closed.Load() {
		return
	}
	if c.waiting.Load() == 0 && c.mu.TryLock() {
		c.pushLocked()
		c.mu.Unlock()
		return
	}
	if c.pending.Swap(true) {
		return
	}
	go c.push()
}

// sent and answered keep waiting: the count of watches whose latest
// response the client has not ACKed or NACKed. Called with mu held.
func (c *conn) sent(w *bool) {
	if !*w {
		*w = true
		c.waiting.Add(1)
	}
}

func (c *conn) answered(w *bool) {
	if *w {
		*w = false
		c.waiting.Add(-1)
	}
}

func (c *conn) push() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending.Store(false)
	c.pushLocked()
}

func (c *conn) pushLocked() {
	if c.closed.Load() || c.failed != nil {
		return
	}
	if c.lean != nil && c.lean.busy() {
		// The client has not taken the last response yet (no window): do not
		// queue another behind it. The transport notifies again once it has
		// drained, and that push reads the newest state, so a stalled client
		// holds one response, not one per update. (On grpc-go the push
		// goroutine blocks in Send instead, with the same effect.)
		return
	}
	c.gs = c.s.cache.current(c.group)
	if err := c.onChange(); err != nil {
		c.failed = err
		c.s.log.Debug("xds push failed", "stream", c.id, "node", c.node.GetId(), "error", err)
	}
}

func (c *conn) ack(typeURL, version string) {
	if c.s.cb.OnAck != nil {
		c.s.cb.OnAck(c.id, c.node, typeURL, version)
	}
}

func (c *conn) nack(typeURL, version, detail string) {
	c.s.log.Warn("xds nack", "stream", c.id, "node", c.node.GetId(), "type", typeURL, "version", version, "detail", detail)
	if c.s.cb.OnNack != nil {
		c.s.cb.OnNack(c.id, c.node, typeURL, version, detail)
	}
}

// streamEnd turns a receive error into the handler's return value: a client
// closing its side is a normal end.
func streamEnd(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// fetch answers the REST-style unary Fetch* calls from the current snapshot.
func (s *Server) fetch(typeURL string, req *discoveryv3.DiscoveryRequest, p Peer) (*discoveryv3.DiscoveryResponse, error) {
	if req.GetNode() == nil {
		return nil, status.Error(codes.InvalidArgument, "xds: fetch without node")
	}
	secrets, err := s.authorize(req.GetNode(), p)
	if err != nil {
		return nil, err
	}
	if typeURL == resourcev3.SecretType && !secrets {
		return nil, status.Errorf(codes.PermissionDenied, "xds: node %q: secrets are served only to clients with a verified certificate", req.GetNode().GetId())
	}
	group, err := s.group(req.GetNode())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("xds: node %q: %v", req.GetNode().GetId(), err))
	}
	gs := s.cache.current(group)
	if gs.snap == nil {
		return nil, status.Error(codes.Unavailable, "xds: no snapshot yet for this node")
	}
	ts := gs.types[typeURL]
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: versionOf(ts)}
	if ts != nil {
		if len(req.GetResourceNames()) == 0 {
			resp.Resources = ts.sotw
		} else {
			for _, n := range req.GetResourceNames() {
				if e := ts.byName[n]; e != nil {
					resp.Resources = append(resp.Resources, e.sotw)
				}
			}
		}
	}
	if req.GetVersionInfo() == resp.VersionInfo {
		return nil, status.Error(codes.Unavailable, "xds: version unchanged") // Envoy's REST convention: 304-like
	}
	return resp, nil
}

func versionOf(ts *typeState) string {
	if ts == nil {
		return "empty"
	}
	return ts.version
}

type (
	sotwStream  = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	deltaStream = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
)

type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (a adsService) StreamAggregatedResources(st sotwStream) error { return a.s.serveSotW(st, "") }
func (a adsService) DeltaAggregatedResources(st deltaStream) error { return a.s.serveDelta(st, "") }

type cdsService struct {
	clusterservice.UnimplementedClusterDiscoveryServiceServer
	s *Server
}

func (x cdsService) StreamClusters(st sotwStream) error {
	return x.s.serveSotW(st, resourcev3.ClusterType)
}
func (x cdsService) DeltaClusters(st deltaStream) error {
	return x.s.serveDelta(st, resourcev3.ClusterType)
}
func (x cdsService) FetchClusters(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return x.s.fetch(resourcev3.ClusterType, r, peerOf(ctx))
}

type ldsService struct {
	listenerservice.UnimplementedListenerDiscoveryServiceServer
	s *Server
}

func (x ldsService) StreamListeners(st sotwStream) error {
	return x.s.serveSotW(st, resourcev3.ListenerType)
}
func (x ldsService) DeltaListeners(st deltaStream) error {
	return x.s.serveDelta(st, resourcev3.ListenerType)
}
func (x ldsService) FetchListeners(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return x.s.fetch(resourcev3.ListenerType, r, peerOf(ctx))
}

type rdsService struct {
	routeservice.UnimplementedRouteDiscoveryServiceServer
	s *Server
}

func (x rdsService) StreamRoutes(st sotwStream) error { return x.s.serveSotW(st, resourcev3.RouteType) }
func (x rdsService) DeltaRoutes(st deltaStream) error {
	return x.s.serveDelta(st, resourcev3.RouteType)
}
func (x rdsService) FetchRoutes(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return x.s.fetch(resourcev3.RouteType, r, peerOf(ctx))
}

type edsService struct {
	endpointservice.UnimplementedEndpointDiscoveryServiceServer
	s *Server
}

func (x edsService) StreamEndpoints(st sotwStream) error {
	return x.s.serveSotW(st, resourcev3.EndpointType)
}
func (x edsService) DeltaEndpoints(st deltaStream) error {
	return x.s.serveDelta(st, resourcev3.EndpointType)
}
func (x edsService) FetchEndpoints(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return x.s.fetch(resourcev3.EndpointType, r, peerOf(ctx))
}

type sdsService struct {
	secretservice.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

func (x sdsService) StreamSecrets(st sotwStream) error {
	return x.s.serveSotW(st, resourcev3.SecretType)
}
func (x sdsService) DeltaSecrets(st deltaStream) error {
	return x.s.serveDelta(st, resourcev3.SecretType)
}
func (x sdsService) FetchSecrets(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return x.s.fetch(resourcev3.SecretType, r, peerOf(ctx))
}

// canonicalType and canonicalName return the server's own copy of a type URL
// or resource name, so that the watches of 10,000 streams share one string
// per name instead of each keeping the copy decoded from its own request.
func canonicalType(t string) string {
	for _, k := range [...]string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType,
		resourcev3.RouteType, resourcev3.SecretType} {
		if t == k {
			return k
		}
	}
	return t
}

func canonicalName(ts *typeState, n string) string {
	if ts != nil {
		if i, ok := slices.BinarySearch(ts.names, n); ok {
			return ts.names[i]
		}
	}
	return n
}

// secretsWithheld reports whether a request for typeURL is to be ignored
// because Authorize withheld secrets from this stream.
func (c *conn) secretsWithheld(typeURL string) bool {
	if !c.noSecrets || typeURL != resourcev3.SecretType {
		return false
	}
	c.s.log.Warn("xds: secrets withheld from a stream without a verified client certificate", "stream", c.id, "node", c.node.GetId())
	return true
}

// requestType is the type a request on this stream is about: a per-type
// service fixes it (fixed), ADS takes it from the request. A request for
// another type on a per-type stream, or none at all on ADS, is ignored:
// garbage from one client must not end its stream or disturb others.
func (c *conn) requestType(fixed, requested string) (string, bool) {
	switch {
	case fixed != "" && requested == "":
		return fixed, true
	case fixed != "" && requested != fixed:
		c.s.log.Debug("xds request for another type on a per-type stream ignored", "stream", c.id, "type", requested)
		return "", false
	case requested == "":
		c.s.log.Debug("xds request without type url ignored", "stream", c.id)
		return "", false
	}
	return requested, true
}
