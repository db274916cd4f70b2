package meshkit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/capfilter"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// memLeaseStore is the part of an etcd store the directory uses (List and
// Leaser), in memory, counting writes. Real etcd is in the e2e test
// (internal/e2e TestProxyDirectoryAcrossReplicas); this one lets a test
// drive 10,000 streams in a second. A nil kv map discards what is written
// (the memory benchmark measures the publishing replica only).
type memLeaseStore struct {
	store.Store // the directory calls nothing else; a call panics

	mu     sync.Mutex
	kv     map[string]store.KV
	owner  map[string]*memLease
	leases []*memLease // granted, oldest first
	rev    int64
	writes int // Lease.Write calls
	keys   int // keys put or deleted by them
}

func newMemLeaseStore(keep bool) *memLeaseStore {
	s := &memLeaseStore{owner: map[string]*memLease{}}
	if keep {
		s.kv = map[string]store.KV{}
	}
	return s
}

func (s *memLeaseStore) List(_ context.Context, prefix string) ([]store.KV, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.KV
	for k, kv := range s.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, kv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, s.rev, nil
}

func (s *memLeaseStore) Grant(context.Context, time.Duration) (store.Lease, error) {
	l := &memLease{s: s, lost: make(chan struct{})}
	s.mu.Lock()
	s.leases = append(s.leases, l)
	s.mu.Unlock()
	return l, nil
}

// expireLatest ends the newest lease as etcd does when its holder stops
// renewing it: its keys go, its holder sees Lost.
func (s *memLeaseStore) expireLatest() {
	s.mu.Lock()
	l := s.leases[len(s.leases)-1]
	s.mu.Unlock()
	_ = l.Revoke(context.Background())
}

func (s *memLeaseStore) granted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.leases)
}

func (s *memLeaseStore) counts() (writes, keys int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes, s.keys
}

type memLease struct {
	s    *memLeaseStore
	lost chan struct{}
	once sync.Once
}

func (l *memLease) Write(_ context.Context, puts []store.KV, deletes []string) (int64, error) {
	if n := len(puts) + len(deletes); n > store.MaxWriteOps {
		return 0, fmt.Errorf("write of %d keys", n)
	}
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-l.lost:
		return 0, store.ErrLeaseLost
	default:
	}
	s.rev++
	s.writes++
	s.keys += len(puts) + len(deletes)
	if s.kv == nil {
		return s.rev, nil
	}
	for _, kv := range puts {
		s.kv[kv.Key] = store.KV{Key: kv.Key, Value: kv.Value, Revision: s.rev}
		s.owner[kv.Key] = l
	}
	for _, k := range deletes {
		delete(s.kv, k)
		delete(s.owner, k)
	}
	return s.rev, nil
}

func (l *memLease) Lost() <-chan struct{} { return l.lost }

// Revoke deletes the lease's keys, as etcd does.
func (l *memLease) Revoke(context.Context) error {
	s := l.s
	s.mu.Lock()
	for k, o := range s.owner {
		if o == l {
			delete(s.kv, k)
			delete(s.owner, k)
		}
	}
	s.mu.Unlock()
	l.once.Do(func() { close(l.lost) })
	return nil
}

