package loadstats

import (
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"

	"github.com/omnirelay/omnirelay/internal/shared/loadmetrics"
)

func TestFromRequest(t *testing.T) {
	req := &lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{{
		ClusterName:          "shop",
		TotalDroppedRequests: 2,
		UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{
			TotalSuccessfulRequests: 90, TotalErrorRequests: 8, TotalRequestsInProgress: 5,
			LoadMetricStats: []*endpointv3.EndpointLoadMetricStats{
				{MetricName: loadmetrics.BucketName(loadmetrics.BucketOf(4)), NumRequestsFinishedWithMetric: 990},
				{MetricName: loadmetrics.BucketName(loadmetrics.BucketOf(400)), NumRequestsFinishedWithMetric: 1},
				{MetricName: loadmetrics.ErrorPrefix + loadmetrics.Class5xx, NumRequestsFinishedWithMetric: 6},
				{MetricName: loadmetrics.ErrorPrefix + loadmetrics.ClassReset, NumRequestsFinishedWithMetric: 2},
				{MetricName: "cpu_utilization", NumRequestsFinishedWithMetric: 100},
			},
		}, {TotalSuccessfulRequests: 10}},
	}}}
	l := FromRequest(req)
	if l.Requests != 110 || l.Errors != 10 || l.Classes["5xx"] != 6 || l.Classes["reset"] != 2 || len(l.Classes) != 2 {
		t.Fatalf("load %+v", l)
	}
	if p99, ok := l.P99(); !ok || p99 > 5*time.Millisecond {
		t.Fatalf("p99 %v %v", p99, ok)
	}
	// Envoy: standard counters only.
	env := FromRequest(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{{UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{TotalSuccessfulRequests: 3, TotalErrorRequests: 1}}}}})
	if env.Requests != 4 || env.ErrorRate() != 0.25 {
		t.Fatalf("envoy load %+v", env)
	}
	if _, ok := env.P99(); ok {
		t.Fatal("p99 without latencies")
	}
}

func TestWindow(t *testing.T) {
	w := NewWindow(time.Minute)
	t0 := time.Now()
	w.Record(t0, 1, Canary, Load{Requests: 10, Errors: 1})
	w.Record(t0.Add(time.Second), 1, Stable, Load{Requests: 30})
	w.Record(t0.Add(2*time.Second), 2, Canary, Load{Requests: 5}) // another rollout
	w.Record(t0.Add(2*time.Second), 1, Canary, Load{})            // nothing: not kept
	c, s := w.Sum(1, t0.Add(-time.Second))
	if c.Requests != 10 || c.Errors != 1 || s.Requests != 30 {
		t.Fatalf("sum %+v %+v", c, s)
	}
	if c, _ := w.Sum(1, t0); c.Requests != 0 {
		t.Fatalf("since excludes the report at t0: %+v", c)
	}
	w.Record(t0.Add(2*time.Minute), 1, Canary, Load{Requests: 1})
	if c, s := w.Sum(1, t0.Add(-time.Hour)); c.Requests != 1 || s.Requests != 0 {
		t.Fatalf("retention: %+v %+v", c, s)
	}
}
