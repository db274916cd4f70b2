package loadmetrics

import (
	"math"
	"testing"
)

func TestBuckets(t *testing.T) {
	for i := range Buckets {
		got, ok := ParseBucket(BucketName(i))
		if !ok || got != i {
			t.Fatalf("bucket %d: name %q parses to %d %v", i, BucketName(i), got, ok)
		}
	}
	for _, bad := range []string{"omnirelay.latency_ms.le_3", "omnirelay.latency_ms.le_", "omnirelay.latency_ms.le_x", "other"} {
		if _, ok := ParseBucket(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
	tests := []struct {
		ms   float64
		want int
	}{{0, 0}, {0.5, 0}, {1, 1}, {1.5, 2}, {200, 8}, {251, 9}, {1e6, Buckets - 1}}
	for _, tc := range tests {
		if got := BucketOf(tc.ms); got != tc.want {
			t.Fatalf("BucketOf(%v) = %d, want %d", tc.ms, got, tc.want)
		}
	}
	if !math.IsInf(Bound(Buckets-1), 1) {
		t.Fatal("last bound is not +Inf")
	}
}

func TestQuantile(t *testing.T) {
	h := make([]uint64, Buckets)
	if _, ok := Quantile(h, 0.99); ok {
		t.Fatal("empty histogram answered")
	}
	h[BucketOf(3)] = 99  // (2.5, 5]
	h[BucketOf(210)] = 1 // (100, 250]
	if p50, _ := Quantile(h, 0.5); p50 <= 2.5 || p50 > 5 {
		t.Fatalf("p50 %v", p50)
	}
	if p99, _ := Quantile(h, 0.99); p99 > 5 {
		t.Fatalf("p99 %v, want within (2.5, 5]", p99)
	}
	if p100, _ := Quantile(h, 1); p100 <= 100 || p100 > 250 {
		t.Fatalf("p100 %v", p100)
	}
	h = make([]uint64, Buckets)
	h[Buckets-1] = 5
	if v, _ := Quantile(h, 0.99); v != Bound(Buckets-2) {
		t.Fatalf("overflow bucket answers %v", v)
	}
}
