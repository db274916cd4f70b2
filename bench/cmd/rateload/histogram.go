package main

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout, after HdrHistogram: values below 2*subCount nanoseconds
// have a bucket each; above that every power-of-two range is split into
// subCount linear buckets, so a recorded value is off by less than
// 1/subCount (0.8%) at any magnitude while the whole table stays a fixed
// 60 KB that recording never allocates into.
const (
	subBits  = 7
	subCount = 1 << subBits
	// groups covers every uint64 value: bits.Len64 is at most 64.
	groups     = 64 - subBits
	numBuckets = 2*subCount + (groups-1)*subCount
)

// histogram records latencies in nanoseconds. It is not safe for concurrent
// use: each worker owns one and they are merged at the end.
type histogram struct {
	counts   [numBuckets]uint64
	total    uint64
	min, max uint64
	sum      float64
}

func bucketOf(v uint64) int {
	g := bits.Len64(v) - (subBits + 1)
	if g <= 0 {
		return int(v)
	}
	return 2*subCount + (g-1)*subCount + int(v>>g) - subCount
}

// bucketMax is the largest value that falls into bucket i: percentiles
// report it so that they never understate a latency.
func bucketMax(i int) uint64 {
	if i < 2*subCount {
		return uint64(i)
	}
	g := (i-2*subCount)/subCount + 1
	sub := uint64((i-2*subCount)%subCount + subCount)
	return (sub+1)<<g - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.total++
	h.sum += float64(v)
}

func (h *histogram) merge(o *histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// quantile returns the smallest recorded value v (to bucket precision) such
// that at least a fraction q of the samples are <= v. It is 0 when nothing
// was recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketMax(i), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}
