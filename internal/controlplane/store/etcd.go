package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

const (
	// etcdSessionTTL bounds how long a dead leader keeps its election: a
	// replica that stops renewing loses leadership within this many seconds.
	etcdSessionTTL  = 5
	etcdDialTimeout = 5 * time.Second
)

// etcdStore maps the Store keyspace onto etcd under prefix+"kv/"; elections
// live beside it under prefix+"election/" so that they never show up in a
// List or Watch of the user's keys. Store revisions are etcd's revisions.
type etcdStore struct {
	cli    *clientv3.Client
	kv     string // key prefix of stored keys
	elect  string // key prefix of elections
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // watch goroutines; Add under mu
	once   sync.Once

	mu       sync.Mutex
	sessions map[*concurrency.Session]struct{} // held leaderships, revoked on Close
}

var _ Store = (*etcdStore)(nil)

// OpenEtcd connects to an etcd cluster and keeps every key under prefix
// (conventionally ending in "/", e.g. "/meshkit/"), so that several MeshKit
// deployments can share one cluster. It fails if no endpoint answers within
// a few seconds.
func OpenEtcd(endpoints []string, prefix string) (Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: etcdDialTimeout,
		// Every failure the client retries past reaches the caller as an
		// error; its own zap log would only add JSON noise beside slog.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect etcd %v: %w", endpoints, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdDialTimeout)
	defer cancel()
	if _, err := cli.Get(ctx, prefix, clientv3.WithCountOnly()); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("store: connect etcd %v: %w", endpoints, err)
	}
	s := &etcdStore{
		cli:      cli,
		kv:       prefix + "kv/",
		elect:    prefix + "election/",
		sessions: make(map[*concurrency.Session]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *etcdStore) check(op, key string, needKey bool) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("store: %s %q: %w", op, key, ErrClosed)
	}
	if needKey && key == "" {
		return fmt.Errorf("store: %s: empty key", op)
	}
	return nil
}

func (s *etcdStore) Get(ctx context.Context, key string) (KV, error) {
	if err := s.check("get", key, true); err != nil {
		return KV{}, err
	}
	resp, err := s.cli.Get(ctx, s.kv+key)
	if err != nil {
		return KV{}, fmt.Errorf("store: get %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, fmt.Errorf("store: get %q: %w", key, ErrNotFound)
	}
	kv := resp.Kvs[0]
	return KV{Key: key, Value: kv.Value, Revision: kv.ModRevision}, nil
}

func (s *etcdStore) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	if err := s.check("list", prefix, false); err != nil {
		return nil, 0, err
	}
	// etcd returns a range sorted by key already; no WithSort needed.
	resp, err := s.cli.Get(ctx, s.kv+prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %q: %w", prefix, err)
	}
	kvs := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs = append(kvs, KV{Key: string(kv.Key[len(s.kv):]), Value: kv.Value, Revision: kv.ModRevision})
	}
	return kvs, resp.Header.Revision, nil
}

func (s *etcdStore) Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	if err := s.check("put", key, true); err != nil {
		return 0, err
	}
	k := s.kv + key
	if expectRev < 0 {
		resp, err := s.cli.Put(ctx, k, string(value))
		if err != nil {
			return 0, fmt.Errorf("store: put %q: %w", key, err)
		}
		return resp.Header.Revision, nil
	}
	cond := clientv3.Compare(clientv3.ModRevision(k), "=", expectRev)
	if expectRev == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	}
	resp, err := s.cli.Txn(ctx).If(cond).Then(clientv3.OpPut(k, string(value))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return 0, fmt.Errorf("store: put %q: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("store: put %q: %w", key, conflict(resp, expectRev))
	}
	return resp.Header.Revision, nil
}

// conflict describes a failed conditional write from its Else Get.
func conflict(resp *clientv3.TxnResponse, expectRev int64) error {
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	switch {
	case len(kvs) == 0:
		return fmt.Errorf("%w: key does not exist, expected revision %d", ErrConflict, expectRev)
	case expectRev == 0:
		return fmt.Errorf("%w: key exists at revision %d", ErrConflict, kvs[0].ModRevision)
	}
	return fmt.Errorf("%w: key at revision %d, expected %d", ErrConflict, kvs[0].ModRevision, expectRev)
}

func (s *etcdStore) Delete(ctx context.Context, key string, expectRev int64) error {
	if err := s.check("delete", key, true); err != nil {
		return err
	}
	k := s.kv + key
	if expectRev <= 0 {
		resp, err := s.cli.Delete(ctx, k)
		if err != nil {
			return fmt.Errorf("store: delete %q: %w", key, err)
		}
		if resp.Deleted == 0 {
			return fmt.Errorf("store: delete %q: %w", key, ErrNotFound)
		}
		return nil
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", expectRev)).
		Then(clientv3.OpDelete(k)).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("store: delete %q: %w", key, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().GetKvs()) == 0 {
			return fmt.Errorf("store: delete %q: %w", key, ErrNotFound)
		}
		return fmt.Errorf("store: delete %q: %w", key, conflict(resp, expectRev))
	}
	return nil
}

