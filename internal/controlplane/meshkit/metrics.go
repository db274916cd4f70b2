package meshkit

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are MeshKit's Prometheus series. A nil *metrics records nothing,
// so that a MeshKit built without a registry (tests, the load tool) pays
// no cost.
type metrics struct {
	streams      *prometheus.GaugeVec
	acks, nacks  *prometheus.CounterVec
	applies      *prometheus.CounterVec
	builds       prometheus.Counter
	buildSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, m *MeshKit) *metrics {
	if reg == nil {
		return nil
	}
	mt := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshkit_xds_streams",
			Help: "xDS streams open on this replica, by client kind (omnirelay, envoy, grpc)."}, []string{"kind"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshkit_xds_acks_total",
			Help: "xDS responses clients ACKed, by resource type."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshkit_xds_nacks_total",
			Help: "xDS responses clients NACKed, by resource type (omnictl get proxies shows each node's last NACK)."}, []string{"type"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshkit_config_applies_total",
			Help: "Desired-config applies on this replica, by result (ok, rejected)."}, []string{"result"}),
		builds: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshkit_snapshot_rebuilds_total",
			Help: "Rebuilds of every group's snapshots (after a config, registry or rollout change)."}),
		buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshkit_snapshot_rebuild_seconds",
			Help: "Time to rebuild, sign and publish every group's snapshots.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	groups := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshkit_snapshot_groups",
		Help: "Snapshot groups (capability set x canary bucket) built on this replica."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.groups))
	})
	reg.MustRegister(mt.streams, mt.acks, mt.nacks, mt.applies, mt.builds, mt.buildSeconds, groups)
	return mt
}

// shortType is the last element of a type URL (Cluster, Listener...).
func shortType(url string) string { return url[strings.LastIndexByte(url, '.')+1:] }

func (mt *metrics) stream(kind string, delta float64) {
	if mt != nil {
		mt.streams.WithLabelValues(kind).Add(delta)
	}
}

func (mt *metrics) ack(typeURL string, ok bool) {
	if mt == nil {
		return
	}
	if ok {
		mt.acks.WithLabelValues(shortType(typeURL)).Inc()
	} else {
		mt.nacks.WithLabelValues(shortType(typeURL)).Inc()
	}
}

func (mt *metrics) apply(err error) {
	if mt == nil {
		return
	}
	if err != nil {
		mt.applies.WithLabelValues("rejected").Inc()
	} else {
		mt.applies.WithLabelValues("ok").Inc()
	}
}

func (mt *metrics) rebuilt(start time.Time) {
	if mt != nil {
		mt.builds.Inc()
		mt.buildSeconds.Observe(time.Since(start).Seconds())
	}
}
