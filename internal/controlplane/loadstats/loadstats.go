// Package loadstats keeps the load the proxies report to MeshKit over
// Envoy's LRS (envoy.service.load_stats.v3), summed by rollout side, for
// the rollout gates: requests, failures by class and a latency histogram
// (internal/shared/loadmetrics) over a sliding window. Each report is
// counted on the side its node was on when it arrived (canary or stable,
// as the caller decides); reports older than the retention are dropped.
package loadstats

import (
	"strings"
	"sync"
	"time"

	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"

	"github.com/omnirelay/omnirelay/internal/shared/loadmetrics"
)

// Side says which config a reporting proxy ran.
type Side int

// Sides.
const (
	Stable Side = iota
	Canary
)

// Load is what a set of reports adds up to.
type Load struct {
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// Classes counts the errors by class (loadmetrics.Class*), OmniRelay
	// reports only.
	Classes map[string]uint64 `json:"classes,omitempty"`
	// Latency is the histogram (loadmetrics buckets) of the requests that
	// reported one; empty from Envoy.
	Latency []uint64 `json:"latency,omitempty"`
}

// ErrorRate is Errors over Requests (0 without requests).
func (l Load) ErrorRate() float64 {
	if l.Requests == 0 {
		return 0
	}
	return float64(l.Errors) / float64(l.Requests)
}

// P99 is the 99th percentile latency; false without a histogram.
func (l Load) P99() (time.Duration, bool) {
	ms, ok := loadmetrics.Quantile(l.Latency, 0.99)
	return time.Duration(ms * float64(time.Millisecond)), ok
}

// Add sums o into l.
func (l *Load) Add(o Load) {
	l.Requests += o.Requests
	l.Errors += o.Errors
	for k, v := range o.Classes {
		if l.Classes == nil {
			l.Classes = map[string]uint64{}
		}
		l.Classes[k] += v
	}
	if len(o.Latency) > 0 {
		if l.Latency == nil {
			l.Latency = make([]uint64, loadmetrics.Buckets)
		}
		for i, v := range o.Latency {
			if i < len(l.Latency) {
				l.Latency[i] += v
			}
		}
	}
}

// FromRequest sums one LRS request: from an OmniRelay proxy its listener
// entries (what its clients saw: requests, failures, latencies) plus the
// error classes of its clusters; from Envoy the standard counters of its
// clusters (successful + error requests; requests in progress are not
// counted, dropped ones count as failed).
func FromRequest(req *lrsv3.LoadStatsRequest) Load {
	var listeners, clusters Load
	for _, cs := range req.GetClusterStats() {
		l := &clusters
		if cs.GetClusterServiceName() == loadmetrics.ListenerService && strings.HasPrefix(cs.GetClusterName(), loadmetrics.ListenerPrefix) {
			l = &listeners
		}
		for _, ls := range cs.GetUpstreamLocalityStats() {
			l.Requests += ls.GetTotalSuccessfulRequests() + ls.GetTotalErrorRequests()
			l.Errors += ls.GetTotalErrorRequests()
			for _, m := range ls.GetLoadMetricStats() {
				n := m.GetNumRequestsFinishedWithMetric()
				if b, ok := loadmetrics.ParseBucket(m.GetMetricName()); ok {
					if l.Latency == nil {
						l.Latency = make([]uint64, loadmetrics.Buckets)
					}
					l.Latency[b] += n
				} else if c, ok := strings.CutPrefix(m.GetMetricName(), loadmetrics.ErrorPrefix); ok && c != "" {
					if l.Classes == nil {
						l.Classes = map[string]uint64{}
					}
					l.Classes[c] += n
				}
			}
		}
		l.Requests += cs.GetTotalDroppedRequests()
		l.Errors += cs.GetTotalDroppedRequests()
	}
	if listeners.Requests == 0 {
		return clusters
	}
	for k, v := range clusters.Classes {
		if listeners.Classes == nil {
			listeners.Classes = map[string]uint64{}
		}
		listeners.Classes[k] += v
	}
	if listeners.Latency == nil {
		listeners.Latency = clusters.Latency
	}
	return listeners
}

type sample struct {
	at   time.Time
	side Side
	tag  int64 // what the caller counts reports for (a rollout id)
	load Load
}

// Window keeps recent reports. It is safe for concurrent use.
type Window struct {
	keep time.Duration

	mu      sync.Mutex
	samples []sample // in arrival order
}

// NewWindow keeps reports for keep.
func NewWindow(keep time.Duration) *Window { return &Window{keep: keep} }

// Record adds a report of side for tag, received at now.
func (w *Window) Record(now time.Time, tag int64, side Side, l Load) {
	if l.Requests == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, sample{at: now, side: side, tag: tag, load: l})
	w.trimLocked(now)
}

func (w *Window) trimLocked(now time.Time) {
	cut := 0
	for cut < len(w.samples) && now.Sub(w.samples[cut].at) > w.keep {
		cut++
	}
	if cut > 0 {
		w.samples = append(w.samples[:0], w.samples[cut:]...)
	}
}

// Sum is the load of tag's reports received after since, by side.
func (w *Window) Sum(tag int64, since time.Time) (canary, stable Load) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.samples {
		if s.tag != tag || !s.at.After(since) {
			continue
		}
		if s.side == Canary {
			canary.Add(s.load)
		} else {
			stable.Add(s.load)
		}
	}
	return canary, stable
}

// Bucket is the load of one side over one second (Unix time).
type Bucket struct {
	Sec  int64 `json:"sec"`
	Side Side  `json:"side"`
	Load Load  `json:"load"`
}

// Buckets is tag's reports received after since, summed per second and
// side, oldest first: the form in which a replica shares what it received.
func (w *Window) Buckets(tag int64, since time.Time) []Bucket {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Bucket
	index := map[[2]int64]int{}
	for _, s := range w.samples {
		if s.tag != tag || !s.at.After(since) {
			continue
		}
		k := [2]int64{s.at.Unix(), int64(s.side)}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, Bucket{Sec: k[0], Side: s.side})
		}
		out[i].Load.Add(s.load)
	}
	return out
}

// SumBuckets adds the buckets after since to canary and stable.
func SumBuckets(bs []Bucket, since time.Time, canary, stable *Load) {
	for _, b := range bs {
		if b.Sec <= since.Unix() {
			continue
		}
		if b.Side == Canary {
			canary.Add(b.Load)
		} else {
			stable.Add(b.Load)
		}
	}
}
