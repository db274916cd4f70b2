package xdsserver

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// TestCacheGroupsShareIndex follows two groups through being set to the same
// snapshot, apart, and together again: while they share a snapshot its
// entries are built once, yet each group keeps typeState pointers of its own.
func TestCacheGroupsShareIndex(t *testing.T) {
	c := NewCache()
	s1, s2 := world(t, "1", 8000), world(t, "2", 8001) // s2: c1's endpoints moved
	entryOf := func(g, typeURL, name string) *entry {
		ts := c.current(g).types[typeURL]
		if ts == nil {
			t.Fatalf("group %s has no %s", g, typeURL)
		}
		return ts.byName[name]
	}
	unchanged := []string{resourcev3.ClusterType, resourcev3.ListenerType} // between s1 and s2
	steps := []struct {
		name    string
		group   string
		snap    *Snapshot // nil: Delete
		indexes int
		shared  bool     // g1 and g2 serve the same entries for every type
		carried []string // types that keep the group's own previous typeState
	}{
		{name: "first group builds", group: "g1", snap: s1, indexes: 1},
		{name: "second group shares", group: "g2", snap: s1, indexes: 1, shared: true},
		{name: "second group moves on", group: "g2", snap: s2, indexes: 2, carried: unchanged},
		{name: "first group follows", group: "g1", snap: s2, indexes: 1, shared: true, carried: unchanged},
		{name: "same snapshot again", group: "g1", snap: s2, indexes: 1, shared: true,
			carried: append(slices.Clone(unchanged), resourcev3.EndpointType)},
		{name: "delete one", group: "g1", indexes: 1},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := c.current(st.group)
			if st.snap == nil {
				c.Delete(st.group)
			} else {
				c.Set(st.group, st.snap)
			}
			if len(c.indexes) != st.indexes {
				t.Fatalf("%d indexes, want %d", len(c.indexes), st.indexes)
			}
			if st.shared {
				g1, g2 := c.current("g1"), c.current("g2")
				if g1.snap != g2.snap {
					t.Fatal("groups set to the same snapshot serve different ones")
				}
				for typeURL, ts := range g1.types {
					if ts == g2.types[typeURL] {
						t.Fatalf("%s: two groups share a typeState pointer", typeURL)
					}
					if n := ts.names[0]; entryOf("g1", typeURL, n) != entryOf("g2", typeURL, n) {
						t.Fatalf("%s: groups set to the same snapshot indexed it twice", typeURL)
					}
				}
			}
			// Whichever group built the index, a type whose version did not
			// change keeps the group's own pointer.
			now := c.current(st.group)
			for _, typeURL := range st.carried {
				if before.types[typeURL] != now.types[typeURL] {
					t.Fatalf("unchanged %s not carried over", typeURL)
				}
			}
		})
	}
	c.Delete("g2")
	if len(c.indexes) != 0 {
		t.Fatalf("%d indexes left after every group is deleted", len(c.indexes))
	}
}

// groupClients are one SotW and one delta ADS stream of a group, each
// subscribed to CDS (wildcard) and EDS for c1.
type groupClients struct {
	sotw  *sotwClient
	delta *deltaClient
	// What each stream was last sent, by type.
	sotwVersion  map[string]string
	deltaVersion map[string]string
}

func openGroup(t *testing.T, addr, group string) *groupClients {
	t.Helper()
	cc := dial(t, addr)
	g := &groupClients{sotw: newSotW(t, cc), delta: newDelta(t, cc),
		sotwVersion: map[string]string{}, deltaVersion: map[string]string{}}
	g.sotw.send(&discoveryv3.DiscoveryRequest{Node: node(group), TypeUrl: resourcev3.ClusterType})
	g.sotwRecv(t, resourcev3.ClusterType, []string{"c1", "c2"})
	g.sotw.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"c1"}})
	g.sotwRecv(t, resourcev3.EndpointType, []string{"c1"})
	g.delta.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(group), TypeUrl: resourcev3.ClusterType})
	g.deltaRecv(t, resourcev3.ClusterType, []string{"c1", "c2"})
	g.delta.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c1"}})
	g.deltaRecv(t, resourcev3.EndpointType, []string{"c1"})
	return g
}

// sotwRecv expects the SotW stream's next response to be typeURL with
// exactly names, ACKs it and returns its version.
func (g *groupClients) sotwRecv(t *testing.T, typeURL string, want []string) string {
	t.Helper()
	m := g.sotw.recv()
	if m.TypeUrl != typeURL || !slices.Equal(names(m.Resources), want) {
		t.Fatalf("sotw: got %s %v, want %s %v", m.TypeUrl, names(m.Resources), typeURL, want)
	}
	var ackNames []string
	if typeURL == resourcev3.EndpointType {
		ackNames = []string{"c1"}
	}
	g.sotw.ack(m, ackNames...)
	g.sotwVersion[typeURL] = m.VersionInfo
	return m.VersionInfo
}

