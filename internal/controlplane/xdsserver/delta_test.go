package xdsserver

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

func TestDeltaSubscriptions(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newDelta(t, dial(t, srv.addr))

	// Wildcard CDS; the client already holds c1 at the current version.
	v1 := srv.cache.current("n1").types[resourcev3.ClusterType].byName["c1"].version
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType,
		InitialResourceVersions: map[string]string{"c1": v1, "gone": "old"}})
	m := c.recv()
	if got := deltaNames(m.Resources); !slices.Equal(got, []string{"c2"}) {
		t.Fatalf("initial CDS %v, want only c2", got)
	}
	if !slices.Equal(m.RemovedResources, []string{"gone"}) {
		t.Fatalf("removed %v, want [gone]", m.RemovedResources)
	}
	c.ack(m)

	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c1"}})
	m = c.recv()
	if got := deltaNames(m.Resources); !slices.Equal(got, []string{"c1"}) || m.Resources[0].Version == "" {
		t.Fatalf("EDS %v", m.Resources)
	}
	c.ack(m)

	tests := []struct {
		name        string
		change      func(s *Snapshot)
		wantType    string
		wantNames   []string
		wantRemoved []string
	}{
		{name: "endpoint change sends only that resource", change: func(s *Snapshot) {
			s.Resources[resourcev3.EndpointType] = []*Resource{cla(t, "c1", 8001), cla(t, "c2", 9000)}
		}, wantType: resourcev3.EndpointType, wantNames: []string{"c1"}},
		{name: "cluster added", change: func(s *Snapshot) {
			s.Resources[resourcev3.EndpointType] = []*Resource{cla(t, "c1", 8001), cla(t, "c2", 9000)}
			s.Resources[resourcev3.ClusterType] = append(s.Resources[resourcev3.ClusterType], cluster(t, "c3"))
		}, wantType: resourcev3.ClusterType, wantNames: []string{"c3"}},
		{name: "cluster and endpoints removed", change: func(s *Snapshot) {
			s.Resources[resourcev3.EndpointType] = []*Resource{cla(t, "c2", 9000)}
			s.Resources[resourcev3.ClusterType] = []*Resource{cluster(t, "c2")}
		}, wantType: resourcev3.ClusterType, wantRemoved: []string{"c1", "c3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := world(t, tc.name, 8000)
			tc.change(s)
			srv.cache.Set("n1", s)
			m := c.recv()
			if m.TypeUrl != tc.wantType || !slices.Equal(deltaNames(m.Resources), tc.wantNames) || !slices.Equal(m.RemovedResources, tc.wantRemoved) {
				t.Fatalf("got %s %v removed %v, want %s %v removed %v", m.TypeUrl, deltaNames(m.Resources), m.RemovedResources, tc.wantType, tc.wantNames, tc.wantRemoved)
			}
			c.ack(m)
		})
	}
	// The last change also removed c1's endpoints, which the client watches.
	m = c.recv()
	if m.TypeUrl != resourcev3.EndpointType || !slices.Equal(m.RemovedResources, []string{"c1"}) {
		t.Fatalf("got %s removed %v, want EDS removal of c1", m.TypeUrl, m.RemovedResources)
	}
	c.ack(m)

	// Unsubscribe, then subscribe again: the resource is sent again.
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c2"}})
	if got := deltaNames(c.recv().Resources); !slices.Equal(got, []string{"c2"}) {
		t.Fatalf("subscribe c2: %v", got)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{"c2"}})
	c.barrier("b0")
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c2"}})
	if got := deltaNames(c.recv().Resources); !slices.Equal(got, []string{"c2"}) {
		t.Fatalf("re-subscribe c2: %v", got)
	}
}

func TestDeltaNackIsNotResent(t *testing.T) {
	var nacks atomic.Int32
	srv := startServer(t, Options{Callbacks: Callbacks{OnNack: func(int64, *corev3.Node, string, string, string) { nacks.Add(1) }}})
	srv.cache.Set("n1", world(t, "1", 8000))
	c := newDelta(t, dial(t, srv.addr))
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c1"}})
	port := uint32(8000)
	for i := range 3 {
		m := c.recv()
		if m.TypeUrl != resourcev3.EndpointType || len(m.Resources) != 1 {
			t.Fatalf("round %d: %s %v", i, m.TypeUrl, deltaNames(m.Resources))
		}
		c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce, ErrorDetail: &status.Status{Message: "bad"}})
		c.barrier(fmt.Sprintf("b%d", 2*i)) // delta barriers need a name not yet held
		s := world(t, "x", port)
		s.Resources[resourcev3.EndpointType][1] = cla(t, "c2", 100+uint32(i)) // unwatched: no response
		srv.cache.Set("n1", s)
		c.barrier(fmt.Sprintf("b%d", 2*i+1))
		port = 9000 + uint32(i)
		srv.cache.Set("n1", world(t, "y", port))
	}
	if n := nacks.Load(); n != 3 {
		t.Fatalf("%d nacks, want 3", n)
	}
}

func TestDeltaWildcardEmptyTypeIsAnswered(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", snapshot("1", map[string][]*Resource{resourcev3.ListenerType: {listener(t, "b0")}}))
	c := newDelta(t, dial(t, srv.addr))
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	if m := c.recv(); m.TypeUrl != resourcev3.ClusterType || len(m.Resources) != 0 {
		t.Fatalf("got %s with %d resources", m.TypeUrl, len(m.Resources))
	}
}

func TestPerTypeCDS(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	cds := clusterservice.NewClusterDiscoveryServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	st, err := cds.StreamClusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The type URL may be left out on a per-type stream.
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node("n1")}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.TypeUrl != resourcev3.ClusterType || !slices.Equal(names(m.Resources), []string{"c1", "c2"}) {
		t.Fatalf("got %s %v", m.TypeUrl, names(m.Resources))
	}
	f, err := cds.FetchClusters(ctx, &discoveryv3.DiscoveryRequest{Node: node("n1"), ResourceNames: []string{"c2"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(f.Resources), []string{"c2"}) {
		t.Fatalf("fetch %v", names(f.Resources))
	}
	ds, err := cds.DeltaClusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1")}); err != nil {
		t.Fatal(err)
	}
	dm, err := ds.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deltaNames(dm.Resources), []string{"c1", "c2"}) {
		t.Fatalf("delta %v", deltaNames(dm.Resources))
	}
}

// TestStreamGoroutinesStop closes streams on a live connection and checks
// that no goroutine of theirs (handler or push) is left.
func TestStreamGoroutinesStop(t *testing.T) {
	var closed atomic.Int32
	srv := startServer(t, Options{Callbacks: Callbacks{OnStreamClose: func(int64, *corev3.Node) { closed.Add(1) }}})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	const n = 20
	for i := range n {
		if i%2 == 0 {
			c := newSotW(t, cc)
			c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
			c.recv()
			c.close()
		} else {
			c := newDelta(t, cc)
			c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
			c.recv()
			c.close()
		}
	}
	deadline := time.Now().Add(testTimeout)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		left := strings.Count(stacks, "xdsserver.(*conn).push") + strings.Count(stacks, "xdsserver.(*Server).serve")
		if left == 0 && closed.Load() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d stream goroutines left, %d of %d closes", left, closed.Load(), n)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline: nothing signals a goroutine's exit
	}
}
