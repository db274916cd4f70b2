package meshkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// nodeInBucket is an OmniRelay node id whose canary bucket is b.
func nodeInBucket(t testing.TB, b uint32) *corev3.Node {
	t.Helper()
	for i := range 100000 {
		id := fmt.Sprintf("proxy-%d", i)
		if config.ProxyBucket(id) == b {
			n := &corev3.Node{Id: id}
			capability.Set{Kind: capability.KindOmniRelay, Build: "test",
				Filters: []string{"envoy.filters.http.router", "envoy.filters.network.http_connection_manager"}}.Apply(n)
			return n
		}
	}
	t.Fatalf("no node id in bucket %d", b)
	return nil
}

// runMeshKit runs a MeshKit on st until the test ends or stop is called.
func runMeshKit(t *testing.T, st store.Store) (*MeshKit, func()) {
	t.Helper()
	m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), Directory: DirectoryOptions{ReplicaID: t.Name()}})
	if err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return m, stop
}

// servedDigest is the config digest group of node is served, polled until
// it is want (or the deadline).
func waitServed(t *testing.T, m *MeshKit, node *corev3.Node, want string) {
	t.Helper()
	g, err := m.group(node)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := ""
		if s := m.cache.Get(g); s != nil {
			got, _, _ = strings.Cut(s.Version, "-")
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s (bucket %d) is served %q, want %q", node.GetId(), config.ProxyBucket(node.GetId()), got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitPhase(t *testing.T, m *MeshKit, want rollout.Phase) *rollout.State {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := m.Rollout(context.Background())
		if err == nil && s.Phase == want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout: %+v, %v; want phase %s", s, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRolloutOfAChange(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := versions.WithAuthor(context.Background(), "alice")
	m, _ := runMeshKit(t, st)
	v1, v2 := historyDoc(1), historyDoc(2)
	if _, err := m.ApplyVersion(ctx, "mesh.yaml", v1, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	low, mid, high := nodeInBucket(t, 5), nodeInBucket(t, 30), nodeInBucket(t, 99)
	d1, d2 := versions.DigestOf(v1), versions.DigestOf(v2)
	for _, n := range []*corev3.Node{low, mid, high} {
		waitServed(t, m, n, d1)
	}

	// Bad plans are refused before anything is stored.
	for _, bad := range []rollout.Plan{{}, {Steps: []uint32{50, 10}}, {Steps: []uint32{0, 10}}, {Steps: []uint32{101}}, {Steps: []uint32{10}, Pause: -time.Second}} {
		var cerr *config.Error
		if _, err := m.StartRollout(ctx, "mesh.yaml", v2, bad, versions.OriginApply); !errors.As(err, &cerr) {
			t.Fatalf("plan %+v: %v", bad, err)
		}
	}
	if _, err := m.StartRollout(ctx, "mesh.yaml", v1, rollout.Plan{Steps: []uint32{10}}, versions.OriginApply); err == nil {
		t.Fatal("a rollout of the document in force started")
	}

	const pause = 300 * time.Millisecond
	s, err := m.StartRollout(ctx, "mesh.yaml", v2, rollout.Plan{Steps: []uint32{10, 50, 100}, Pause: pause}, versions.OriginApply)
	if err != nil {
		t.Fatal(err)
	}
	if s.Percent() != 10 || s.Stable != 1 || s.Canary.Version != d2 || s.Canary.Author != "alice" {
		t.Fatalf("started: %+v", s)
	}
	waitServed(t, m, low, d2)
	waitServed(t, m, mid, d1)
	waitServed(t, m, high, d1)

	// Changes that would bypass the rollout are refused meanwhile.
	if _, err := m.ApplyVersion(ctx, "mesh.yaml", historyDoc(3), versions.OriginApply); !errors.Is(err, ErrRolloutActive) {
		t.Fatalf("apply during a rollout: %v", err)
	}
	if _, err := m.Undo(ctx, 0); !errors.Is(err, ErrRolloutActive) {
		t.Fatalf("undo during a rollout: %v", err)
	}

	// Pause holds the step; resume continues it.
	if _, err := m.PauseRollout(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * pause)
	if s, _ := m.Rollout(ctx); s.Phase != rollout.Paused || s.Percent() != 10 {
		t.Fatalf("paused rollout moved: %+v", s)
	}
	if _, err := m.PauseRollout(ctx); err == nil {
		t.Fatal("paused twice")
	}
	if _, err := m.ResumeRollout(ctx); err != nil {
		t.Fatal(err)
	}
	waitServed(t, m, mid, d2)  // 50 %
	waitServed(t, m, high, d2) // 100 %: bucket 99 too
	s = waitPhase(t, m, rollout.Promoted)
	if s.Promoted != 2 {
		t.Fatalf("promoted as version %d", s.Promoted)
	}
	rec, err := m.Version(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Origin != versions.OriginRollout || rec.Author != "alice" || rec.Version != d2 || !strings.HasPrefix(rec.Summary[0], "rollout 1 promoted") {
		t.Fatalf("promoted version: %+v", rec)
	}
	var steps []string
	for _, e := range s.Events {
		steps = append(steps, e.Text)
	}
	if got := strings.Join(steps, "\n"); !strings.Contains(got, "step 2/3: 50%") || !strings.Contains(got, "step 3/3: 100%") || !strings.Contains(got, "paused at 10%") {
		t.Fatalf("events:\n%s", got)
	}

	// Abort serves the stable version to everyone again.
	v3 := historyDoc(3)
	d3 := versions.DigestOf(v3)
	if _, err := m.StartRollout(ctx, "mesh.yaml", v3, rollout.Plan{Steps: []uint32{50}, Pause: time.Hour}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	waitServed(t, m, mid, d3)
	if _, err := m.AbortRollout(ctx, "operator"); err != nil {
		t.Fatal(err)
	}
	waitServed(t, m, mid, d2)
	if s, _ := m.Rollout(ctx); s.Phase != rollout.Aborted || s.ID != 2 {
		t.Fatalf("aborted: %+v", s)
	}
	if _, err := m.AbortRollout(ctx, "again"); !errors.Is(err, ErrNoRollout) {
		t.Fatalf("abort with none running: %v", err)
	}
	if m.Current() != 2 {
		t.Fatalf("an aborted rollout made a version: current %d", m.Current())
	}
}

// TestRolloutResumesAfterRestart stops the MeshKit driving a rollout and
// starts another on the same store: it serves the step the record holds
// and carries the plan on to promotion.
func TestRolloutResumesAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshkit.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, stop := runMeshKit(t, st)
	if _, err := m.ApplyVersion(ctx, "mesh.yaml", historyDoc(1), versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartRollout(ctx, "mesh.yaml", historyDoc(2), rollout.Plan{Steps: []uint32{10, 50}, Pause: 500 * time.Millisecond}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	m2, _ := runMeshKit(t, st2)
	d1, d2 := versions.DigestOf(historyDoc(1)), versions.DigestOf(historyDoc(2))
	high := nodeInBucket(t, 99)
	waitServed(t, m2, nodeInBucket(t, 5), d2)
	waitServed(t, m2, high, d1)
	s := waitPhase(t, m2, rollout.Promoted)
	if s.Promoted != 2 {
		t.Fatalf("promoted as %d", s.Promoted)
	}
	waitServed(t, m2, high, d2)
}

// TestFollowedFileChangeBecomesARollout: a followed file's change during a
// rollout supersedes it (new rollout, same plan, the stable version stays)
// instead of overwriting the desired config; with a plan given, every change
// is a rollout.
func TestFollowedFileChangeBecomesARollout(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	m, _ := runMeshKit(t, st)
	if a, s, err := m.ApplyFollowed(ctx, "f.yaml", historyDoc(1), nil); err != nil || s != nil || a.Number != 1 {
		t.Fatalf("first: %+v %+v %v", a, s, err)
	}
	plan := rollout.Plan{Steps: []uint32{10, 50}, Pause: time.Hour}
	if _, err := m.StartRollout(ctx, "f.yaml", historyDoc(2), plan, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	_, s, err := m.ApplyFollowed(ctx, "f.yaml", historyDoc(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil || s.ID != 2 || s.Canary.Version != versions.DigestOf(historyDoc(3)) || s.Stable != 1 || s.Percent() != 10 ||
		!strings.Contains(s.Events[0].Text, "supersedes rollout 1") || s.Canary.Origin != versions.OriginFile {
		t.Fatalf("superseding rollout: %+v", s)
	}
	if m.Current() != 1 {
		t.Fatalf("the file change overwrote the desired config: current %d", m.Current())
	}
	if _, err := m.AbortRollout(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	// With a plan, a change is a rollout even when none runs.
	_, s, err = m.ApplyFollowed(ctx, "f.yaml", historyDoc(4), &rollout.Plan{Steps: []uint32{20}, Pause: time.Hour})
	if err != nil || s == nil || s.Percent() != 20 || s.ID != 3 {
		t.Fatalf("with a plan: %+v %v", s, err)
	}
	// Without a plan and no rollout running, it is a plain apply.
	if _, err := m.AbortRollout(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if a, s, err := m.ApplyFollowed(ctx, "f.yaml", historyDoc(5), nil); err != nil || s != nil || a.Number != 2 {
		t.Fatalf("plain: %+v %+v %v", a, s, err)
	}
}

// TestRolloutLeaderChangeOnEtcd: two MeshKits share one etcd; the one
// leading the rollout election closes its store mid-rollout (its etcd
// session ends) and the other takes the rollout on from the stored record
// and promotes it. Both serve the same step meanwhile.
func TestRolloutLeaderChangeOnEtcd(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	ctx := context.Background()
	var (
		ms    []*MeshKit
		stops []func()
		sts   []store.Store
	)
	for _, id := range []string{"a", "b"} {
		st, err := store.OpenEtcd(endpoints, "/meshkit")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), Directory: DirectoryOptions{ReplicaID: id}})
		rctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = m.Run(rctx) })
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
		t.Cleanup(stop)
		ms, stops, sts = append(ms, m), append(stops, stop), append(sts, st)
	}
	if _, err := ms[0].ApplyVersion(ctx, "mesh.yaml", historyDoc(1), versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	if _, err := ms[0].StartRollout(ctx, "mesh.yaml", historyDoc(2), rollout.Plan{Steps: []uint32{10, 50}, Pause: 700 * time.Millisecond}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	d1, d2 := versions.DigestOf(historyDoc(1)), versions.DigestOf(historyDoc(2))
	low, high := nodeInBucket(t, 5), nodeInBucket(t, 99)
	for _, m := range ms {
		waitServed(t, m, low, d2)
		waitServed(t, m, high, d1)
	}
	// Stop whichever replica leads the rollout election (the store
	// answers who: its leader key), closing its store first as a dying
	// process would lose its etcd session.
	var leader int
	deadline := time.Now().Add(10 * time.Second)
	for !ms[0].LeadsRollouts() && !ms[1].LeadsRollouts() {
		if time.Now().After(deadline) {
			t.Fatal("no replica leads the rollouts")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ms[1].LeadsRollouts() {
		leader = 1
	}
	if err := sts[leader].Close(); err != nil {
		t.Fatal(err)
	}
	stops[leader]()
	other := ms[1-leader]
	s := waitPhase(t, other, rollout.Promoted)
	if s.Promoted != 2 {
		t.Fatalf("promoted as %d", s.Promoted)
	}
	waitServed(t, other, high, d2)
}

// TestApplyOfTheStableDocumentDuringARollout: applying the document in force
// (a restarted MeshKit applying its unchanged --config) is not a change,
// so a running rollout does not refuse it.
func TestApplyOfTheStableDocumentDuringARollout(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	m, _ := runMeshKit(t, st)
	if _, err := m.ApplyVersion(ctx, "f.yaml", historyDoc(1), versions.OriginFile); err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartRollout(ctx, "f.yaml", historyDoc(2), rollout.Plan{Steps: []uint32{10}, Pause: time.Hour}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	if a, err := m.ApplyVersion(ctx, "f.yaml", historyDoc(1), versions.OriginFile); err != nil || !a.Unchanged {
		t.Fatalf("re-apply of the stable document: %+v %v", a, err)
	}
	if _, _, err := m.ApplyFollowed(ctx, "f.yaml", historyDoc(1), nil); err != nil {
		t.Fatalf("followed re-apply: %v", err)
	}
	if s, _ := m.Rollout(ctx); !s.Active() {
		t.Fatalf("rollout ended: %+v", s)
	}
}
