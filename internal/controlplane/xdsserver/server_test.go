package xdsserver

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMain runs every test twice: on a grpc.Server (Register) and on the
// lean transport (Serve), which must behave the same to a grpc-go client.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		leanTransport = true
		code = m.Run()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// world is the test snapshot: clusters c1, c2; endpoints for both; and
// listeners b0..b9 that tests use as barriers.
func world(t testing.TB, version string, port uint32) *Snapshot {
	var ls []*Resource
	for i := range 10 {
		ls = append(ls, listener(t, fmt.Sprintf("b%d", i)))
	}
	return snapshot(version, map[string][]*Resource{
		resourcev3.ClusterType:  {cluster(t, "c1"), cluster(t, "c2")},
		resourcev3.EndpointType: {cla(t, "c1", port), cla(t, "c2", 9000)},
		resourcev3.ListenerType: ls,
	})
}

func TestSotWWildcardAndNamed(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newSotW(t, dial(t, srv.addr))

	tests := []struct {
		name  string
		req   *discoveryv3.DiscoveryRequest
		want  []string
		empty bool
	}{
		{name: "cds empty names is wildcard", req: &discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType}, want: []string{"c1", "c2"}},
		{name: "eds named", req: &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"c2", "missing"}}, want: []string{"c2"}},
		{name: "lds named", req: &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"b3"}}, want: []string{"b3"}},
		{name: "lds named now absent answers empty", req: &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"nope"}}, want: nil},
		{name: "lds star is wildcard", req: &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"*"}}, want: []string{"b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"}},
	}
	var lastLDS *discoveryv3.DiscoveryResponse
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.TypeUrl == resourcev3.ListenerType && lastLDS != nil {
				tc.req.ResponseNonce, tc.req.VersionInfo = lastLDS.Nonce, lastLDS.VersionInfo
			}
			c.send(tc.req)
			m := c.recv()
			if m.TypeUrl != tc.req.TypeUrl {
				t.Fatalf("type %s, want %s", m.TypeUrl, tc.req.TypeUrl)
			}
			if got := names(m.Resources); !slices.Equal(got, tc.want) {
				t.Fatalf("resources %v, want %v", got, tc.want)
			}
			if m.Nonce == "" || m.VersionInfo == "" {
				t.Fatalf("missing nonce or version: %v", m)
			}
			if m.TypeUrl == resourcev3.ListenerType {
				lastLDS = m
			}
		})
	}
}

func TestSotWUpdateReachesOnlyAffectedTypes(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newSotW(t, dial(t, srv.addr))
	c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	cds := c.recv()
	c.ack(cds)
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"c1"}})
	eds := c.recv()
	c.ack(eds, "c1")

	// Only c1's endpoints change: CDS is unchanged and must not be re-sent.
	srv.cache.Set("n1", world(t, "2", 8001))
	m := c.recv()
	if m.TypeUrl != resourcev3.EndpointType || m.VersionInfo == eds.VersionInfo {
		t.Fatalf("got %s version %s, want a new EDS version", m.TypeUrl, m.VersionInfo)
	}
	c.ack(m, "c1")
	// c2's endpoints change, which this client does not watch: nothing is sent.
	s3 := world(t, "3", 8001)
	s3.Resources[resourcev3.EndpointType][1] = cla(t, "c2", 9999)
	srv.cache.Set("n1", s3)
	c.barrier("b1")
}

