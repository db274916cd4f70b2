package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		v    uint64
	}{
		{"zero", 0},
		{"exact range end", 2*subCount - 1},
		{"first log bucket", 2 * subCount},
		{"microsecond", 1000},
		{"odd", 123457},
		{"second", uint64(time.Second)},
		{"max", ^uint64(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := bucketOf(tt.v)
			if i < 0 || i >= numBuckets {
				t.Fatalf("bucketOf(%d) = %d, outside [0,%d)", tt.v, i, numBuckets)
			}
			hi := bucketMax(i)
			if hi < tt.v {
				t.Fatalf("bucketMax(%d) = %d < value %d", i, hi, tt.v)
			}
			if tt.v > 0 && float64(hi-tt.v)/float64(tt.v) > 1.0/subCount {
				t.Fatalf("bucketMax(%d) = %d is more than 1/%d above %d", i, hi, subCount, tt.v)
			}
			if i > 0 && bucketMax(i-1) >= tt.v {
				t.Fatalf("previous bucket's max %d >= value %d", bucketMax(i-1), tt.v)
			}
		})
	}
}

func TestQuantileMatchesSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h histogram
	samples := make([]time.Duration, 10000)
	for i := range samples {
		// Log-uniform between 1µs and 100ms, like latencies.
		samples[i] = time.Duration(float64(time.Microsecond) * math.Pow(10, rng.Float64()*5))
		h.record(samples[i])
	}
	slices.Sort(samples)
	tests := []struct {
		name string
		q    float64
	}{
		{"p0", 0}, {"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}, {"p100", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rank := max(int(math.Ceil(tt.q*float64(len(samples)))), 1)
			want := samples[rank-1]
			got := h.quantile(tt.q)
			if got < want || float64(got-want)/float64(want) > 1.0/subCount {
				t.Fatalf("quantile(%v) = %v, want %v within %.2f%% above", tt.q, got, want, 100.0/subCount)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	var a, b, all histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	var empty histogram
	a.merge(&b)
	a.merge(&empty)
	if a != all {
		t.Fatalf("merged histogram differs: total %d/%d min %d/%d max %d/%d", a.total, all.total, a.min, all.min, a.max, all.max)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h histogram
	b.ReportAllocs()
	d := time.Duration(0)
	for b.Loop() {
		d += 977
		h.record(d % time.Second)
	}
}