// sharedDirectory starts a directory publishing to st as replica.
func sharedDirectory(t testing.TB, st store.Store, replica string) *proxyDirectory {
	t.Helper()
	d := newProxyDirectory()
	d.enableShare(st, DirectoryOptions{ReplicaID: replica, Flush: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

var ackTypes = []string{
	"type.googleapis.com/envoy.config.cluster.v3.Cluster",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	"type.googleapis.com/envoy.config.listener.v3.Listener",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
}

// storedStreams decodes the stream entries under replica.
func storedStreams(t testing.TB, st *memLeaseStore, replica string) map[string]storedStream {
	t.Helper()
	kvs, _, err := st.List(context.Background(), DirectoryPrefix+replica+"/s/")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]storedStream, len(kvs))
	for _, kv := range kvs {
		var s storedStream
		if err := json.Unmarshal(kv.Value, &s); err != nil {
			t.Fatalf("%s: %v", kv.Key, err)
		}
		out[s.Node] = s
	}
	return out
}

// TestDirectoryShareBurst: 10,000 proxies connect and ACK four types at
// once; the replica writes them in batches (at most store.MaxWriteOps keys
// each), not one write per key or per event.
func TestDirectoryShareBurst(t *testing.T) {
	const n, workers = 10000, 8
	st := newMemLeaseStore(true)
	d := newProxyDirectory()
	// The default gathering time: what a replica does in production.
	d.enableShare(st, DirectoryOptions{ReplicaID: "a"}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.run(ctx) }()
	defer func() { cancel(); <-done }()

	cb := d.callbacks()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				node := omniNode(fmt.Sprintf("node-%05d", i))
				cb.OnStreamOpen(int64(i+1), node)
				for _, typ := range ackTypes {
					cb.OnAck(int64(i+1), node, typ, "v1")
				}
			}
		}()
	}
	wg.Wait()
	burst := time.Since(start)
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, "every stream stored with its ACKs", func() (bool, string) {
		got := storedStreams(t, st, "a")
		acked := 0
		for _, s := range got {
			if len(s.Acked) == len(ackTypes) {
				acked++
			}
		}
		return acked == n, fmt.Sprintf("%d stored, %d with every ACK", len(got), acked)
	})
	writes, keys := st.counts()
	t.Logf("%d streams, %d events in %v: %d writes of %d keys in all (%.0f keys per write)",
		n, n*(1+len(ackTypes)), burst.Round(time.Millisecond), writes, keys, float64(keys)/float64(writes))
	// Unbatched, that would be 10,000 writes at least (50,000 one per event).
	if limit := 3 * n / store.MaxWriteOps; writes > limit {
		t.Fatalf("%d writes for %d streams, want at most %d", writes, n, limit)
	}

	// Half disconnect: their keys go, in batches too.
	for i := 0; i < n; i += 2 {
		cb.OnStreamClose(int64(i+1), nil)
	}
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, "closed streams deleted", func() (bool, string) {
		got := len(storedStreams(t, st, "a"))
		return got == n/2, fmt.Sprintf("%d stored", got)
	})
	if w2, _ := st.counts(); w2-writes > 2*(n/2)/store.MaxWriteOps {
		t.Fatalf("%d writes for %d disconnects", w2-writes, n/2)
	}
	cb.OnNack(2, omniNode("node-00001"), ackTypes[2], "v2", "unknown filter x")
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "the NACK stored", func() (bool, string) {
		s := storedStreams(t, st, "a")["node-00001"]
		return s.Nack != nil && s.Nack.Detail == "unknown filter x", fmt.Sprintf("%+v", s.Nack)
	})
}

// TestDirectoryMerge: two replicas on one store list each other's proxies,
// each with its replica and its group's withheld resources; a proxy that
// moved is listed once, on the replica it moved to, even while the one it
// left still has its entry; a replica whose lease ends is no longer listed.
func TestDirectoryMerge(t *testing.T) {
	st := newMemLeaseStore(true)
	a := sharedDirectory(t, st, "a")
	bctx, stopB := context.WithCancel(context.Background())
	b := newProxyDirectory()
	b.enableShare(st, DirectoryOptions{ReplicaID: "b", Flush: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	bDone := make(chan struct{})
	go func() { defer close(bDone); b.run(bctx) }()
	defer func() { stopB(); <-bDone }()

	ca, cb := a.callbacks(), b.callbacks()
	ca.OnStreamOpen(1, omniNode("p-a"))
	ca.OnStreamOpen(2, omniNode("mover"))
	cb.OnStreamOpen(1, omniNode("p-b"))
	g := groupOf(omniNode("p-b")).name()
	b.setWithheld(g, []capfilter.Withheld{{TypeURL: ackTypes[2], Name: "web", Reason: "needs wasm"}})
	cb.OnAck(1, omniNode("p-b"), ackTypes[0], "v7")

	list := func(d *proxyDirectory) string {
		rows, err := d.all(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, r := range rows {
			s = append(s, r.NodeID+"@"+r.Replica)
		}
		return strings.Join(s, " ")
	}
	for _, d := range []*proxyDirectory{a, b} {
		testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "replica "+d.replica()+" lists both replicas", func() (bool, string) {
			got := list(d)
			return got == "mover@a p-a@a p-b@b", got
		})
	}
	rows, _ := a.all(context.Background())
	if pb := rows[2]; pb.Acked[ackTypes[0]] != "v7" || len(pb.Withheld) != 1 || pb.Withheld[0].Name != "web" ||
		pb.Caps.Kind != capability.KindOmniRelay || pb.Caps.Build != "test" || len(pb.Caps.Filters) != 4 {
		t.Fatalf("p-b as listed by a: acked %v, withheld %v, caps %+v", pb.Acked, pb.Withheld, pb.Caps)
	}

	// mover reconnects to b before a notices its stream is gone: b lists it
	// at once (its stream is newer than anything stored), a once b's entry
	// is written.
	cb.OnStreamOpen(2, omniNode("mover"))
	if got := list(b); got != "mover@b p-a@a p-b@b" {
		t.Fatalf("replica b lists %q right after the move", got)
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "b's entry for mover written", func() (bool, string) {
		got := list(a)
		return got == "mover@b p-a@a p-b@b", got
	})
	ca.OnStreamClose(2, nil)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "a's entry for mover deleted", func() (bool, string) {
		_, ok := storedStreams(t, st, "a")["mover"]
		return !ok, "still stored"
	})
	if got := list(a); got != "mover@b p-a@a p-b@b" {
		t.Fatalf("after the move a lists %q", got)
	}

	// b goes: its lease is revoked, its entries with it.
	stopB()
	<-bDone
	if got := list(a); got != "p-a@a" {
		t.Fatalf("after b's lease ended a lists %q", got)
	}
}

// TestDirectoryBolt: on a store without leases (bbolt, one replica) the
// listing is the in-memory one, with the replica named, and nothing is
// written to the store.
func TestDirectoryBolt(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), Directory: DirectoryOptions{ReplicaID: "solo"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	cb := m.proxies.callbacks()
	cb.OnStreamOpen(1, omniNode("p2"))
	cb.OnStreamOpen(2, omniNode("p1"))
	cb.OnAck(2, omniNode("p1"), ackTypes[0], "v1")
	cb.OnNack(1, omniNode("p2"), ackTypes[2], "v1", "bad")
	cb.OnStreamOpen(3, omniNode("p3"))
	cb.OnStreamClose(3, nil)

	got, err := m.Directory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	local := m.Proxies()
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", local) {
		t.Fatalf("Directory differs from Proxies:\n%+v\n%+v", got, local)
	}
	if len(got) != 2 || got[0].NodeID != "p1" || got[1].NodeID != "p2" {
		t.Fatalf("listing = %+v", got)
	}
	for _, p := range got {
		if p.Replica != "solo" {
			t.Fatalf("%s listed on replica %q, want solo", p.NodeID, p.Replica)
		}
	}
	if got[0].Acked[ackTypes[0]] != "v1" || got[1].LastNack == nil || got[1].LastNack.Detail != "bad" {
		t.Fatalf("ACK/NACK state: %+v %+v", got[0].Acked, got[1].LastNack)
	}
	kvs, _, err := st.List(ctx, DirectoryPrefix)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("bbolt holds %d directory keys (%v), want none", len(kvs), err)
	}
}

