// Package outlier owns passive outlier detection for a cluster, Envoy's
// algorithms: consecutive 5xx, consecutive gateway failures, success rate
// (hosts whose success rate falls below the cluster's mean by a stdev
// factor) and failure percentage (hosts whose failure share reaches a
// threshold), each enforced with a probability (Envoy's enforcing_*
// percentages); an ejection lasts a time that grows with each ejection,
// within a cap on how much of the cluster may be ejected at once.
//
// Report runs on the request path after every upstream attempt, from many
// goroutines: it touches only the reported host's atomic counters, found in
// a map that is rebuilt (not mutated) by Update. Only the rare report that
// reaches a threshold takes the detector's mutex, so that two hosts tripping
// at once cannot both slip under the ejection cap.
//
// Ejection is a deadline on the endpoint (Endpoint.Eject), which balancers
// compare with the clock, so unejection needs no timer, and a host's
// ejection multiplier drops by one for every Interval it has spent
// un-ejected, computed when it next trips. Only the success-rate and
// failure-percentage algorithms need Envoy's interval timer: they compare
// hosts over one interval's requests, so a detector with either runs one
// goroutine (Start/Stop) that evaluates them every Interval; with neither,
// Start does nothing.
package outlier

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Result is the outcome of one upstream attempt: an HTTP status code
// (Status), or a local-origin failure, the attempt got no response (Failed).
// As in Envoy with split_external_local_origin_errors off (its default),
// local-origin failures count as 5xx and as gateway failures.
type Result int

// Status wraps an HTTP response status code.
func Status(code int) Result { return Result(code) }

// Failed wraps a local-origin failure.
func Failed(f upstream.Failure) Result { return Result(-int(f)) }

func (r Result) String() string {
	if r < 0 {
		return upstream.Failure(-r).String()
	}
	return strconv.Itoa(int(r))
}

// failure reports whether r counts towards consecutive_5xx, and gateway
// whether it also counts towards consecutive_gateway_failure (502, 503,
// 504 and local-origin failures).
func (r Result) failure() (failure, gateway bool) {
	switch {
	case r < 0:
		return true, true
	case r == 502, r == 503, r == 504:
		return true, true
	case r >= 500 && r <= 599:
		return true, false
	}
	return false, false
}

// Ejection reasons passed to OnEject, named as Envoy's ejection stats.
const (
	ReasonConsecutive5xx            = "consecutive_5xx"
	ReasonConsecutiveGatewayFailure = "consecutive_gateway_failure"
	ReasonSuccessRate               = "success_rate"
	ReasonFailurePercentage         = "failure_percentage"
)

// Config is the detection policy. Zero fields take the defaults noted.
type Config struct {
	// Consecutive5xx ejects a host after this many 5xx (or local-origin
	// failures) in a row. Default 5.
	Consecutive5xx uint32
	// ConsecutiveGatewayFailure ejects a host after this many 502/503/504
	// (or local-origin failures) in a row. Default 0, off: Envoy's field
	// defaults to 5 but its enforcing_consecutive_gateway_failure defaults
	// to 0%, so out of the box it never ejects either. The config compiler
	// should pass 0 unless that enforcement is non-zero.
	ConsecutiveGatewayFailure uint32
	// BaseEjectionTime is multiplied by the host's ejection count. Default
	// 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps an ejection. Default 300s, and never below
	// BaseEjectionTime.
	MaxEjectionTime time.Duration
	// MaxEjectionPercent caps the share of the cluster ejected at once.
	// Default 10. As in Envoy, one host may always be ejected when none is,
	// whatever the percentage and cluster size.
	MaxEjectionPercent uint32
	// Interval is how long a host must stay un-ejected for its ejection
	// multiplier to drop by one, and the period over which the success
	// rate and failure percentage are computed. Default 10s.
	Interval time.Duration

	// EnforcingConsecutive5xx and EnforcingConsecutiveGatewayFailure are
	// the percent chance that a host that trips the threshold is ejected;
	// nil means 100. (Envoy's own default for the gateway one is 0: the
	// config compiler maps Envoy's defaults.)
	EnforcingConsecutive5xx            *uint32
	EnforcingConsecutiveGatewayFailure *uint32

	// SuccessRate and FailurePercentage turn on those algorithms; nil is
	// off.
	SuccessRate       *SuccessRate
	FailurePercentage *FailurePercentage
}

// SuccessRate is Envoy's success-rate outlier detection: every interval,
// among hosts with at least RequestVolume requests, and only when there
// are at least MinimumHosts of them, a host whose success rate is below
// mean - stdev*StdevFactor/1000 is ejected with probability Enforcing%.
type SuccessRate struct {
	MinimumHosts  uint32 // default 5
	RequestVolume uint32 // default 100
	StdevFactor   uint32 // default 1900 (1.9 standard deviations)
	Enforcing     uint32 // percent
}

// FailurePercentage is Envoy's failure-percentage outlier detection: every
// interval, among hosts with at least RequestVolume requests, and only when
// there are at least MinimumHosts of them, a host whose failures are
// Threshold% or more of its requests is ejected with probability
// Enforcing%.
type FailurePercentage struct {
	Threshold     uint32 // default 85
	MinimumHosts  uint32 // default 5
	RequestVolume uint32 // default 50
	Enforcing     uint32 // percent
}

