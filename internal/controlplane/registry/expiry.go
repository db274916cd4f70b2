package registry

import (
	"context"
	"errors"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// RunExpiry deletes expired leases for as long as ctx lives, but only while
// this replica leads the ExpiryElection: with several MeshKit replicas on one
// etcd, exactly one of them sweeps. It campaigns again after losing the
// lead, resigns when ctx ends, and returns nil then.
//
// The leader keeps an in-memory view of every lease (one List, then the
// store's watch), so that a heartbeat costs it one decoded event rather than
// a re-read of the registry; it wakes at the earliest expiry, on every change,
// and at least every SweepInterval.
func (r *Registry) RunExpiry(ctx context.Context, replicaID string) error {
	backoff := newBackoff()
	for ctx.Err() == nil {
		lead, err := r.st.Campaign(ctx, ExpiryElection, replicaID)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.log.Warn("registry: expiry campaign failed", "replica", replicaID, "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		r.log.Info("registry: leading lease expiry", "replica", replicaID)
		r.sweepWhileLeading(ctx, lead)
		select {
		case <-lead.Lost():
			r.log.Warn("registry: lost expiry leadership", "replica", replicaID)
		default:
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			if err := lead.Resign(rctx); err != nil {
				r.log.Warn("registry: resign expiry leadership", "replica", replicaID, "err", err)
			}
			cancel()
		}
	}
	return nil
}

type leaseEntry struct {
	expires time.Time
	rev     int64
}

func (r *Registry) sweepWhileLeading(ctx context.Context, lead store.Leadership) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	backoff := newBackoff()
	var (
		view   map[string]leaseEntry
		events <-chan []store.Event
	)
	for {
		if events == nil {
			kvs, rev, err := r.st.List(ctx, Prefix)
			if err != nil {
				r.log.Warn("registry: expiry list failed", "err", err)
				if !backoff.waitOr(ctx, lead.Lost()) {
					return
				}
				continue
			}
			backoff.reset()
			view = make(map[string]leaseEntry, len(kvs))
			for _, kv := range kvs {
				r.track(view, kv)
			}
			events = r.st.Watch(wctx, Prefix, rev)
		}
		next := r.sweepOnce(ctx, view)
		wait := r.sweep
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(r.now()), time.Millisecond))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-lead.Lost():
			return
		case <-timer.C:
		case batch, ok := <-events:
			if !ok {
				// Compaction or a store hiccup: rebuild the view.
				events = nil
				continue
			}
			for _, ev := range batch {
				if ev.Type == store.EventDelete {
					delete(view, ev.KV.Key)
				} else {
					r.track(view, ev.KV)
				}
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (r *Registry) track(view map[string]leaseEntry, kv store.KV) {
	ep, err := decode(kv)
	if err != nil {
		r.log.Warn("registry: expiry skipping undecodable record", "key", kv.Key, "err", err)
		delete(view, kv.Key)
		return
	}
	view[kv.Key] = leaseEntry{expires: ep.ExpiresAt, rev: kv.Revision}
}

// sweepOnce deletes what has expired and returns the earliest expiry left
// (zero when none). Deletes are conditional on the revision seen, so a
// heartbeat that lands first wins.
func (r *Registry) sweepOnce(ctx context.Context, view map[string]leaseEntry) time.Time {
	now := r.now()
	var next time.Time
	for k, e := range view {
		if now.Before(e.expires) {
			if next.IsZero() || e.expires.Before(next) {
				next = e.expires
			}
			continue
		}
		err := r.st.Delete(ctx, k, e.rev)
		switch {
		case err == nil:
			r.log.Info("registry: lease expired", "key", k, "expired_at", e.expires)
			delete(view, k)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			// Renewed or removed meanwhile; the watch brings the new state.
			delete(view, k)
		default:
			r.log.Warn("registry: expiring lease", "key", k, "err", err)
			if next.IsZero() || now.Add(time.Second).Before(next) {
				next = now.Add(time.Second)
			}
		}
	}
	return next
}

// backoff spaces out retries against a failing store: 100 ms doubling to 5 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) bool { return b.waitOr(ctx, nil) }

// waitOr sleeps the current delay unless ctx ends or stop fires (then it
// returns false), and doubles the delay.
func (b *backoff) waitOr(ctx context.Context, stop <-chan struct{}) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, 5*time.Second)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}
