package lb

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// refreshInterval bounds how long a recovered host waits before it is back
// in rotation. Hosts going bad are skipped at once by the per-pick check, so
// this only delays good news; the refresh itself is O(hosts) and allocates
// only when availability changed.
const refreshInterval = 50 * time.Millisecond

// never is the next-check time of a view in which every host is available:
// nothing can recover, and a host going bad is caught by the per-pick check,
// so such a view is only re-checked when a pick marks it stale. That keeps
// the clock (about as costly as the rest of a pick) off the healthy path.
const never = math.MaxInt64

// clock reads the time at most once per pick, and only when needed.
type clock struct{ t time.Time }

func (c *clock) now() time.Time {
	if c.t.IsZero() {
		c.t = time.Now()
	}
	return c.t
}

// up is Endpoint.Available reading the clock only for an ejected host.
func up(e *endpoint.Endpoint, c *clock) bool {
	if !e.Healthy() {
		return false
	}
	u := e.EjectedUntil()
	return u.IsZero() || !c.now().Before(u)
}

// view is one availability snapshot of a pool. Immutable but for next.
type view[T any] struct {
	// eps is what the policy distributes over: the available hosts, or all
	// hosts in panic mode.
	eps   []*endpoint.Endpoint
	panic bool
	// data is the policy's table built over eps (weighted sequence, alias
	// table), or the zero T for policies that need none.
	data T
	// mask is the availability bitmap over pool.all the view was built
	// from, so a refresh that finds nothing changed reuses the view.
	mask []uint64
	// next is the unix-nano time after which the view must be re-checked:
	// 0 forces a check on the next pick, never waits for a stale mark.
	next atomic.Int64
}

// pool keeps the current view over an immutable host list. T is the
// per-view data a policy derives from the hosts it distributes over.
type pool[T any] struct {
	all   []*endpoint.Endpoint
	build func(eps []*endpoint.Endpoint) T // nil: no per-view data

	// panicPermille is Envoy's healthy_panic_threshold in thousandths:
	// with fewer available hosts than that the view spreads over all of
	// them (0 never panics). panicOff suspends it: a priority layer sets it
	// while the levels together have enough available hosts, as Envoy
	// disregards a level's threshold then.
	panicPermille uint32
	panicOff      atomic.Bool
	// gen counts the views built, so a priority layer sees from one load
	// that this pool's availability changed.
	gen atomic.Uint64

	cur atomic.Pointer[view[T]]
	// busy elects the one goroutine that refreshes; the others keep using
	// the current view rather than wait.
	busy    atomic.Bool
	scratch []uint64 // availability bitmap being computed; owned by the busy holder
}

func (p *pool[T]) init(all []*endpoint.Endpoint, build func([]*endpoint.Endpoint) T) {
	p.all = all
	p.build = build
	p.panicPermille = defaultPanicPermille
	p.scratch = make([]uint64, (len(all)+63)/64)
	p.busy.Store(true)
	p.refresh(nil, time.Now())
	p.busy.Store(false)
}

// get returns the view to pick from, refreshing it first when due and no
// other goroutine is already doing so.
func (p *pool[T]) get(c *clock) *view[T] {
	v := p.cur.Load()
	next := v.next.Load()
	if next == never || c.now().UnixNano() < next {
		return v
	}
	if p.busy.CompareAndSwap(false, true) {
		v = p.refresh(p.cur.Load(), c.now())
		p.busy.Store(false)
	}
	return v
}

// defaultPanicPermille is Envoy's default healthy_panic_threshold, 50%.
const defaultPanicPermille = 500

// setPanicThreshold sets healthy_panic_threshold (thousandths of the
// hosts; 0: never panic) and rebuilds the view. Called once, while the
// balancer is built.
func (p *pool[T]) setPanicThreshold(permille uint32) {
	p.busy.Store(true)
	p.panicPermille = permille
	p.cur.Store(nil)
	p.refresh(nil, time.Now())
	p.busy.Store(false)
}

// setPanicOff suspends or restores the panic threshold; the next pick
// rebuilds the view when it changed.
func (p *pool[T]) setPanicOff(off bool) {
	if p.panicOff.Swap(off) != off {
		if v := p.cur.Load(); v != nil {
			p.stale(v)
		}
	}
}

// stale asks for v to be re-checked on the next pick: a pick saw one of its
// hosts unavailable.
func (p *pool[T]) stale(v *view[T]) { v.next.Store(0) }

// refresh recomputes availability; the caller holds busy.
func (p *pool[T]) refresh(old *view[T], now time.Time) *view[T] {
	mask := p.scratch
	clear(mask)
	avail := 0
	nowNs := now.UnixNano()
	next := nowNs + int64(refreshInterval)
	for i, e := range p.all {
		if e.Available(now) {
			mask[i/64] |= 1 << (i % 64)
			avail++
			continue
		}
		// A healthy host that is only ejected comes back at a known time:
		// re-check then rather than up to refreshInterval later.
		if u := e.EjectedUntil(); e.Healthy() && !u.IsZero() {
			if un := u.UnixNano(); un > nowNs && un < next {
				next = un
			}
		}
	}
	if avail == len(p.all) {
		next = never
	}
	// Below healthy_panic_threshold (Envoy's default 50%), ignore health
	// and spread over every host.
	inPanic := !p.panicOff.Load() && uint64(avail)*1000 < uint64(p.panicPermille)*uint64(len(p.all))
	if old != nil && old.panic == inPanic && equalMask(old.mask, mask) {
		old.next.Store(next)
		return old
	}
	v := &view[T]{mask: append([]uint64(nil), mask...), panic: inPanic}
	if v.panic {
		v.eps = p.all
	} else {
		v.eps = make([]*endpoint.Endpoint, 0, avail)
		for i, e := range p.all {
			if mask[i/64]&(1<<(i%64)) != 0 {
				v.eps = append(v.eps, e)
			}
		}
	}
	if p.build != nil {
		v.data = p.build(v.eps)
	}
	v.next.Store(next)
	p.cur.Store(v)
	p.gen.Add(1)
	return v
}

// has reports whether the view was built with all[i] available.
func (v *view[T]) has(i uint32) bool { return v.mask[i/64]&(1<<(i%64)) != 0 }

// rescue is the last resort when every candidate a policy tried from v was
// unavailable at pick time (v is stale): any available host, scanning from
// a random start, or a random host when none is available.
func (p *pool[T]) rescue(v *view[T], c *clock) *endpoint.Endpoint {
	p.stale(v)
	n := len(p.all)
	start := randIndex(n)
	for i := range n {
		j := start + i
		if j >= n {
			j -= n
		}
		if e := p.all[j]; up(e, c) {
			return e
		}
	}
	return p.all[start]
}

func equalMask(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// randIndex returns a uniform index in [0, n) for n > 0 without a lock:
// math/rand/v2's top-level source is per-thread.
func randIndex(n int) int {
	return int((uint64(rand.Uint32()) * uint64(n)) >> 32)
}

// weightsDiffer reports whether eps need a weighted table.
func weightsDiffer(eps []*endpoint.Endpoint) bool {
	if len(eps) < 2 {
		return false
	}
	for _, e := range eps[1:] {
		if e.Weight != eps[0].Weight {
			return true
		}
	}
	return false
}

// weightOf is e's weight, at least 1 (an Endpoint built without New may
// carry 0).
func weightOf(e *endpoint.Endpoint) uint64 { return uint64(max(e.Weight, 1)) }