func (c Config) withDefaults() Config {
	if c.Consecutive5xx == 0 {
		c.Consecutive5xx = 5
	}
	if c.BaseEjectionTime <= 0 {
		c.BaseEjectionTime = 30 * time.Second
	}
	if c.MaxEjectionTime <= 0 {
		c.MaxEjectionTime = 300 * time.Second
	}
	c.MaxEjectionTime = max(c.MaxEjectionTime, c.BaseEjectionTime)
	if c.MaxEjectionPercent == 0 {
		c.MaxEjectionPercent = 10
	}
	c.MaxEjectionPercent = min(c.MaxEjectionPercent, 100)
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if sr := c.SuccessRate; sr != nil {
		v := *sr
		v.MinimumHosts = def(v.MinimumHosts, 5)
		v.RequestVolume = def(v.RequestVolume, 100)
		v.StdevFactor = def(v.StdevFactor, 1900)
		c.SuccessRate = &v
	}
	if fp := c.FailurePercentage; fp != nil {
		v := *fp
		v.Threshold = min(def(v.Threshold, 85), 100)
		v.MinimumHosts = def(v.MinimumHosts, 5)
		v.RequestVolume = def(v.RequestVolume, 50)
		c.FailurePercentage = &v
	}
	return c
}

func def(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// enforced draws whether an ejection with this enforcement percentage
// happens (nil: always).
func enforced(pct *uint32) bool {
	if pct == nil || *pct >= 100 {
		return true
	}
	return rand.Uint32N(100) < *pct
}

// Detector counts per-host failures and ejects outliers.
type Detector struct {
	// OnEject, when set, is called after each ejection (outside the
	// detector's lock) for metrics and logs. Set it before the first
	// Report.
	OnEject func(ep *endpoint.Endpoint, reason string)

	cfg   Config
	clock func() time.Time
	hosts atomic.Pointer[hostSet]
	// mu serialises ejection decisions and Update; Report never takes it
	// unless a threshold is reached.
	mu sync.Mutex
	// counting is set when an interval algorithm needs per-host request
	// and failure counts.
	counting bool
	stop     chan struct{}
	done     chan struct{}
}

// hostSet is one immutable generation of the hosts being watched.
type hostSet struct {
	all    []*endpoint.Endpoint
	byHost map[*endpoint.Endpoint]*hostState
	byAddr map[string]*hostState
}

// hostState is one host's counters, carried across Update.
type hostState struct {
	consecutive5xx     atomic.Uint32
	consecutiveGateway atomic.Uint32
	// requests and failures count this interval's attempts (only when
	// an interval algorithm is on).
	requests, failures atomic.Uint64
	// lastUntil is the deadline of the host's latest ejection (unix nanos),
	// kept here because Endpoint.Uneject clears the endpoint's copy.
	lastUntil atomic.Int64
}

// New returns a detector watching no hosts; call Update with the cluster's
// endpoints. clock is time.Now outside tests.
func New(cfg Config, clock func() time.Time) *Detector {
	if clock == nil {
		clock = time.Now
	}
	d := &Detector{cfg: cfg.withDefaults(), clock: clock}
	d.counting = d.cfg.SuccessRate != nil || d.cfg.FailurePercentage != nil
	d.hosts.Store(&hostSet{})
	return d
}

// Start runs the interval algorithms (success rate, failure percentage)
// every Interval until Stop; without them it does nothing.
func (d *Detector) Start() {
	if !d.counting || d.stop != nil {
		return
	}
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.done)
		t := time.NewTicker(d.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				d.Evaluate()
			}
		}
	}()
}

// Stop ends what Start started and waits for it.
func (d *Detector) Stop() {
	if d.stop == nil {
		return
	}
	close(d.stop)
	<-d.done
	d.stop = nil
}

// Evaluate runs the interval algorithms over the counts since the last
// evaluation and starts a new interval. Start calls it every Interval.
func (d *Detector) Evaluate() {
	set := d.hosts.Load()
	type sample struct {
		ep       *endpoint.Endpoint
		hs       *hostState
		req, bad uint64
	}
	samples := make([]sample, 0, len(set.all))
	for _, e := range set.all {
		hs := set.byHost[e]
		req, bad := hs.requests.Swap(0), hs.failures.Swap(0)
		samples = append(samples, sample{e, hs, req, bad})
	}
	if sr := d.cfg.SuccessRate; sr != nil {
		var rates []float64
		for _, s := range samples {
			if s.req >= uint64(sr.RequestVolume) {
				rates = append(rates, 100*float64(s.req-s.bad)/float64(s.req))
			}
		}
		if len(rates) >= int(sr.MinimumHosts) {
			mean, sd := meanStdev(rates)
			limit := mean - sd*float64(sr.StdevFactor)/1000
			for _, s := range samples {
				if s.req < uint64(sr.RequestVolume) {
					continue
				}
				if rate := 100 * float64(s.req-s.bad) / float64(s.req); rate < limit && enforced(&sr.Enforcing) {
					d.trip(s.ep, s.hs, ReasonSuccessRate)
				}
			}
		}
	}
	if fp := d.cfg.FailurePercentage; fp != nil {
		n := 0
		for _, s := range samples {
			if s.req >= uint64(fp.RequestVolume) {
				n++
			}
		}
		if n >= int(fp.MinimumHosts) {
			for _, s := range samples {
				if s.req < uint64(fp.RequestVolume) {
					continue
				}
				if 100*s.bad >= uint64(fp.Threshold)*s.req && enforced(&fp.Enforcing) {
					d.trip(s.ep, s.hs, ReasonFailurePercentage)
				}
			}
		}
	}
}

