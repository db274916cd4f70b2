// Package loadreport sends the proxy's load to its control plane over
// Envoy's Load Reporting Service (envoy.service.load_stats.v3), for
// MeshKit's rollout analysis. It reads the data plane's existing
// Prometheus counters (internal/dataplane/stats) at every interval the
// server asks for and sends what changed: per upstream cluster the
// requests that got a response (5xx counted as errors) and the attempts
// that timed out, were reset or failed to connect; per listener the
// requests its clients saw and their latency histogram. The figures beyond
// LRS's standard counters are named in internal/shared/loadmetrics.
// Nothing is added to the request path.
package loadreport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/shared/loadmetrics"
)

// Options configures a Reporter.
type Options struct {
	// Address is the control plane's address, or several comma-separated
	// (tried in turn, as the xDS client does).
	Address string
	// TLS, when set, secures the connection (cloned per dial).
	TLS *tls.Config
	// Node identifies the proxy (the same Node as its xDS stream).
	Node *corev3.Node
	// Gatherer reads the data plane's metrics (stats.Stats.Registry).
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// Retry is the wait after a failed stream (default 1s, doubled up to
	// 30s); a server without LRS (Unimplemented) is asked again after
	// 5 minutes.
	Retry time.Duration
}

// Reporter streams load reports until its context ends.
type Reporter struct {
	opt  Options
	prev snapshot
}

// New returns a Reporter; Run starts it.
func New(opt Options) *Reporter {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Retry <= 0 {
		opt.Retry = time.Second
	}
	return &Reporter{opt: opt}
}

const (
	maxRetry       = 30 * time.Second
	unimplWait     = 5 * time.Minute
	minInterval    = 100 * time.Millisecond
	defaultInteral = 10 * time.Second
)

