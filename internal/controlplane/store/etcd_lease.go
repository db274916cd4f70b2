package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var _ Leaser = (*etcdStore)(nil)

// Grant implements Leaser with an etcd lease kept alive by the client (it
// renews at a third of the TTL). The keep-alive lives under the store's
// context, not ctx: ctx bounds only the grant.
func (s *etcdStore) Grant(ctx context.Context, ttl time.Duration) (Lease, error) {
	if err := s.check("grant", "", false); err != nil {
		return nil, err
	}
	secs := max(int64(math.Ceil(ttl.Seconds())), 1)
	resp, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("store: grant lease of %ds: %w", secs, err)
	}
	kctx, cancel := context.WithCancel(s.ctx)
	ch, err := s.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		cancel()
		_, _ = s.cli.Revoke(context.WithoutCancel(ctx), resp.ID)
		return nil, fmt.Errorf("store: keep lease %x alive: %w", resp.ID, err)
	}
	l := &etcdLease{s: s, id: resp.ID, cancel: cancel, lost: make(chan struct{})}
	// s.mu orders wg.Add before Close's wg.Wait, as for watches.
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		cancel()
		l.markLost()
		return l, nil
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer l.markLost()
		// The client closes ch when the lease cannot be renewed before its
		// TTL runs out, when etcd reports it gone, or when kctx ends.
		for range ch {
		}
	}()
	return l, nil
}

// etcdLease is one granted lease and its keep-alive.
type etcdLease struct {
	s        *etcdStore
	id       clientv3.LeaseID
	cancel   context.CancelFunc
	lost     chan struct{}
	lostOnce sync.Once
}

var _ Lease = (*etcdLease)(nil)

func (l *etcdLease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

func (l *etcdLease) Lost() <-chan struct{} { return l.lost }

func (l *etcdLease) Write(ctx context.Context, puts []KV, deletes []string) (int64, error) {
	if err := l.s.check("write", "", false); err != nil {
		return 0, err
	}
	n := len(puts) + len(deletes)
	if n > MaxWriteOps {
		return 0, fmt.Errorf("store: lease write of %d keys: more than %d", n, MaxWriteOps)
	}
	select {
	case <-l.lost:
		return 0, fmt.Errorf("store: lease write: lease %x: %w", l.id, ErrLeaseLost)
	default:
	}
	ops := make([]clientv3.Op, 0, n)
	for _, kv := range puts {
		if kv.Key == "" {
			return 0, errors.New("store: lease write: empty key")
		}
		ops = append(ops, clientv3.OpPut(l.s.kv+kv.Key, string(kv.Value), clientv3.WithLease(l.id)))
	}
	for _, k := range deletes {
		if k == "" {
			return 0, errors.New("store: lease write: empty key")
		}
		ops = append(ops, clientv3.OpDelete(l.s.kv+k))
	}
	resp, err := l.s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// Expired on the server before the client noticed.
			l.cancel()
			l.markLost()
			return 0, fmt.Errorf("store: lease write: lease %x: %w", l.id, ErrLeaseLost)
		}
		return 0, fmt.Errorf("store: lease write of %d keys: %w", n, err)
	}
	return resp.Header.Revision, nil
}

func (l *etcdLease) Revoke(ctx context.Context) error {
	l.cancel()
	defer l.markLost()
	if _, err := l.s.cli.Revoke(ctx, l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("store: revoke lease %x: %w", l.id, err)
	}
	return nil
}