func TestSotWNackIsNotResent(t *testing.T) {
	var mu sync.Mutex
	var nacks []string
	srv := startServer(t, Options{Callbacks: Callbacks{OnNack: func(_ int64, _ *corev3.Node, typeURL, version, detail string) {
		mu.Lock()
		defer mu.Unlock()
		nacks = append(nacks, typeURL+"@"+version+":"+detail)
	}}})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newSotW(t, dial(t, srv.addr))
	c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})

	// A client that rejects everything: each change yields exactly one response.
	s := world(t, "1", 8000)
	for i := range 3 {
		m := c.recv()
		if m.TypeUrl != resourcev3.ClusterType {
			t.Fatalf("round %d: got %s", i, m.TypeUrl)
		}
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce, ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad"}})
		c.barrier(fmt.Sprintf("b%d", i))
		// An unrelated change (endpoints) must not re-send the NACKed clusters either.
		s = snapshot("e", maps.Clone(s.Resources))
		s.Resources[resourcev3.EndpointType] = []*Resource{cla(t, "c1", uint32(7000+i))}
		srv.cache.Set("n1", s)
		c.barrier(fmt.Sprintf("b%d", i+5))
		s = snapshot("x", maps.Clone(s.Resources))
		s.Resources[resourcev3.ClusterType] = append(slices.Clone(s.Resources[resourcev3.ClusterType]), cluster(t, fmt.Sprintf("extra%d", i)))
		srv.cache.Set("n1", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(nacks) != 3 {
		t.Fatalf("nacks %v, want 3", nacks)
	}
}

func TestSotWStaleNonceIgnored(t *testing.T) {
	var mu sync.Mutex
	acks := 0
	srv := startServer(t, Options{Callbacks: Callbacks{OnAck: func(int64, *corev3.Node, string, string) {
		mu.Lock()
		acks++
		mu.Unlock()
	}}})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newSotW(t, dial(t, srv.addr))
	c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"c1"}})
	first := c.recv()
	srv.cache.Set("n1", world(t, "2", 8001))
	second := c.recv()
	// The client answers the first response late, asking for c2: stale, so
	// neither an ACK nor a subscription change.
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: first.Nonce, VersionInfo: first.VersionInfo, ResourceNames: []string{"c2"}})
	c.barrier("b0")
	mu.Lock()
	if acks != 0 {
		t.Fatalf("stale request counted as %d acks", acks)
	}
	mu.Unlock()
	c.ack(second, "c2")
	m := c.recv()
	if got := names(m.Resources); !slices.Equal(got, []string{"c2"}) {
		t.Fatalf("after ack with new names: %v", got)
	}
}

func TestSotWSignedResourcesAreWrapped(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", snapshot("1", map[string][]*Resource{resourcev3.ClusterType: {signedCluster(t, "s1"), cluster(t, "p1")}}))
	c := newSotW(t, dial(t, srv.addr))
	c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	m := c.recv()
	if got := names(m.Resources); !slices.Equal(got, []string{"p1", "wrapped:s1"}) {
		t.Fatalf("resources %v", got)
	}
	if m.Resources[1].TypeUrl != ResourceWrapperTypeURL {
		t.Fatalf("wrapper type %s", m.Resources[1].TypeUrl)
	}
	var w discoveryv3.Resource
	if err := m.Resources[1].UnmarshalTo(&w); err != nil {
		t.Fatal(err)
	}
	if w.Version == "" || w.Metadata.GetFilterMetadata()["omnirelay.dsse"] == nil || w.Resource.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("wrapper %v", &w)
	}
}

func TestGroupsIsolatedAndUnknownGroupWaits(t *testing.T) {
	srv := startServer(t, Options{})
	cc := dial(t, srv.addr)
	a := newSotW(t, cc)
	b := newSotW(t, cc)
	srv.cache.Set("a", world(t, "1", 8000))
	a.send(&discoveryv3.DiscoveryRequest{Node: node("a"), TypeUrl: resourcev3.ClusterType})
	a.ack(a.recv())
	// b's group does not exist yet: it waits, and gets its snapshot on Set.
	b.send(&discoveryv3.DiscoveryRequest{Node: node("b"), TypeUrl: resourcev3.ClusterType})
	sb := snapshot("1", map[string][]*Resource{resourcev3.ClusterType: {cluster(t, "only-b")}})
	srv.cache.Set("b", sb)
	if got := names(b.recv().Resources); !slices.Equal(got, []string{"only-b"}) {
		t.Fatalf("b got %v", got)
	}
	a.barrier("b0")
	if srv.cache.Get("b") != sb {
		t.Fatal("Get returns another snapshot")
	}
}

func TestGarbageDoesNotDisturbOthers(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	good := newSotW(t, cc)
	good.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	good.ack(good.recv())

	bad := newSotW(t, cc)
	bad.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: "type.googleapis.com/no.such.Type"})
	bad.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "garbage"})
	bad.send(&discoveryv3.DiscoveryRequest{TypeUrl: ""})
	bad.barrier("b2") // the bad stream itself is still served

	noNode := newSotW(t, cc)
	noNode.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	if _, ok := <-noNode.msgs; ok {
		t.Fatal("a stream without node got a response")
	}
	if grpcstatus.Code(noNode.err) != codes.InvalidArgument {
		t.Fatalf("no-node stream ended with %v, want InvalidArgument", noNode.err)
	}

	srv.cache.Set("n1", world(t, "2", 8001))
	good.barrier("b3")
}

