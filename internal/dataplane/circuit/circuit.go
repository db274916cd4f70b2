// Package circuit owns a cluster's circuit breaker: Envoy's per-cluster
// thresholds (max_connections, max_pending_requests, max_requests,
// max_retries, or a retry budget in place of max_retries) kept as atomic
// gauges, plus overflow counters for metrics.
//
// Every Try* is called on the request path by many goroutines at once; an
// acquire either takes a slot below its limit or fails and counts an
// overflow, and never lets the gauge pass the limit. Each successful
// Try* must be paired with exactly one Release* of the same kind.
package circuit

import (
	"math"
	"sync/atomic"
)

// Limits are the thresholds of one routing priority. A limit of 0 admits
// nothing (Envoy semantics: max_retries: 0 disables retries); use Unlimited
// to disable a limit.
type Limits struct {
	MaxConnections int64
	MaxPending     int64
	MaxRequests    int64
	MaxRetries     int64

	// HasBudget replaces MaxRetries with a retry budget: at most
	// BudgetPercent percent of the active plus pending requests may be
	// retries, but never fewer than MinRetryConcurrency.
	HasBudget           bool
	BudgetPercent       float64
	MinRetryConcurrency int64
}

// Unlimited disables a limit.
const Unlimited = math.MaxInt64

// DefaultLimits returns Envoy's defaults: 1024 connections, pending and
// active requests, 3 concurrent retries, no retry budget.
func DefaultLimits() Limits {
	return Limits{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}
}

// gauge is one resource's in-use count, alone on its cache line so the
// four resources do not contend with each other.
type gauge struct {
	n        atomic.Int64
	overflow atomic.Uint64
	_        [48]byte
}

// tryAcquire takes a slot if fewer than max are in use. A CAS loop rather
// than add-then-undo: the latter lets a burst of racing acquirers see a
// transiently inflated count and fail spuriously.
func (g *gauge) tryAcquire(max int64) bool {
	for {
		cur := g.n.Load()
		if cur >= max {
			g.overflow.Add(1)
			return false
		}
		if g.n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Breaker enforces Limits for one cluster.
type Breaker struct {
	lim         Limits
	requests    gauge
	pending     gauge
	connections gauge
	retries     gauge
}

// New returns a breaker enforcing l as given: Envoy's retry budget defaults
// for unset fields (20%, 3) are the config compiler's to apply, since 0 is a
// meaningful value of both.
func New(l Limits) *Breaker { return &Breaker{lim: l} }

// Limits returns the limits the breaker enforces.
func (b *Breaker) Limits() Limits { return b.lim }

// TryAcquireRequest takes an active-request slot.
func (b *Breaker) TryAcquireRequest() bool { return b.requests.tryAcquire(b.lim.MaxRequests) }

// ReleaseRequest returns an active-request slot.
func (b *Breaker) ReleaseRequest() { b.requests.n.Add(-1) }

// TryAcquirePending takes a slot for a request waiting for a connection.
func (b *Breaker) TryAcquirePending() bool { return b.pending.tryAcquire(b.lim.MaxPending) }

// ReleasePending returns a pending-request slot.
func (b *Breaker) ReleasePending() { b.pending.n.Add(-1) }

// TryAcquireConnection takes an upstream-connection slot.
func (b *Breaker) TryAcquireConnection() bool {
	return b.connections.tryAcquire(b.lim.MaxConnections)
}

// ReleaseConnection returns an upstream-connection slot.
func (b *Breaker) ReleaseConnection() { b.connections.n.Add(-1) }

// TryAcquireRetry takes a slot for a retry in flight. With a retry budget
// the limit follows the current load: BudgetPercent of active plus pending
// requests, at least MinRetryConcurrency.
func (b *Breaker) TryAcquireRetry() bool {
	return b.retries.tryAcquire(b.retryLimit())
}

// ReleaseRetry returns a retry slot.
func (b *Breaker) ReleaseRetry() { b.retries.n.Add(-1) }

func (b *Breaker) retryLimit() int64 {
	if !b.lim.HasBudget {
		return b.lim.MaxRetries
	}
	load := b.requests.n.Load() + b.pending.n.Load()
	budget := int64(float64(load) * b.lim.BudgetPercent / 100)
	return max(budget, b.lim.MinRetryConcurrency)
}

// Active returns the slots in use, for gauges and the admin page.
func (b *Breaker) Active() (requests, pending, connections, retries int64) {
	return b.requests.n.Load(), b.pending.n.Load(), b.connections.n.Load(), b.retries.n.Load()
}

// Overflows returns how many acquires of each kind failed since the
// breaker was built.
func (b *Breaker) Overflows() (requests, pending, connections, retries uint64) {
	return b.requests.overflow.Load(), b.pending.overflow.Load(), b.connections.overflow.Load(), b.retries.overflow.Load()
}
