package ratelimit

import (
	"sync/atomic"
	"time"
)

// bucket is a lock-free token bucket. Its whole state is one uint64 (tokens
// in the high half, the fill tick last credited in the low half), updated
// with compare-and-swap, so a take is a load, some arithmetic and a CAS, and
// no goroutine or ticker refills it: each take credits the fills that
// elapsed since the last credited tick.
//
// Fills are discrete, as in Envoy: tokensPerFill arrive at every multiple of
// interval since the bucket was created, never more than max in total.
type bucket struct {
	state    atomic.Uint64
	max      uint32
	perFill  uint32
	interval time.Duration
	origin   time.Time // ticks count from here (monotonic when from time.Now)
}

func newBucket(max, perFill uint32, interval time.Duration, now time.Time) *bucket {
	b := &bucket{max: max, perFill: perFill, interval: interval, origin: now}
	b.state.Store(pack(max, 0))
	return b
}

func pack(tokens, tick uint32) uint64 { return uint64(tokens)<<32 | uint64(tick) }

func unpack(v uint64) (tokens, tick uint32) { return uint32(v >> 32), uint32(v) }

// tick returns the fill tick of now. It wraps after 2^32 intervals (over six
// years at the 50 ms minimum); refill uses modular differences, so a wrap is
// harmless unless the bucket sits idle for that long.
func (b *bucket) tick(now time.Time) uint32 {
	d := now.Sub(b.origin)
	if d < 0 {
		return 0
	}
	return uint32(d / b.interval)
}

// refill credits the fills between tick last and now.
func (b *bucket) refill(tokens, last, now uint32) uint32 {
	delta := now - last
	if delta == 0 || delta >= 1<<31 { // no fill yet, or a clock that went backwards
		return tokens
	}
	t := uint64(tokens) + uint64(delta)*uint64(b.perFill)
	if t > uint64(b.max) {
		return b.max
	}
	return uint32(t)
}

// take consumes one token and reports whether one was available.
func (b *bucket) take(now time.Time) bool {
	nt := b.tick(now)
	for {
		old := b.state.Load()
		tokens, last := unpack(old)
		if nt-last < 1<<31 { // never move the tick backwards
			tokens = b.refill(tokens, last, nt)
			last = nt
		}
		if tokens == 0 {
			return false
		}
		if b.state.CompareAndSwap(old, pack(tokens-1, last)) {
			return true
		}
	}
}

// remaining returns the tokens available at now without consuming any.
func (b *bucket) remaining(now time.Time) uint32 {
	tokens, last := unpack(b.state.Load())
	return b.refill(tokens, last, b.tick(now))
}

// untilNextFill returns how long until the next fill tick after now.
func (b *bucket) untilNextFill(now time.Time) time.Duration {
	d := now.Sub(b.origin)
	if d < 0 {
		return b.interval
	}
	return b.interval - d%b.interval
}