// Run reports until ctx ends; it returns nil then.
func (r *Reporter) Run(ctx context.Context) error {
	addrs := strings.Split(r.opt.Address, ",")
	wait := r.opt.Retry
	for i := 0; ctx.Err() == nil; i++ {
		addr := strings.TrimSpace(addrs[i%len(addrs)])
		sent, err := r.stream(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if sent {
			wait = r.opt.Retry
		}
		d := wait
		if status.Code(err) == codes.Unimplemented {
			d = unimplWait
			r.opt.Log.Info("control plane takes no load reports; asking again later", "xds", addr, "retry", d.String())
		} else {
			r.opt.Log.Debug("load report stream ended", "xds", addr, "error", err, "retry", d.String())
			wait = min(wait*2, maxRetry)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// stream runs one LRS stream; sent reports whether a report went out.
func (r *Reporter) stream(ctx context.Context, addr string) (sent bool, err error) {
	creds := insecure.NewCredentials()
	if r.opt.TLS != nil {
		creds = credentials.NewTLS(r.opt.TLS.Clone())
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return false, fmt.Errorf("lrs: dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: r.opt.Node}); err != nil {
		return false, err
	}
	resp, err := st.Recv()
	if err != nil {
		return false, err
	}
	// The server may send a new answer at any time (other clusters, another
	// interval): a receiver goroutine hands them over.
	answers := make(chan *lrsv3.LoadStatsResponse, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			a, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case answers <- a:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Counters are cumulative: the first report covers what was counted
	// since this stream began, not since the process did.
	r.prev = r.read()
	last := time.Now()
	for {
		iv := interval(resp.GetLoadReportingInterval())
		t := time.NewTimer(iv)
		select {
		case <-ctx.Done():
			t.Stop()
			return sent, nil
		case err := <-recvErr:
			t.Stop()
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return sent, err
		case resp = <-answers:
			t.Stop()
			continue
		case now := <-t.C:
			cur := r.read()
			req := &lrsv3.LoadStatsRequest{ClusterStats: cur.since(r.prev, clusterFilter(resp), durationpb.New(now.Sub(last)))}
			r.prev, last = cur, now
			if err := st.Send(req); err != nil {
				return sent, err
			}
			sent = true
		}
	}
}

func interval(d *durationpb.Duration) time.Duration {
	if d == nil {
		return defaultInteral
	}
	return max(d.AsDuration(), minInterval)
}

// clusterFilter is the server's choice of clusters (nil: all of them).
func clusterFilter(resp *lrsv3.LoadStatsResponse) map[string]bool {
	if resp.GetSendAllClusters() {
		return nil
	}
	m := map[string]bool{}
	for _, c := range resp.GetClusters() {
		m[c] = true
	}
	return m
}

// counts is one cluster's or listener's cumulative figures.
type counts struct {
	ok, failed uint64
	classes    map[string]uint64
	// latency is the cumulative count per loadmetrics bucket, and the sum
	// of the latencies in ms (listeners).
	latency []uint64
	sumMS   float64
}

// snapshot is every cluster's and listener's cumulative figures at once.
type snapshot struct {
	clusters, listeners map[string]*counts
}

// read gathers the metrics; a gather error reads as no figures (logged).
func (r *Reporter) read() snapshot {
	s := snapshot{clusters: map[string]*counts{}, listeners: map[string]*counts{}}
	fams, err := r.opt.Gatherer.Gather()
	if err != nil {
		r.opt.Log.Warn("metrics not gathered for the load report", "error", err)
	}
	get := func(m map[string]*counts, k string) *counts {
		c := m[k]
		if c == nil {
			c = &counts{classes: map[string]uint64{}}
			m[k] = c
		}
		return c
	}
	for _, f := range fams {
		switch f.GetName() {
		case "omnirelay_upstream_requests_total":
			for _, m := range f.GetMetric() {
				c := get(s.clusters, label(m, "cluster"))
				n := uint64(m.GetCounter().GetValue())
				if label(m, "code_class") == "5xx" {
					c.failed += n
					c.classes[loadmetrics.Class5xx] += n
				} else {
					c.ok += n
				}
			}
		case "omnirelay_upstream_timeouts_total", "omnirelay_upstream_resets_total", "omnirelay_upstream_connect_failures_total":
			class := map[string]string{"omnirelay_upstream_timeouts_total": loadmetrics.ClassTimeout,
				"omnirelay_upstream_resets_total": loadmetrics.ClassReset, "omnirelay_upstream_connect_failures_total": loadmetrics.ClassConnect}[f.GetName()]
			for _, m := range f.GetMetric() {
				c := get(s.clusters, label(m, "cluster"))
				n := uint64(m.GetCounter().GetValue())
				c.failed += n
				c.classes[class] += n
			}
		case "omnirelay_downstream_requests_total":
			for _, m := range f.GetMetric() {
				c := get(s.listeners, label(m, "listener"))
				n := uint64(m.GetCounter().GetValue())
				if label(m, "code_class") == "5xx" {
					c.failed += n
				} else {
					c.ok += n
				}
			}
		case "omnirelay_downstream_request_duration_seconds":
			for _, m := range f.GetMetric() {
				c := get(s.listeners, label(m, "listener"))
				c.latency = make([]uint64, loadmetrics.Buckets)
				h := m.GetHistogram()
				var below uint64
				for _, b := range h.GetBucket() {
					cum := b.GetCumulativeCount()
					c.latency[loadmetrics.BucketOf(b.GetUpperBound()*1000)] += cum - below
					below = cum
				}
				c.latency[loadmetrics.Buckets-1] += h.GetSampleCount() - below
				c.sumMS = h.GetSampleSum() * 1000
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// since is the report of what changed from prev to s (counters that went
// down, after a reload re-created them, count from zero).
func (s snapshot) since(prev snapshot, only map[string]bool, iv *durationpb.Duration) []*endpointv3.ClusterStats {
	var out []*endpointv3.ClusterStats
	delta := func(cur, old uint64) uint64 {
		if cur < old {
			return cur
		}
		return cur - old
	}
	for name, c := range s.clusters {
		if only != nil && !only[name] {
			continue
		}
		p := prev.clusters[name]
		if p == nil {
			p = &counts{}
		}
		ls := &endpointv3.UpstreamLocalityStats{TotalSuccessfulRequests: delta(c.ok, p.ok), TotalErrorRequests: delta(c.failed, p.failed)}
		for class, n := range c.classes {
			if d := delta(n, p.classes[class]); d > 0 {
				ls.LoadMetricStats = append(ls.LoadMetricStats, &endpointv3.EndpointLoadMetricStats{MetricName: loadmetrics.ErrorPrefix + class, NumRequestsFinishedWithMetric: d})
			}
		}
		if ls.TotalSuccessfulRequests+ls.TotalErrorRequests == 0 {
			continue
		}
		out = append(out, &endpointv3.ClusterStats{ClusterName: name, UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{ls}, LoadReportInterval: iv})
	}
	for name, c := range s.listeners {
		p := prev.listeners[name]
		if p == nil {
			p = &counts{}
		}
		ls := &endpointv3.UpstreamLocalityStats{TotalSuccessfulRequests: delta(c.ok, p.ok), TotalErrorRequests: delta(c.failed, p.failed)}
		if ls.TotalSuccessfulRequests+ls.TotalErrorRequests == 0 {
			continue
		}
		var total uint64
		for i, n := range c.latency {
			var old uint64
			if i < len(p.latency) {
				old = p.latency[i]
			}
			if d := delta(n, old); d > 0 {
				total += d
				ls.LoadMetricStats = append(ls.LoadMetricStats, &endpointv3.EndpointLoadMetricStats{MetricName: loadmetrics.BucketName(i), NumRequestsFinishedWithMetric: d})
			}
		}
		// The sum of latencies is known per listener, not per bucket: it
		// goes with the first bucket's entry.
		if total > 0 && len(ls.LoadMetricStats) > 0 {
			ls.LoadMetricStats[0].TotalMetricValue = math.Max(c.sumMS-p.sumMS, 0)
		}
		out = append(out, &endpointv3.ClusterStats{ClusterName: loadmetrics.ListenerPrefix + name, ClusterServiceName: loadmetrics.ListenerService,
			UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{ls}, LoadReportInterval: iv})
	}
	return out
}
