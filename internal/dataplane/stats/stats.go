// Package stats owns the data plane's Prometheus metrics: one registry per
// process (never the global default registry) and pre-bound per-listener and
// per-cluster handles, so the request path increments counters without
// label lookups or allocation.
//
// Metric names are part of the operator interface and are listed in
// docs/metrics.md; change them only with a note.
package stats

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Stats holds every metric family.
type Stats struct {
	Registry *prometheus.Registry

	downReq      *prometheus.CounterVec
	downDur      *prometheus.HistogramVec
	upReq        *prometheus.CounterVec
	upRetry      *prometheus.CounterVec
	upTimeout    *prometheus.CounterVec
	upConnFail   *prometheus.CounterVec
	upReset      *prometheus.CounterVec
	upOverflow   *prometheus.CounterVec
	ejections    *prometheus.CounterVec
	epHealthy    *prometheus.GaugeVec
	tcpConns     *prometheus.CounterVec
	tcpBytes     *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	configInfo   *prometheus.GaugeVec
	filterEvents *prometheus.CounterVec

	mu        sync.Mutex
	listeners map[string]*Listener
	clusters  map[string]*Cluster
}

// New creates the registry with Go runtime and process collectors.
func New() *Stats {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Stats{
		Registry: r,
		downReq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_downstream_requests_total",
			Help: "Requests completed on a listener, by response status class."}, []string{"listener", "code_class"}),
		downDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "omnirelay_downstream_request_duration_seconds",
			Help:    "Time from request head to response end on a listener.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"listener"}),
		upReq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_requests_total",
			Help: "Upstream attempts that got a response, by status class."}, []string{"cluster", "code_class"}),
		upRetry: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_retries_total",
			Help: "Retries sent to a cluster."}, []string{"cluster"}),
		upTimeout: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_timeouts_total",
			Help: "Upstream attempts that timed out (per-try or whole request)."}, []string{"cluster"}),
		upConnFail: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_connect_failures_total",
			Help: "Connections to upstream hosts that failed."}, []string{"cluster"}),
		upReset: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_resets_total",
			Help: "Upstream connections or streams reset before a response."}, []string{"cluster"}),
		upOverflow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_upstream_overflow_total",
			Help: "Requests refused by a circuit breaker, by limit."}, []string{"cluster", "limit"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_outlier_ejections_total",
			Help: "Hosts ejected by outlier detection."}, []string{"cluster"}),
		epHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "omnirelay_endpoint_healthy",
			Help: "1 when the active health check passes for a host, else 0."}, []string{"cluster", "endpoint"}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_tcp_connections_total",
			Help: "TCP proxy connections, by outcome."}, []string{"listener", "cluster", "result"}),
		tcpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_tcp_bytes_total",
			Help: "Bytes proxied by TCP proxies, by direction."}, []string{"listener", "direction"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_config_reloads_total",
			Help: "Config versions offered to the data plane, by result (applied, rejected, unchanged)."}, []string{"result"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "omnirelay_config_info",
			Help: "1 for the config version now serving."}, []string{"version", "source"}),
		filterEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_filter_events_total",
			Help: "Events counted by HTTP filters (rate limited, fault injected, ...)."}, []string{"filter", "event"}),
		listeners: map[string]*Listener{},
		clusters:  map[string]*Cluster{},
	}
	r.MustRegister(s.downReq, s.downDur, s.upReq, s.upRetry, s.upTimeout, s.upConnFail, s.upReset, s.upOverflow,
		s.ejections, s.epHealthy, s.tcpConns, s.tcpBytes, s.reloads, s.configInfo, s.filterEvents)
	return s
}

// Listener holds pre-bound handles for one listener.
type Listener struct {
	byClass  [6]prometheus.Counter // index status/100 (0 = other)
	Duration prometheus.Observer
	s        *Stats
	name     string
}

// Listener returns the handles for a listener, creating them once.
func (s *Stats) Listener(name string) *Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[name]; l != nil {
		return l
	}
	l := &Listener{Duration: s.downDur.WithLabelValues(name), s: s, name: name}
	for i, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		l.byClass[i] = s.downReq.WithLabelValues(name, c)
	}
	s.listeners[name] = l
	return l
}

// Request counts a completed request with its status.
func (l *Listener) Request(status int) { l.byClass[classIndex(status)].Inc() }

// TCP records a TCP proxy connection.
func (l *Listener) TCP(cluster string, sent, recv int64, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	l.s.tcpConns.WithLabelValues(l.name, cluster, res).Inc()
	l.s.tcpBytes.WithLabelValues(l.name, "sent").Add(float64(sent))
	l.s.tcpBytes.WithLabelValues(l.name, "received").Add(float64(recv))
}

func classIndex(status int) int {
	if status >= 100 && status < 600 {
		return status / 100
	}
	return 0
}

// Cluster holds pre-bound handles for one cluster.
type Cluster struct {
	byClass        [6]prometheus.Counter
	Retries        prometheus.Counter
	Timeouts       prometheus.Counter
	ConnectFailure prometheus.Counter
	Resets         prometheus.Counter
	Ejections      prometheus.Counter
	overflow       *prometheus.CounterVec
	healthy        *prometheus.GaugeVec
	name           string
}

// Cluster returns the handles for a cluster, creating them once.
func (s *Stats) Cluster(name string) *Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clusters[name]; c != nil {
		return c
	}
	c := &Cluster{
		Retries:        s.upRetry.WithLabelValues(name),
		Timeouts:       s.upTimeout.WithLabelValues(name),
		ConnectFailure: s.upConnFail.WithLabelValues(name),
		Resets:         s.upReset.WithLabelValues(name),
		Ejections:      s.ejections.WithLabelValues(name),
		overflow:       s.upOverflow,
		healthy:        s.epHealthy,
		name:           name,
	}
	for i, cl := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		c.byClass[i] = s.upReq.WithLabelValues(name, cl)
	}
	s.clusters[name] = c
	return c
}

// Response counts an upstream response.
func (c *Cluster) Response(status int) { c.byClass[classIndex(status)].Inc() }

// Overflow counts a circuit-breaker refusal for limit ("requests",
// "pending", "connections", "retries").
func (c *Cluster) Overflow(limit string) { c.overflow.WithLabelValues(c.name, limit).Inc() }

// SetHealthy records an endpoint's health.
func (c *Cluster) SetHealthy(endpoint string, healthy bool) {
	v := 0.0
	if healthy {
		v = 1
	}
	c.healthy.WithLabelValues(c.name, endpoint).Set(v)
}

// Reload counts a config version offered (result: applied, rejected, unchanged).
func (s *Stats) Reload(result string) { s.reloads.WithLabelValues(result).Inc() }

// SetConfig records the version now serving.
func (s *Stats) SetConfig(version, source string) {
	s.configInfo.Reset()
	s.configInfo.WithLabelValues(version, source).Set(1)
}

// FilterCounter returns a counter for a filter event.
func (s *Stats) FilterCounter(filter, event string) prometheus.Counter {
	return s.filterEvents.WithLabelValues(filter, event)
}