func (s *etcdStore) Watch(ctx context.Context, prefix string, afterRev int64) <-chan []Event {
	out := make(chan []Event)
	// s.mu orders wg.Add before Close's wg.Wait.
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		close(out)
		return out
	}
	s.wg.Add(1)
	s.mu.Unlock()
	afterRev = max(afterRev, 0)
	// WithRequireLeader: a member cut off from its cluster cancels the
	// watch instead of going silent, so the caller re-Lists elsewhere.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	stop := context.AfterFunc(s.ctx, cancel)
	wch := s.cli.Watch(wctx, s.kv+prefix, clientv3.WithPrefix(), clientv3.WithRev(afterRev+1))
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		for {
			var resp clientv3.WatchResponse
			select {
			case r, ok := <-wch:
				if !ok {
					return
				}
				resp = r
			case <-wctx.Done():
				return
			}
			// A compacted start revision, a cancelled watch or a lost
			// leader all end the channel: the caller re-Lists.
			if resp.Canceled || resp.CompactRevision != 0 || resp.Err() != nil {
				return
			}
			if len(resp.Events) == 0 {
				continue // progress notification
			}
			batch := make([]Event, 0, len(resp.Events))
			for _, ev := range resp.Events {
				e := Event{Type: EventPut, KV: KV{
					Key:      string(ev.Kv.Key[len(s.kv):]),
					Value:    ev.Kv.Value,
					Revision: ev.Kv.ModRevision,
				}}
				if ev.Type == clientv3.EventTypeDelete {
					e.Type, e.KV.Value = EventDelete, nil
				}
				batch = append(batch, e)
			}
			select {
			case out <- batch:
			case <-wctx.Done():
				return
			}
		}
	}()
	return out
}

// campaignCancelGrace is how long an abandoned campaign may take to clean up
// its key in etcd before Campaign returns without waiting for it.
const campaignCancelGrace = time.Second

func (s *etcdStore) Campaign(ctx context.Context, election, id string) (Leadership, error) {
	if err := s.check("campaign", election, false); err != nil {
		return nil, err
	}
	fail := func(err error) (Leadership, error) {
		return nil, fmt.Errorf("store: campaign %q as %q: %w", election, id, err)
	}
	// The lease is granted under ctx (the campaign may be abandoned), but the
	// session lives under the store's context: leadership outlives ctx.
	lease, err := s.cli.Grant(ctx, etcdSessionTTL)
	if err != nil {
		return fail(err)
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID),
		concurrency.WithTTL(etcdSessionTTL), concurrency.WithContext(s.ctx))
	if err != nil {
		_, _ = s.cli.Revoke(context.Background(), lease.ID)
		return fail(err)
	}
	e := concurrency.NewElection(sess, s.elect+election)
	// etcd's Campaign, when ctx ends while it waits, deletes its key with the
	// client's own context: with etcd unreachable that waits until etcd comes
	// back or the client closes, and a replica cut off etcd could not shut
	// down. So the wait ends with ctx here; the abandoned call finishes in
	// the background and its session is closed then (Close of the store ends
	// it at the latest).
	done := make(chan error, 1)
	go func() { done <- e.Campaign(ctx, id) }()
	var cerr error
	select {
	case cerr = <-done:
	case <-ctx.Done():
		select {
		case cerr = <-done:
		case <-time.After(campaignCancelGrace):
			go func() {
				<-done
				_ = sess.Close()
			}()
			return fail(ctx.Err())
		}
	}
	if cerr != nil {
		// Revoking the lease waits up to the session TTL for an unreachable
		// etcd; the lease expires by itself anyway.
		go func() { _ = sess.Close() }()
		if ctx.Err() != nil {
			cerr = errors.Join(ctx.Err(), cerr)
		}
		return fail(cerr)
	}
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	return &etcdLeadership{s: s, sess: sess, e: e}, nil
}

// etcdLeadership is held by a session lease: it is lost when the lease
// cannot be renewed for etcdSessionTTL seconds, on Resign, and on Close.
type etcdLeadership struct {
	s    *etcdStore
	sess *concurrency.Session
	e    *concurrency.Election
}

var _ Leadership = (*etcdLeadership)(nil)

func (l *etcdLeadership) Lost() <-chan struct{} { return l.sess.Done() }

func (l *etcdLeadership) Resign(ctx context.Context) error {
	l.s.mu.Lock()
	delete(l.s.sessions, l.sess)
	l.s.mu.Unlock()
	select {
	case <-l.sess.Done():
		// Already lost (store closed or lease expired): nothing to hand over.
		_ = l.sess.Close()
		return nil
	default:
	}
	if err := l.e.Resign(ctx); err != nil {
		// Revoking the lease deletes the election key too, so the next
		// campaigner still wins once Close succeeds or the lease runs out.
		_ = l.sess.Close()
		return fmt.Errorf("store: resign: %w", err)
	}
	if err := l.sess.Close(); err != nil {
		return fmt.Errorf("store: resign: revoke session lease: %w", err)
	}
	return nil
}

func (s *etcdStore) Close() error {
	var err error
	s.once.Do(func() {
		// A closing replica hands its elections over at once instead of
		// making the others wait out the lease; a crashed one cannot, and
		// its lease expires after etcdSessionTTL.
		s.mu.Lock()
		for sess := range s.sessions {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = s.cli.Revoke(ctx, sess.Lease())
			cancel()
		}
		clear(s.sessions)
		s.cancel()
		s.mu.Unlock()
		s.wg.Wait()
		if cerr := s.cli.Close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = fmt.Errorf("store: close etcd: %w", cerr)
		}
	})
	return err
}
