package listener

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what happens to connections before HTTP. Names are listed
// in docs/metrics.md.
type Metrics struct {
	handshakeErrors *prometheus.CounterVec
	conns           *prometheus.CounterVec
}

// NewMetrics registers the listener metric families on reg. Registering on
// a registry that already has them (a second runtime on one registry)
// shares the existing families.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		handshakeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_tls_handshake_errors_total",
			Help: "Downstream TLS handshakes refused or failed, by reason (expired, not_yet_valid, self_signed, trust_domain, san_mismatch, untrusted, no_client_cert, secret_missing, handshake)."},
			[]string{"listener", "reason"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_listener_connections_total",
			Help: "Connections handed to a filter chain, by transport (tls or plaintext); PERMISSIVE mTLS listeners count plaintext clients here."},
			[]string{"listener", "transport"}),
	}
	m.handshakeErrors = register(reg, m.handshakeErrors)
	m.conns = register(reg, m.conns)
	return m
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
	}
	return c
}

func (m *Metrics) handshakeError(listener, reason string) {
	if m != nil {
		m.handshakeErrors.WithLabelValues(listener, reason).Inc()
	}
}

func (m *Metrics) connection(listener string, tls bool) {
	if m == nil {
		return
	}
	t := "plaintext"
	if tls {
		t = "tls"
	}
	m.conns.WithLabelValues(listener, t).Inc()
}
