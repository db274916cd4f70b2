package store

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
)

// etcdLeakIgnores lists goroutines the embedded etcd server leaves running
// after it stops; they belong to etcd, not to the store.
func etcdLeakIgnores() []goleak.Option {
	return nil
}

func etcdImpl(endpoints []string) impl {
	return impl{name: "etcd", open: func(t *testing.T) (Store, func() Store) {
		// Subtests share one server, each under its own prefix.
		prefix := "/test/" + t.Name() + "/"
		return openCleanup(t, func() (Store, error) { return OpenEtcd(endpoints, prefix) })
	}}
}

func TestEtcd(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	runConformance(t, etcdImpl(endpoints))

	t.Run("replicas", func(t *testing.T) {
		for _, tc := range etcdReplicaTests {
			t.Run(tc.name, func(t *testing.T) {
				prefix := "/replicas/" + t.Name() + "/"
				a, err := OpenEtcd(endpoints, prefix)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				b, err := OpenEtcd(endpoints, prefix)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				tc.run(t, endpoints, a, b)
			})
		}
	})
}

// etcdReplicaTests run two stores on one etcd, as two MeshKit replicas do.
var etcdReplicaTests = []struct {
	name string
	run  func(t *testing.T, endpoints []string, a, b Store)
}{
	{name: "writes of one are watched by the other", run: func(t *testing.T, _ []string, a, b Store) {
		ctx := ctxT(t)
		_, rev, err := b.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		ch := b.Watch(ctx, "", rev)
		r := mustPut(t, a, "svc/x", "1")
		got := collect(t, ch, 1)
		if got[0].KV.Key != "svc/x" || got[0].KV.Revision != r {
			t.Fatalf("event %+v, want svc/x@%d", got[0], r)
		}
		if _, err := b.Put(ctx, "svc/x", []byte("2"), r-1); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale write from the other replica: %v", err)
		}
	}},
	{name: "closing the leader hands over", run: func(t *testing.T, _ []string, a, b Store) {
		ctx := ctxT(t)
		la, err := a.Campaign(ctx, "expiry", "a")
		if err != nil {
			t.Fatal(err)
		}
		won := campaign(ctx, b, "expiry", "b")
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-la.Lost():
		case <-time.After(waitFor):
			t.Fatal("closed replica still leads")
		}
		select {
		case lb := <-won:
			if lb == nil {
				t.Fatal("campaign failed")
			}
			_ = lb.Resign(ctx)
		case <-time.After(waitFor):
			t.Fatal("no handover after the leader closed")
		}
	}},
	{name: "a lost lease ends leadership", run: func(t *testing.T, endpoints []string, a, b Store) {
		ctx := ctxT(t)
		la, err := a.Campaign(ctx, "expiry", "a")
		if err != nil {
			t.Fatal(err)
		}
		won := campaign(ctx, b, "expiry", "b")
		// Revoking from outside stands in for a lease etcd let expire.
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: etcdDialTimeout})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := cli.Revoke(ctx, la.(*etcdLeadership).sess.Lease()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-la.Lost():
		case <-time.After(waitFor):
			t.Fatal("leadership not lost with its lease")
		}
		select {
		case lb := <-won:
			if lb == nil {
				t.Fatal("campaign failed")
			}
			_ = lb.Resign(ctx)
		case <-time.After(waitFor):
			t.Fatal("no handover after the lease was lost")
		}
		if err := la.Resign(ctx); err != nil {
			t.Errorf("resign of a lost leadership: %v", err)
		}
	}},
	{name: "compacted history closes the watch", run: func(t *testing.T, endpoints []string, a, _ Store) {
		ctx := ctxT(t)
		old := mustPut(t, a, "k", "1")
		last := mustPut(t, a, "k", "2")
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: etcdDialTimeout})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := cli.Compact(ctx, last); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, a.Watch(ctx, "", old-1))
	}},
}

func TestOpenEtcdUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*etcdDialTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		s, err := OpenEtcd([]string{"127.0.0.1:1"}, "/x/")
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("open of an unreachable etcd succeeded")
		}
	case <-ctx.Done():
		t.Fatal("open of an unreachable etcd hangs")
	}
}