// TestDirectoryLeaseLost: when the lease ends under a running replica (etcd
// unreachable for longer than the TTL: its keys are gone), the replica
// takes a new one and writes its whole directory again; keys left by an
// earlier process with the same replica id are deleted.
func TestDirectoryLeaseLost(t *testing.T) {
	st := newMemLeaseStore(true)
	// An earlier "a" crashed, leaving a stream and a group record.
	old, _ := st.Grant(context.Background(), time.Second)
	if _, err := old.Write(context.Background(), []store.KV{
		{Key: DirectoryPrefix + "a/s/99", Value: []byte(`{"node":"ghost","group":"g"}`)},
		{Key: DirectoryPrefix + "a/g/gone", Value: []byte(`{}`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	a := sharedDirectory(t, st, "a")
	cb := a.callbacks()
	for i, id := range []string{"n1", "n2", "n3"} {
		cb.OnStreamOpen(int64(i+1), omniNode(id))
	}
	nodes := func() string {
		var ids []string
		for id := range storedStreams(t, st, "a") {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return strings.Join(ids, " ")
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "a's streams written, the ghost deleted", func() (bool, string) {
		kvs, _, _ := st.List(context.Background(), DirectoryPrefix+"a/g/gone")
		return nodes() == "n1 n2 n3" && len(kvs) == 0, fmt.Sprintf("%s; old group record %d", nodes(), len(kvs))
	})
	leases := st.granted()
	st.expireLatest()
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "everything written again under a new lease", func() (bool, string) {
		return st.granted() == leases+1 && nodes() == "n1 n2 n3", fmt.Sprintf("%d leases; %s", st.granted(), nodes())
	})
	rows, err := a.all(context.Background())
	if err != nil || len(rows) != 3 || rows[0].Caps.Kind != capability.KindOmniRelay {
		t.Fatalf("listing after the new lease: %+v, %v", rows, err)
	}
}

func TestNewestPerNode(t *testing.T) {
	row := func(node, replica string, rev int64) listed {
		return listed{ProxyStatus: ProxyStatus{NodeID: node, Replica: replica}, rev: rev}
	}
	tests := []struct {
		name string
		in   []listed
		want string
	}{
		{name: "distinct nodes all kept", in: []listed{row("x", "a", 5), row("y", "b", 1)}, want: "x@a y@b"},
		{name: "moved node: higher revision wins", in: []listed{row("x", "a", 5), row("x", "b", 9)}, want: "x@b"},
		{name: "unwritten local stream is newest", in: []listed{row("x", "b", 9), row("x", "a", 1<<62)}, want: "x@a"},
		{name: "tie: smaller replica id", in: []listed{row("x", "b", 3), row("x", "a", 3)}, want: "x@a"},
		{name: "two streams on the winner both kept", in: []listed{row("x", "a", 2), row("x", "b", 4), row("x", "b", 6)}, want: "x@b x@b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range newestPerNode(tc.in) {
				got = append(got, r.NodeID+"@"+r.Replica)
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Fatalf("got %q, want %q", s, tc.want)
			}
		})
	}
}