// deltaRecv expects the delta stream's next response to be typeURL carrying
// exactly names, ACKs it and returns the versions it carried, by name.
func (g *groupClients) deltaRecv(t *testing.T, typeURL string, want []string) map[string]string {
	t.Helper()
	m := g.delta.recv()
	if m.TypeUrl != typeURL || !slices.Equal(deltaNames(m.Resources), want) || len(m.RemovedResources) != 0 {
		t.Fatalf("delta: got %s %v removed %v, want %s %v", m.TypeUrl, deltaNames(m.Resources), m.RemovedResources, typeURL, want)
	}
	g.delta.ack(m)
	g.deltaVersion[typeURL] = m.SystemVersionInfo
	vs := map[string]string{}
	for _, r := range m.Resources {
		vs[r.Name] = r.Version
	}
	return vs
}

// quiet proves that neither stream has anything queued.
func (g *groupClients) quiet(barrier string) {
	g.sotw.barrier(barrier)
	g.delta.barrier(barrier)
}

// TestGroupsSharingSnapshotServeEachItsOwn runs, over both transports, two
// groups set to one snapshot, then apart, then together again: each group's
// streams get exactly their group's changes, at the versions a group set on
// its own would get.
func TestGroupsSharingSnapshotServeEachItsOwn(t *testing.T) {
	srv := startServer(t, Options{})
	s1, s2 := world(t, "1", 8000), world(t, "2", 8001)
	srv.cache.Set("g1", s1)
	srv.cache.Set("g2", s1)
	g1, g2 := openGroup(t, srv.addr, "g1"), openGroup(t, srv.addr, "g2")
	for _, typeURL := range []string{resourcev3.ClusterType, resourcev3.EndpointType} {
		if g1.sotwVersion[typeURL] != g2.sotwVersion[typeURL] || g1.deltaVersion[typeURL] != g2.deltaVersion[typeURL] {
			t.Fatalf("%s: groups on one snapshot at different versions", typeURL)
		}
	}

	// Apart: only g2's streams hear of c1's new endpoints.
	srv.cache.Set("g2", s2)
	v2 := g2.sotwRecv(t, resourcev3.EndpointType, []string{"c1"})
	d2 := g2.deltaRecv(t, resourcev3.EndpointType, []string{"c1"})
	g1.quiet("b0")
	g2.quiet("b0")
	if v2 == g1.sotwVersion[resourcev3.EndpointType] {
		t.Fatal("changed EDS kept its version")
	}

	// Together again on s2, which g2 indexed: g1 gets the same change at
	// the same versions, and nothing else.
	srv.cache.Set("g1", s2)
	if v := g1.sotwRecv(t, resourcev3.EndpointType, []string{"c1"}); v != v2 {
		t.Fatalf("g1 sotw EDS version %s, g2 got %s", v, v2)
	}
	if d := g1.deltaRecv(t, resourcev3.EndpointType, []string{"c1"}); d["c1"] != d2["c1"] {
		t.Fatalf("g1 delta c1 version %s, g2 got %s", d["c1"], d2["c1"])
	}
	g1.quiet("b1")
	g2.quiet("b1")

	// Apart the other way: a cluster only g1 gets.
	s3 := world(t, "3", 8001)
	s3.Resources[resourcev3.ClusterType] = append(s3.Resources[resourcev3.ClusterType], cluster(t, "c3"))
	srv.cache.Set("g1", s3)
	g1.sotwRecv(t, resourcev3.ClusterType, []string{"c1", "c2", "c3"})
	g1.deltaRecv(t, resourcev3.ClusterType, []string{"c3"})
	g1.quiet("b2")
	g2.quiet("b2")
	if got := len(srv.cache.indexes); got != 2 {
		t.Fatalf("%d snapshot indexes, want 2", got)
	}
}

// TestSharedIndexDoesNotResendNack: a group whose client NACKed a wildcard
// type must not get it again when a rebuild with equal content is indexed
// by another group first (MeshKit sets groups in map order). Each group
// starts on a snapshot of its own (equal content, other pointers), so the
// groups' typeState pointers differ.
func TestSharedIndexDoesNotResendNack(t *testing.T) {
	var nacks atomic.Int32
	srv := startServer(t, Options{Callbacks: Callbacks{OnNack: func(int64, *corev3.Node, string, string, string) { nacks.Add(1) }}})
	srv.cache.Set("g1", world(t, "1", 8000))
	srv.cache.Set("g2", world(t, "1", 8000))
	c := newSotW(t, dial(t, srv.addr))
	c.send(&discoveryv3.DiscoveryRequest{Node: node("g1"), TypeUrl: resourcev3.ClusterType})
	m := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: m.TypeUrl, ResponseNonce: m.Nonce, ErrorDetail: &status.Status{Message: "bad"}})
	c.barrier("b0")
	for i := range 3 {
		rebuilt := world(t, "1", 8000)
		srv.cache.Set("g2", rebuilt)
		srv.cache.Set("g1", rebuilt)
		c.barrier(fmt.Sprintf("b%d", i+1))
	}
	if n := nacks.Load(); n != 1 {
		t.Fatalf("%d nacks, want 1", n)
	}
}
