package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestEtcdLease: keys written under a lease are held by it: revoking the
// lease deletes them, and so does a holder that vanishes (its connection
// cut, no revoke) once the TTL has run out, as seen by another replica.
func TestEtcdLease(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	open := func(t *testing.T, eps []string) Store {
		t.Helper()
		s, err := OpenEtcd(eps, "/lease/"+t.Name()+"/")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	keys := func(t *testing.T, s Store) []string {
		t.Helper()
		kvs, _, err := s.List(ctxT(t), "dir/")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range kvs {
			out = append(out, kv.Key+"="+string(kv.Value))
		}
		return out
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{name: "write puts and deletes atomically", run: func(t *testing.T) {
			s := open(t, endpoints)
			l, err := s.(Leaser).Grant(ctxT(t), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Revoke(context.Background())
			rev, err := l.Write(ctxT(t), []KV{{Key: "dir/a", Value: []byte("1")}, {Key: "dir/b", Value: []byte("2")}}, nil)
			if err != nil || rev == 0 {
				t.Fatalf("write: rev %d, %v", rev, err)
			}
			if _, err := l.Write(ctxT(t), []KV{{Key: "dir/c", Value: []byte("3")}}, []string{"dir/a", "dir/missing"}); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(keys(t, s)); got != "[dir/b=2 dir/c=3]" {
				t.Fatalf("keys = %s", got)
			}
			big := make([]KV, MaxWriteOps+1)
			for i := range big {
				big[i] = KV{Key: fmt.Sprintf("dir/%d", i)}
			}
			if _, err := l.Write(ctxT(t), big, nil); err == nil {
				t.Fatal("a write of more than MaxWriteOps keys was accepted")
			}
		}},
		{name: "revoke deletes the keys", run: func(t *testing.T) {
			s := open(t, endpoints)
			l, err := s.(Leaser).Grant(ctxT(t), 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Write(ctxT(t), []KV{{Key: "dir/a", Value: []byte("1")}}, nil); err != nil {
				t.Fatal(err)
			}
			if err := l.Revoke(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if got := keys(t, s); len(got) != 0 {
				t.Fatalf("keys after revoke = %v", got)
			}
			select {
			case <-l.Lost():
			default:
				t.Fatal("Lost not closed after Revoke")
			}
			if _, err := l.Write(ctxT(t), []KV{{Key: "dir/b"}}, nil); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("write after revoke: %v, want ErrLeaseLost", err)
			}
		}},
		{name: "a vanished holder's keys expire after the TTL", run: func(t *testing.T) {
			relay := etcdtest.NewRelay(t, endpoints[0])
			holder, watcher := open(t, relay.Endpoints()), open(t, endpoints)
			const ttl = 2 * time.Second
			l, err := holder.(Leaser).Grant(ctxT(t), ttl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Write(ctxT(t), []KV{{Key: "dir/a", Value: []byte("1")}}, nil); err != nil {
				t.Fatal(err)
			}
			// Outlive a few renewals first: the keep-alive works.
			time.Sleep(ttl + time.Second)
			if got := keys(t, watcher); len(got) != 1 {
				t.Fatalf("keys before the cut = %v", got)
			}
			cut := time.Now()
			relay.Cut()
			testutil.Eventually(t, ttl+5*time.Second, 50*time.Millisecond, "keys gone after the cut", func() (bool, string) {
				k := keys(t, watcher)
				return len(k) == 0, fmt.Sprintf("keys %v still there %v after the cut", k, time.Since(cut))
			})
			t.Logf("keys gone %v after the cut (TTL %v)", time.Since(cut).Round(10*time.Millisecond), ttl)
			select {
			case <-l.Lost():
			case <-time.After(5 * time.Second):
				t.Fatal("the holder's Lost did not close after its lease expired")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}
