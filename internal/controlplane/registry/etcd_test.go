package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// logRecorder keeps the messages a registry logs, to tell which replica
// did what.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// Two MeshKit replicas on one real etcd: a registration through one is seen
// by the other's change feed, exactly one replica sweeps, and the other takes
// over when the leader stops.
func TestTwoReplicasOnEtcd(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	c := newClock()
	var (
		stores [2]store.Store
		regs   [2]*Registry
		logs   [2]*logRecorder
	)
	for i := range 2 {
		st, err := store.OpenEtcd(endpoints, "/meshkit/")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores[i], logs[i] = st, &logRecorder{}
		regs[i] = New(st, Options{Now: c.Now, Log: slog.New(logs[i]), SweepInterval: 10 * time.Millisecond})
	}
	ctx := t.Context()
	changes := regs[1].Changes(ctx)

	var (
		wg      sync.WaitGroup
		cancels [2]context.CancelFunc
	)
	for i, id := range []string{"replica-0", "replica-1"} {
		rctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		wg.Go(func() { regs[i].RunExpiry(rctx, id) })
	}
	defer func() { cancels[0](); cancels[1](); wg.Wait() }()

	const leading = "registry: leading lease expiry"
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "a leader", testutil.Bool(func() bool { return logs[0].count(leading)+logs[1].count(leading) > 0 }))
	leader := slices.IndexFunc(logs[:], func(l *logRecorder) bool { return l.count(leading) > 0 })
	follower := 1 - leader

	if _, err := regs[0].Register(ctx, Endpoint{Service: "shop", ID: "a", Address: "10.0.0.1:80"}, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("replica 1 saw no change for a registration made on replica 0")
	}
	if eps, err := regs[1].List(ctx, "shop"); err != nil || len(eps) != 1 {
		t.Fatalf("replica 1 lists %v, %v", eps, err)
	}

	gone := func(st store.Store, k string) func() bool {
		return func() bool { _, err := st.Get(ctx, k); return errors.Is(err, store.ErrNotFound) }
	}
	c.Advance(2 * time.Second)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the leader to expire the lease", testutil.Bool(gone(stores[follower], key("shop", "a"))))
	// The delete is visible before the leader logs it.
	const expired = "registry: lease expired"
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the leader to log the expiry", func() (bool, string) { got := logs[leader].count(expired); return got == 1, fmt.Sprint(got) })
	if logs[leader].count(expired) != 1 || logs[follower].count(expired) != 0 || logs[follower].count(leading) != 0 {
		t.Fatalf("leader logged %q, follower %q", logs[leader].msgs, logs[follower].msgs)
	}

	cancels[leader]()
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the follower to take over", func() (bool, string) { got := logs[follower].count(leading); return got == 1, fmt.Sprint(got) })
	if _, err := regs[leader].Register(ctx, Endpoint{Service: "shop", ID: "b", Address: "10.0.0.2:80"}, time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the new leader to expire the lease", testutil.Bool(gone(stores[leader], key("shop", "b"))))
}
