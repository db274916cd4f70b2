package store

import (
	"context"
	"errors"
	"time"
)

// MaxWriteOps bounds the puts plus deletes of one Lease.Write: etcd refuses
// a transaction of more operations than its --max-txn-ops (128 by default).
const MaxWriteOps = 128

// ErrLeaseLost reports a write under a lease that has expired or was
// revoked: its keys are gone, and the caller grants a new lease.
var ErrLeaseLost = errors.New("lease lost")

// Leaser is implemented by stores that can hold keys under a lease which
// the store deletes, keys and all, when its holder stops renewing it: etcd,
// where several replicas each publish what only they know (the proxies
// connected to them) and a replica that dies must not leave it behind. The
// bbolt store does not implement it: a single replica keeps such state in
// memory. Callers find it by type assertion.
type Leaser interface {
	// Grant creates a lease of at least ttl (etcd rounds up to whole
	// seconds and to its own minimum) and renews it in the background
	// until Revoke, until the store closes, or until renewing fails for
	// longer than the TTL (then the store has deleted its keys and Lost
	// closes).
	Grant(ctx context.Context, ttl time.Duration) (Lease, error)
}

// Lease is a granted lease. All methods are safe for concurrent use.
type Lease interface {
	// Write puts and deletes keys in one atomic write and returns the
	// store revision it made; the puts are held by the lease (a key put
	// earlier under another lease moves to this one). Deleting a missing
	// key is not an error. At most MaxWriteOps keys per call; a write after
	// the lease was lost returns ErrLeaseLost.
	Write(ctx context.Context, puts []KV, deletes []string) (int64, error)
	// Lost is closed once the lease is over: expired, revoked, or the store
	// closed.
	Lost() <-chan struct{}
	// Revoke ends the lease now; the store deletes its keys.
	Revoke(ctx context.Context) error
}
