package circuit

import (
	"sync"
	"sync/atomic"
	"testing"
)

type kind struct {
	name    string
	acquire func(*Breaker) bool
	release func(*Breaker)
	limit   func(*Limits) *int64
	pick    func(requests, pending, connections, retries uint64) uint64
}

var kinds = []kind{
	{"requests", (*Breaker).TryAcquireRequest, (*Breaker).ReleaseRequest,
		func(l *Limits) *int64 { return &l.MaxRequests }, func(r, _, _, _ uint64) uint64 { return r }},
	{"pending", (*Breaker).TryAcquirePending, (*Breaker).ReleasePending,
		func(l *Limits) *int64 { return &l.MaxPending }, func(_, p, _, _ uint64) uint64 { return p }},
	{"connections", (*Breaker).TryAcquireConnection, (*Breaker).ReleaseConnection,
		func(l *Limits) *int64 { return &l.MaxConnections }, func(_, _, c, _ uint64) uint64 { return c }},
	{"retries", (*Breaker).TryAcquireRetry, (*Breaker).ReleaseRetry,
		func(l *Limits) *int64 { return &l.MaxRetries }, func(_, _, _, r uint64) uint64 { return r }},
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name  string
		limit int64
	}{
		{name: "zero admits nothing", limit: 0},
		{name: "one", limit: 1},
		{name: "three", limit: 3},
	}
	for _, k := range kinds {
		for _, tt := range tests {
			t.Run(k.name+"/"+tt.name, func(t *testing.T) {
				l := Limits{MaxConnections: Unlimited, MaxPending: Unlimited, MaxRequests: Unlimited, MaxRetries: Unlimited}
				*k.limit(&l) = tt.limit
				b := New(l)
				for i := range tt.limit {
					if !k.acquire(b) {
						t.Fatalf("acquire %d of %d failed", i+1, tt.limit)
					}
				}
				if k.acquire(b) {
					t.Fatalf("acquire past limit %d succeeded", tt.limit)
				}
				if got := k.pick(b.Overflows()); got != 1 {
					t.Fatalf("overflows = %d, want 1", got)
				}
				if tt.limit > 0 {
					k.release(b)
					if !k.acquire(b) {
						t.Fatal("acquire after release failed")
					}
				}
				// The other kinds are untouched.
				for _, o := range kinds {
					if o.name != k.name && o.pick(b.Overflows()) != 0 {
						t.Errorf("%s overflowed", o.name)
					}
				}
			})
		}
	}
}

func TestRetryBudget(t *testing.T) {
	tests := []struct {
		name          string
		percent       float64
		minConcurrent int64
		active        int
		pending       int
		wantRetries   int
	}{
		{name: "floor when idle", percent: 20, minConcurrent: 3, wantRetries: 3},
		{name: "percent of active", percent: 20, minConcurrent: 3, active: 50, wantRetries: 10},
		{name: "pending counts", percent: 20, minConcurrent: 3, active: 30, pending: 20, wantRetries: 10},
		{name: "floor above percent", percent: 10, minConcurrent: 5, active: 20, wantRetries: 5},
		{name: "rounds down", percent: 25, minConcurrent: 0, active: 7, wantRetries: 1},
		{name: "zero percent zero floor", percent: 0, minConcurrent: 0, active: 100, wantRetries: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(Limits{MaxRequests: Unlimited, MaxPending: Unlimited, MaxRetries: 1000,
				HasBudget: true, BudgetPercent: tt.percent, MinRetryConcurrency: tt.minConcurrent})
			for range tt.active {
				b.TryAcquireRequest()
			}
			for range tt.pending {
				b.TryAcquirePending()
			}
			got := 0
			for b.TryAcquireRetry() {
				got++
			}
			if got != tt.wantRetries {
				t.Fatalf("retries admitted = %d, want %d (budget replaces max_retries)", got, tt.wantRetries)
			}
		})
	}
}

func TestBudgetFollowsLoad(t *testing.T) {
	b := New(Limits{MaxRequests: Unlimited, MaxPending: Unlimited, HasBudget: true, BudgetPercent: 50, MinRetryConcurrency: 1})
	for range 10 {
		b.TryAcquireRequest()
	}
	for range 5 {
		if !b.TryAcquireRetry() {
			t.Fatal("retry within budget refused")
		}
	}
	if b.TryAcquireRetry() {
		t.Fatal("retry beyond 50% of 10 admitted")
	}
	for range 8 {
		b.ReleaseRequest()
	}
	// Load fell to 2: the five retries in flight keep going, new ones wait
	// until retries drop below max(1, 50% of 2).
	for range 4 {
		b.ReleaseRetry()
	}
	if b.TryAcquireRetry() {
		t.Fatal("retry admitted with 1 in flight and a budget of 1")
	}
	b.ReleaseRetry()
	if !b.TryAcquireRetry() {
		t.Fatal("retry refused with none in flight")
	}
}

func TestConcurrentNeverExceeds(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			const limit = 8
			l := DefaultLimits()
			*k.limit(&l) = limit
			b := New(l)
			var inUse, peak atomic.Int64
			var admitted atomic.Uint64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 5000 {
						if !k.acquire(b) {
							continue
						}
						admitted.Add(1)
						n := inUse.Add(1)
						for {
							p := peak.Load()
							if n <= p || peak.CompareAndSwap(p, n) {
								break
							}
						}
						inUse.Add(-1)
						k.release(b)
					}
				})
			}
			wg.Wait()
			if p := peak.Load(); p > limit {
				t.Fatalf("peak in use %d above limit %d", p, limit)
			}
			if admitted.Load()+k.pick(b.Overflows()) != 8*5000 {
				t.Fatalf("admitted %d + overflows %d != attempts", admitted.Load(), k.pick(b.Overflows()))
			}
			r, p, c, rt := b.Active()
			if r+p+c+rt != 0 {
				t.Fatalf("gauges not back to zero: %d %d %d %d", r, p, c, rt)
			}
		})
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	br := New(DefaultLimits())
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if br.TryAcquireRequest() {
				br.ReleaseRequest()
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if br.TryAcquireRequest() {
					br.ReleaseRequest()
				}
			}
		})
	})
	b.Run("retry budget", func(b *testing.B) {
		br := New(Limits{MaxRequests: Unlimited, MaxPending: Unlimited, HasBudget: true, BudgetPercent: 20, MinRetryConcurrency: 3})
		b.ReportAllocs()
		for b.Loop() {
			if br.TryAcquireRetry() {
				br.ReleaseRetry()
			}
		}
	})
}
