package dnsresolve

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// WatchOptions are a DNS cluster's resolution settings (Envoy's Cluster
// fields of the same names).
type WatchOptions struct {
	Family Family
	// RefreshRate is dns_refresh_rate (default 5s).
	RefreshRate time.Duration
	// RespectTTL is respect_dns_ttl: refresh when the records' TTL runs
	// out instead of every RefreshRate.
	RespectTTL bool
	// FailureBase and FailureMax bound the retry delay after a failed
	// resolution (dns_failure_refresh_rate; default RefreshRate and ten
	// times it), with jitter as Envoy's.
	FailureBase, FailureMax time.Duration
	Log                     *slog.Logger
}

// Watch resolves name until ctx ends, calling update (from Watch's
// goroutine) with every changed address set; the first call comes after
// the first successful resolution. A failed resolution keeps the last set.
func (r *Resolver) Watch(ctx context.Context, name string, o WatchOptions, update func([]netip.Addr)) {
	if o.RefreshRate <= 0 {
		o.RefreshRate = 5 * time.Second
	}
	if o.FailureBase <= 0 {
		o.FailureBase = o.RefreshRate
	}
	if o.FailureMax < o.FailureBase {
		o.FailureMax = 10 * o.FailureBase
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	var cur []netip.Addr
	failures := 0
	for {
		a, err := r.Resolve(ctx, name, o.Family)
		next := o.RefreshRate
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			next = min(o.FailureBase<<min(failures-1, 16), o.FailureMax)
			next = next/2 + time.Duration(rand64(uint64(next/2)+1))
			log.Warn("dns: resolution failed; keeping the last addresses", "name", name, "error", err, "retry_in", next, "addresses", len(cur))
		default:
			failures = 0
			if o.RespectTTL && a.TTL > 0 {
				next = a.TTL
			}
			if cur == nil || !slices.Equal(a.Addrs, cur) {
				cur = a.Addrs
				update(slices.Clone(cur))
			}
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
