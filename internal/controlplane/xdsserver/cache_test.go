package xdsserver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func TestCacheCarriesUnchangedTypesOver(t *testing.T) {
	c := NewCache()
	c.Set("g", world(t, "1", 8000))
	before := c.current("g")
	c.Set("g", world(t, "2", 8001))
	after := c.current("g")
	if before.types[resourcev3.ClusterType] != after.types[resourcev3.ClusterType] {
		t.Fatal("unchanged CDS not carried over")
	}
	if before.types[resourcev3.EndpointType] == after.types[resourcev3.EndpointType] {
		t.Fatal("changed EDS carried over")
	}
	if before.types[resourcev3.EndpointType].byName["c2"].version != after.types[resourcev3.EndpointType].byName["c2"].version {
		t.Fatal("content-derived version of an unchanged resource moved")
	}
}

func TestSnapshotCheck(t *testing.T) {
	tests := []struct {
		name string
		rs   []*Resource
		want string
	}{
		{name: "ok", rs: []*Resource{cluster(t, "a"), cluster(t, "b")}},
		{name: "nil body", rs: []*Resource{{Name: "a"}}, want: "no body"},
		{name: "empty name", rs: []*Resource{{Body: cluster(t, "x").Body}}, want: "empty name"},
		{name: "duplicate", rs: []*Resource{cluster(t, "a"), cluster(t, "a")}, want: `"a": duplicate`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot("1", map[string][]*Resource{resourcev3.ClusterType: tc.rs})
			err := s.Check()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// Set never fails: it serves what it can.
			c := NewCache()
			c.Set("g", s)
			if n := len(c.current("g").types[resourcev3.ClusterType].names); tc.want == "" && n != len(tc.rs) {
				t.Fatalf("%d names served", n)
			}
		})
	}
}

func TestSetNames(t *testing.T) {
	tests := []struct {
		name     string
		typeURL  string
		names    []string
		wildcard bool
		named    int
	}{
		{name: "cds empty", typeURL: resourcev3.ClusterType, wildcard: true},
		{name: "lds empty", typeURL: resourcev3.ListenerType, wildcard: true},
		{name: "eds empty", typeURL: resourcev3.EndpointType},
		{name: "eds star", typeURL: resourcev3.EndpointType, names: []string{"*"}, wildcard: true},
		{name: "lds named", typeURL: resourcev3.ListenerType, names: []string{"a", "b"}, named: 2},
		{name: "cds star and named", typeURL: resourcev3.ClusterType, names: []string{"*", "a"}, wildcard: true, named: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := sotwWatch{typeURL: tc.typeURL}
			w.setNames(tc.names)
			if w.wildcard != tc.wildcard || len(w.names) != tc.named {
				t.Fatalf("wildcard %v names %v", w.wildcard, w.names)
			}
		})
	}
}

// BenchmarkSet measures publishing a 1,000-cluster snapshot in which one
// endpoint assignment changes: the cost MeshKit pays per update, before any
// stream is woken.
func BenchmarkSet(b *testing.B) {
	const n = 1000
	var cs, es []*Resource
	for i := range n {
		cs = append(cs, cluster(b, fmt.Sprintf("c%d", i)))
		es = append(es, cla(b, fmt.Sprintf("c%d", i), 8000))
	}
	c := NewCache()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		es := append([]*Resource(nil), es...)
		es[0] = cla(b, "c0", uint32(i%60000))
		c.Set("g", snapshot("v", map[string][]*Resource{resourcev3.ClusterType: cs, resourcev3.EndpointType: es}))
	}
}

type countNotifier struct{ n chan struct{} }

func (c countNotifier) notify() { c.n <- struct{}{} }

func TestCacheGroupLifecycle(t *testing.T) {
	c := NewCache()
	n := countNotifier{n: make(chan struct{}, 4)}
	if st := c.subscribe("unknown", n); st.snap != nil {
		t.Fatal("unknown group has a snapshot")
	}
	c.unsubscribe("unknown", n)
	if len(c.groups) != 0 {
		t.Fatal("a group never set outlives its last stream")
	}

	c.subscribe("g", n)
	s := world(t, "1", 8000)
	c.Set("g", s)
	select {
	case <-n.n:
	case <-time.After(testTimeout):
		t.Fatal("subscriber not notified")
	}
	if c.Get("g") != s {
		t.Fatal("Get does not return the snapshot set")
	}
	c.Delete("g")
	if c.Get("g") != nil {
		t.Fatal("deleted group still has a snapshot")
	}
	c.unsubscribe("g", n)
	if len(c.groups) != 0 {
		t.Fatal("deleted group with no stream left is kept")
	}
}
