package stats

import "github.com/prometheus/client_golang/prometheus"

// XDS holds the metrics of the xDS config source (names in
// docs/operations.md). It is separate from Stats because only a proxy in
// xDS mode has it; omnirelay_config_source is set in every mode.
type XDS struct {
	connected prometheus.Gauge
	updates   *prometheus.CounterVec
	source    *prometheus.GaugeVec
}

// NewXDS registers the xDS metrics on s's registry.
func NewXDS(s *Stats) *XDS {
	x := &XDS{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_xds_connected",
			Help: "1 while the ADS stream to the control plane is up (it has answered), else 0."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_xds_updates_total",
			Help: "xDS responses answered, by type (lds, rds, cds, eds, sds) and result (ack, nack)."}, []string{"type", "result"}),
		source: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "omnirelay_config_source",
			Help: "1 for where the running config came from: xds, lkg (last-known-good) or file."}, []string{"source"}),
	}
	s.Registry.MustRegister(x.connected, x.updates, x.source)
	return x
}

// XDSConnected records the stream state.
func (x *XDS) XDSConnected(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	x.connected.Set(v)
}

// XDSUpdate counts an ACK or NACK.
func (x *XDS) XDSUpdate(typ, result string) { x.updates.WithLabelValues(typ, result).Inc() }

// SetSource records the running config's origin; the other sources read 0.
func (x *XDS) SetSource(source string) {
	for _, s := range []string{"xds", "lkg", "file"} {
		v := 0.0
		if s == source {
			v = 1
		}
		x.source.WithLabelValues(s).Set(v)
	}
}
