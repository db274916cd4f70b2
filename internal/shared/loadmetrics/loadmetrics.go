// Package loadmetrics is the contract between the OmniRelay proxies that
// send load reports (Envoy's LRS, envoy.service.load_stats.v3) and MeshKit,
// which reads them for rollout analysis: the names of the figures OmniRelay
// adds to the standard ClusterStats through
// UpstreamLocalityStats.load_metric_stats, and the latency histogram's
// bucket bounds. Envoy sends only the standard counters (requests issued,
// succeeded, failed); MeshKit reads those from either.
//
// The added figures, one EndpointLoadMetricStats each per locality:
//
//	omnirelay.latency_ms.le_<B>   requests that finished in (previous bound, B] ms:
//	                              num_requests_finished_with_metric = their count,
//	                              total_metric_value = the sum of their latencies in ms
//	omnirelay.latency_ms.le_inf   the ones slower than the last bound
//	omnirelay.errors.<class>      failed requests of a class (5xx, reset, timeout,
//	                              connect): num_requests_finished_with_metric
//
// Besides one ClusterStats per upstream cluster, an OmniRelay proxy sends
// one per listener, named ListenerPrefix + the listener's name with
// cluster_service_name ListenerService: the requests its clients saw
// (successful: status below 500) and their latency histogram. MeshKit
// judges a proxy by these when present (what the clients see, including
// answers the proxy made itself), else by the clusters' counters (Envoy).
package loadmetrics

import (
	"math"
	"strconv"
	"strings"
)

// Prefixes of the metric names.
const (
	LatencyPrefix = "omnirelay.latency_ms.le_"
	ErrorPrefix   = "omnirelay.errors."
)

// Error classes.
const (
	Class5xx     = "5xx"
	ClassReset   = "reset"
	ClassTimeout = "timeout"
	ClassConnect = "connect"
)

// The listener entries' names.
const (
	ListenerPrefix  = "omnirelay.listener/"
	ListenerService = "omnirelay.listener"
)

// bounds are the latency buckets' upper bounds in ms: those of the data
// plane's omnirelay_downstream_request_duration_seconds histogram, so that
// its buckets map one to one.
var bounds = [...]float64{0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// Buckets is the number of histogram buckets (the bounds and +Inf).
const Buckets = len(bounds) + 1

// Bound is bucket i's upper bound in ms (+Inf for the last).
func Bound(i int) float64 {
	if i >= len(bounds) {
		return math.Inf(1)
	}
	return bounds[i]
}

// BucketOf is the bucket of a latency in ms.
func BucketOf(ms float64) int {
	for i, b := range bounds {
		if ms <= b {
			return i
		}
	}
	return len(bounds)
}

// BucketName is bucket i's metric name.
func BucketName(i int) string {
	if i >= len(bounds) {
		return LatencyPrefix + "inf"
	}
	return LatencyPrefix + strconv.FormatFloat(bounds[i], 'f', -1, 64)
}

// ParseBucket is the bucket a metric name names; false if it names none.
func ParseBucket(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, LatencyPrefix)
	if !ok {
		return 0, false
	}
	if s == "inf" {
		return len(bounds), true
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	for i, b := range bounds {
		if b == v {
			return i, true
		}
	}
	return 0, false
}

// Quantile estimates quantile q (0..1) of a histogram of counts per bucket,
// in ms, interpolating inside the bucket it falls in (the last bucket
// answers its lower bound). ok is false for an empty histogram.
func Quantile(counts []uint64, q float64) (ms float64, ok bool) {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	var seen float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo := 0.0
			if i > 0 {
				lo = Bound(i - 1)
			}
			hi := Bound(i)
			if math.IsInf(hi, 1) {
				return lo, true
			}
			return lo + (hi-lo)*(rank-seen)/float64(c), true
		}
		seen += float64(c)
	}
	return Bound(len(bounds) - 1), true
}