func meanStdev(xs []float64) (mean, sd float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(xs)))
}

// Config returns the policy in force, defaults applied.
func (d *Detector) Config() Config { return d.cfg }

// Update sets the hosts to watch. Hosts that stay (the same *Endpoint, or a
// new one at the same address, as when only its weight changed) keep their
// counters; reports about hosts no longer watched are ignored.
func (d *Detector) Update(eps []*endpoint.Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.hosts.Load()
	set := &hostSet{
		all:    append([]*endpoint.Endpoint(nil), eps...),
		byHost: make(map[*endpoint.Endpoint]*hostState, len(eps)),
		byAddr: make(map[string]*hostState, len(eps)),
	}
	for _, e := range eps {
		hs := old.byHost[e]
		if hs == nil {
			hs = old.byAddr[e.Address]
		}
		if hs == nil {
			hs = &hostState{}
			if u := e.EjectedUntil(); !u.IsZero() {
				hs.lastUntil.Store(u.UnixNano())
			}
		}
		set.byHost[e] = hs
		set.byAddr[e.Address] = hs
	}
	d.hosts.Store(set)
}

// Report records the outcome of one attempt to ep. A success (any non-5xx
// status) resets ep's consecutive counters; a failure may eject ep.
func (d *Detector) Report(ep *endpoint.Endpoint, r Result) {
	hs := d.hosts.Load().byHost[ep]
	if hs == nil {
		return
	}
	failure, gateway := r.failure()
	if d.counting {
		hs.requests.Add(1)
		if failure {
			hs.failures.Add(1)
		}
	}
	if !failure {
		// Load first: on a healthy host the counters are already zero and
		// a plain load keeps the cache line shared between cores.
		if hs.consecutive5xx.Load() != 0 {
			hs.consecutive5xx.Store(0)
		}
		if hs.consecutiveGateway.Load() != 0 {
			hs.consecutiveGateway.Store(0)
		}
		return
	}
	if gateway {
		n := hs.consecutiveGateway.Add(1)
		if t := d.cfg.ConsecutiveGatewayFailure; t > 0 && n >= t {
			hs.consecutiveGateway.Store(0)
			if enforced(d.cfg.EnforcingConsecutiveGatewayFailure) {
				d.trip(ep, hs, ReasonConsecutiveGatewayFailure)
			}
		}
	} else if hs.consecutiveGateway.Load() != 0 {
		hs.consecutiveGateway.Store(0) // a 500 breaks a run of gateway failures
	}
	if n := hs.consecutive5xx.Add(1); n >= d.cfg.Consecutive5xx {
		hs.consecutive5xx.Store(0)
		if enforced(d.cfg.EnforcingConsecutive5xx) {
			d.trip(ep, hs, ReasonConsecutive5xx)
		}
	}
}

// trip ejects ep unless it already is, or the ejection cap forbids it. The
// host's counter restarts either way, as in Envoy.
func (d *Detector) trip(ep *endpoint.Endpoint, hs *hostState, reason string) {
	d.mu.Lock()
	now := d.clock()
	if ep.Ejected(now) {
		d.mu.Unlock()
		return
	}
	set := d.hosts.Load()
	ejected := 0
	for _, e := range set.all {
		if e.Ejected(now) {
			ejected++
		}
	}
	// Envoy: eject if the share after ejecting stays within the cap, or if
	// nothing is ejected yet.
	if ejected > 0 && uint64(ejected+1)*100 > uint64(d.cfg.MaxEjectionPercent)*uint64(len(set.all)) {
		d.mu.Unlock()
		return
	}
	count := ep.EjectionCount.Load()
	if last := hs.lastUntil.Load(); last != 0 && count > 0 {
		if idle := now.UnixNano() - last; idle > 0 {
			decay := uint64(idle / int64(d.cfg.Interval))
			count = uint32(uint64(count) - min(uint64(count), decay))
		}
	}
	count++
	ep.EjectionCount.Store(count)
	dur := d.cfg.MaxEjectionTime
	if count <= uint32(d.cfg.MaxEjectionTime/d.cfg.BaseEjectionTime) {
		dur = d.cfg.BaseEjectionTime * time.Duration(count)
	}
	until := now.Add(dur)
	ep.Eject(until)
	hs.lastUntil.Store(until.UnixNano())
	d.mu.Unlock()
	if d.OnEject != nil {
		d.OnEject(ep, reason)
	}
}
