// Package endpoint owns the upstream host as every cluster component sees it:
// its address, weight, locality and the live counters that load balancers,
// health checkers, outlier detection and circuit breakers read and write.
//
// An Endpoint outlives config reloads (health and ejection state must carry
// over when a cluster is rebuilt with the same host), so cluster compilation
// looks endpoints up by address in the previous version's set before
// creating new ones.
package endpoint

import (
	"sync/atomic"
	"time"
)

// Endpoint is one upstream host. All mutable fields are atomics: the request
// path reads them without locks.
type Endpoint struct {
	// Address is "host:port" as dialled.
	Address string
	// Weight is the load-balancing weight (>= 1).
	Weight uint32
	// Locality is "region/zone/subzone" (may be empty).
	Locality string
	// Priority is the EDS priority (0 highest).
	Priority uint32

	// Active is the number of requests in flight to this host (least-request).
	Active atomic.Int64
	// Total counts requests sent to this host.
	Total atomic.Uint64

	// healthy is maintained by the active health checker: 1 healthy, 0 not.
	healthy atomic.Bool
	// ejectedUntil is a unix-nano deadline set by outlier detection; 0 when
	// not ejected.
	ejectedUntil atomic.Int64
	// EjectionCount is how many times outlier detection ejected the host
	// (it scales the next ejection time).
	EjectionCount atomic.Uint32
}

// New returns a healthy endpoint.
func New(addr string, weight uint32) *Endpoint {
	if weight == 0 {
		weight = 1
	}
	e := &Endpoint{Address: addr, Weight: weight}
	e.healthy.Store(true)
	return e
}

// Healthy reports the active health check verdict.
func (e *Endpoint) Healthy() bool { return e.healthy.Load() }

// SetHealthy records the active health check verdict and reports whether it
// changed.
func (e *Endpoint) SetHealthy(v bool) bool { return e.healthy.Swap(v) != v }

// Ejected reports whether outlier detection currently ejects the host.
func (e *Endpoint) Ejected(now time.Time) bool {
	u := e.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// Eject marks the host ejected until t.
func (e *Endpoint) Eject(until time.Time) { e.ejectedUntil.Store(until.UnixNano()) }

// Uneject clears an ejection.
func (e *Endpoint) Uneject() { e.ejectedUntil.Store(0) }

// EjectedUntil returns the ejection deadline, zero when not ejected.
func (e *Endpoint) EjectedUntil() time.Time {
	u := e.ejectedUntil.Load()
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(0, u)
}

// Available reports whether the host may receive traffic now.
func (e *Endpoint) Available(now time.Time) bool {
	return e.Healthy() && !e.Ejected(now)
}