func TestCallbacks(t *testing.T) {
	var mu sync.Mutex
	var events []string
	rec := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	closed := make(chan struct{})
	srv := startServer(t, Options{Callbacks: Callbacks{
		OnStreamOpen:  func(_ int64, n *corev3.Node) { rec(fmt.Sprintf("open %s metadata %t", n.Id, n.Metadata != nil)) },
		OnStreamClose: func(_ int64, n *corev3.Node) { rec("close " + n.Id); close(closed) },
		OnAck: func(_ int64, n *corev3.Node, typeURL, _ string) {
			rec(fmt.Sprintf("ack %s %s/%s metadata %t", typeURL, n.Id, n.UserAgentName, n.Metadata != nil))
		},
		OnNack: func(_ int64, _ *corev3.Node, typeURL, _, detail string) { rec("nack " + typeURL + " " + detail) },
	}})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	c := newSotW(t, cc)
	full := node("n1")
	full.UserAgentName = "omnirelay"
	full.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{"caps": structpb.NewStringValue("many")}}
	c.send(&discoveryv3.DiscoveryRequest{Node: full, TypeUrl: resourcev3.ClusterType})
	c.ack(c.recv())
	c.barrier("b0") // the ACK is handled before the next Set
	srv.cache.Set("n1", snapshot("2", map[string][]*Resource{resourcev3.ClusterType: {cluster(t, "c9")}, resourcev3.ListenerType: {listener(t, "b0")}}))
	m := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce, ErrorDetail: &status.Status{Message: "no"}})
	c.barrier("b0")
	c.close()
	<-closed
	// Only OnStreamOpen sees the node's capability data; later callbacks get
	// its identity.
	want := []string{"open n1 metadata true", "ack " + resourcev3.ClusterType + " n1/omnirelay metadata false",
		"nack " + resourcev3.ClusterType + " no", "close n1"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
}

// TestStalledClientDoesNotDelayOthers: a client that never reads its stream
// ends up with a push blocked in Send; the other streams of its group must
// still get every update.
func TestStalledClientDoesNotDelayOthers(t *testing.T) {
	srv := startServer(t, Options{Group: func(*corev3.Node) (string, error) { return "all", nil }})
	big := func(v int) *Snapshot {
		s := world(t, fmt.Sprint(v), uint32(8000+v))
		// ~1 MB of endpoints, well past the stalled client's flow-control window.
		var rs []*Resource
		for i := range 4 {
			r := cla(t, fmt.Sprintf("big%d", i), uint32(v))
			r.Body.Value = append(r.Body.Value, make([]byte, 256<<10)...) // unknown-field padding keeps it valid
			rs = append(rs, r)
		}
		s.Resources[resourcev3.EndpointType] = append(s.Resources[resourcev3.EndpointType], rs...)
		return s
	}
	srv.cache.Set("all", big(0))
	cc := dial(t, srv.addr)

	stalled, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("stalled"), TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{"big0", "big1", "big2", "big3"}}); err != nil {
		t.Fatal(err)
	}

	c := newDelta(t, dial(t, srv.addr))
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("live"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c1"}})
	c.ack(c.recv())
	for v := 1; v <= 8; v++ {
		srv.cache.Set("all", big(v))
		m := c.recv()
		if got := deltaNames(m.Resources); !slices.Equal(got, []string{"c1"}) {
			t.Fatalf("update %d: %v", v, got)
		}
		c.ack(m)
	}
	// The scenario must have happened: a push to the stalled client waits for
	// flow-control quota (grpc-go), or its responses wait for window (lean).
	if leanTransport {
		// One ~1 MB response waits for window; the seven updates after it
		// must not have queued seven more behind it.
		if n := srv.server.pendingBytes(); n == 0 || n > 2<<20 {
			t.Fatalf("%d bytes wait for the stalled client's window, want one response's worth", n)
		}
		return
	}
	deadline := time.Now().Add(testTimeout)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if strings.Contains(stacks, "(*writeQuota).get") && strings.Contains(stacks, "xdsserver.(*conn).push") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no push is blocked on the stalled client")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline: nothing signals a blocked Send
	}
}
