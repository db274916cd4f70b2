// Package lb owns upstream host selection for a cluster: the round_robin,
// least_request, random, ring_hash and maglev policies of Envoy, over an
// immutable list of *endpoint.Endpoint.
//
// A Balancer is built once per cluster version (off the request path) and
// then picked from concurrently by every request goroutine without locks.
// Hosts that are not Available (failed active health checks, or ejected by
// outlier detection) are skipped; when fewer than half of the hosts are
// available the balancer enters Envoy's panic mode and picks among all of
// them, so that a mass failure spreads load instead of crushing the
// survivors.
//
// Availability is read in two ways. Every picked host is checked at pick
// time, so a host that just went bad is skipped at once. Which hosts the
// policy distributes over (and whether we are in panic mode) comes from a
// view that is rebuilt lazily by whichever pick finds it due: when a pick
// met a host the view wrongly holds available, when the earliest outlier
// ejection expires, and, while some host is unavailable, refreshInterval
// after the previous check. So a host that recovers re-enters rotation
// within refreshInterval (50ms). A view in which every host is available has
// nothing to wait for, so healthy-path picks never read the clock (which
// costs more than the rest of a pick).
package lb

import (
	"errors"
	"fmt"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// Context carries what a pick may use. The router fills it once per request
// and reuses it across retries.
type Context struct {
	// Hash is the request's hash-policy value (a header, cookie or source
	// IP hashed with HashBytes), used by RingHash and Maglev.
	Hash uint64
	// HasHash is false when the route has no hash policy or none of its
	// inputs were present; hashing balancers then pick a random host.
	HasHash bool
}

// Balancer picks an endpoint for one request attempt.
//
// Pick is called concurrently from many goroutines and never blocks. It
// returns nil only when the balancer has no endpoints, or none available
// with panic mode disabled (healthy_panic_threshold 0). c may be nil.
type Balancer interface {
	Pick(c *Context) *endpoint.Endpoint
}

// Policy names a load-balancing algorithm.
type Policy int

const (
	RoundRobin Policy = iota
	LeastRequest
	Random
	RingHash
	Maglev
)

var policyNames = [...]struct{ short, envoy, ext string }{
	RoundRobin:   {"round_robin", "ROUND_ROBIN", "envoy.load_balancing_policies.round_robin"},
	LeastRequest: {"least_request", "LEAST_REQUEST", "envoy.load_balancing_policies.least_request"},
	Random:       {"random", "RANDOM", "envoy.load_balancing_policies.random"},
	RingHash:     {"ring_hash", "RING_HASH", "envoy.load_balancing_policies.ring_hash"},
	Maglev:       {"maglev", "MAGLEV", "envoy.load_balancing_policies.maglev"},
}

// String returns the policy's config name ("round_robin", ...).
func (p Policy) String() string {
	if p < 0 || int(p) >= len(policyNames) {
		return fmt.Sprintf("Policy(%d)", int(p))
	}
	return policyNames[p].short
}

// ParsePolicy accepts the OmniRelay config names ("round_robin",
// "least_request", "random", "ring_hash", "maglev"), Envoy's Cluster.LbPolicy
// enum names ("ROUND_ROBIN", ...) and the names of Envoy's
// load_balancing_policy extensions ("envoy.load_balancing_policies.maglev").
func ParsePolicy(s string) (Policy, error) {
	for p, n := range policyNames {
		if s == n.short || s == n.envoy || s == n.ext {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("lb policy %q is not supported (want one of round_robin, least_request, random, ring_hash, maglev)", s)
}

// Options tunes the policies; zero fields take Envoy's defaults.
type Options struct {
	// ChoiceCount is how many random hosts least_request compares
	// (power of two choices); default 2.
	ChoiceCount int
	// MinRingSize and MaxRingSize bound the ring_hash ring; defaults 1024
	// and 8M (Envoy's).
	MinRingSize, MaxRingSize uint64
	// MaglevTableSize is the Maglev lookup table size; it must be prime.
	// Default 65537.
	MaglevTableSize uint64
}

const (
	defaultChoiceCount  = 2
	defaultMinRingSize  = 1024
	defaultMaxRingSize  = 8 * 1024 * 1024
	maxRingSizeLimit    = 8 * 1024 * 1024 // Envoy rejects larger rings
	defaultMaglevSize   = 65537
	maxMaglevTableSize  = 5000011 // Envoy's upper bound
	maxWeightedSequence = 1 << 16
)

// New builds a balancer for eps. eps must not change afterwards (the
// endpoints' live counters may). It fails on invalid options, never on an
// empty list: an empty balancer picks nil.
func New(policy Policy, eps []*endpoint.Endpoint, opts Options) (Balancer, error) {
	for i, e := range eps {
		if e == nil {
			return nil, fmt.Errorf("endpoint %d is nil", i)
		}
	}
	switch policy {
	case RoundRobin:
		if len(eps) == 0 {
			return empty{}, nil
		}
		return newRoundRobin(eps), nil
	case LeastRequest:
		n := opts.ChoiceCount
		if n == 0 {
			n = defaultChoiceCount
		}
		if n < 2 {
			return nil, fmt.Errorf("least_request: choice_count %d: must be at least 2", n)
		}
		if len(eps) == 0 {
			return empty{}, nil
		}
		return newLeastRequest(eps, n), nil
	case Random:
		if len(eps) == 0 {
			return empty{}, nil
		}
		return newRandom(eps), nil
	case RingHash:
		lo, hi := opts.MinRingSize, opts.MaxRingSize
		if lo == 0 {
			lo = defaultMinRingSize
		}
		if hi == 0 {
			hi = defaultMaxRingSize
		}
		if hi > maxRingSizeLimit {
			return nil, fmt.Errorf("ring_hash: maximum_ring_size %d: must be at most %d", hi, maxRingSizeLimit)
		}
		if lo > hi {
			return nil, fmt.Errorf("ring_hash: minimum_ring_size %d is larger than maximum_ring_size %d", lo, hi)
		}
		if len(eps) == 0 {
			return empty{}, nil
		}
		return newRingHash(eps, lo, hi), nil
	case Maglev:
		m := opts.MaglevTableSize
		if m == 0 {
			m = defaultMaglevSize
		}
		if m > maxMaglevTableSize || !isPrime(m) {
			return nil, fmt.Errorf("maglev: table_size %d: must be a prime no larger than %d", m, maxMaglevTableSize)
		}
		if uint64(len(eps)) > m {
			return nil, fmt.Errorf("maglev: %d endpoints do not fit a table of size %d", len(eps), m)
		}
		if len(eps) == 0 {
			return empty{}, nil
		}
		return newMaglev(eps, m), nil
	}
	return nil, errors.New("lb: unknown policy " + policy.String())
}

// empty is the balancer of a cluster without endpoints (EDS not yet
// received, or every host removed).
type empty struct{}

func (empty) Pick(*Context) *endpoint.Endpoint { return nil }

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
