// Package cluster owns an upstream cluster as the router and TCP proxy use
// it: its endpoints, load balancer, circuit breaker, outlier detector,
// active health checker and connection pools, compiled from an xDS Cluster
// (and ClusterLoadAssignment for EDS).
//
// A Cluster value is immutable once built, except for the live state of its
// endpoints and components. On a config change a new Cluster is built that
// carries over the previous one's endpoints (health and ejection state) and,
// when the upstream connection settings are unchanged, its pools.
package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/circuit"
	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/health"
	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/outlier"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Protocol is the upstream HTTP protocol selection.
type Protocol uint8

const (
	// ProtocolAuto uses the downstream's protocol: HTTP/2 (incl. gRPC)
	// upstream as h2c (or h2 with TLS), HTTP/1.x as HTTP/1.1.
	ProtocolAuto Protocol = iota
	ProtocolHTTP1
	ProtocolHTTP2
)

// Cluster is one compiled upstream cluster.
type Cluster struct {
	Name      string
	Endpoints []*endpoint.Endpoint
	Protocol  Protocol
	Breaker   *circuit.Breaker
	Stats     *stats.Cluster
	md        *corev3.Metadata // the xDS cluster's metadata, read-only

	lb       lb.Balancer
	outlier  *outlier.Detector
	health   *health.Checker
	h1       *upstream.H1
	h2       *upstream.H2
	dial     upstream.Dialer
	tls      *tls.Config
	settings string // fingerprint of what the pools depend on
	log      *slog.Logger
}

// Pick returns an endpoint for a request, or nil when the cluster is empty.
func (c *Cluster) Pick(ctx *lb.Context) *endpoint.Endpoint { return c.lb.Pick(ctx) }

// Transport returns the pool for a request whose downstream is HTTP/2
// (downstreamH2) or HTTP/1.x.
func (c *Cluster) Transport(downstreamH2 bool) upstream.Transport {
	switch c.Protocol {
	case ProtocolHTTP1:
		return c.h1
	case ProtocolHTTP2:
		return c.h2
	}
	if downstreamH2 {
		return c.h2
	}
	return c.h1
}

// ReportStatus feeds an upstream response status to outlier detection.
func (c *Cluster) ReportStatus(ep *endpoint.Endpoint, status int) {
	if c.outlier != nil {
		c.outlier.Report(ep, outlier.Status(status))
	}
}

// ReportFailure feeds a failed attempt to metrics and outlier detection.
// An overflow is the proxy's own limit, not the host's fault: it counts for
// neither.
func (c *Cluster) ReportFailure(ep *endpoint.Endpoint, f upstream.Failure) {
	switch f {
	case upstream.FailConnect:
		c.Stats.ConnectFailure.Inc()
	case upstream.FailTimeout:
		c.Stats.Timeouts.Inc()
	case upstream.FailReset, upstream.FailRefused:
		c.Stats.Resets.Inc()
	default:
		return
	}
	if c.outlier != nil {
		c.outlier.Report(ep, outlier.Failed(f))
	}
}

// Connect opens a raw connection to a picked host (TCP proxy). The returned
// func releases the circuit-breaker slot.
func (c *Cluster) Connect(ctx context.Context) (net.Conn, func(), error) {
	ep := c.lb.Pick(&lb.Context{})
	if ep == nil {
		return nil, nil, fmt.Errorf("cluster %q: no healthy upstream", c.Name)
	}
	if !c.Breaker.TryAcquireConnection() {
		c.Stats.Overflow("connections")
		return nil, nil, fmt.Errorf("cluster %q: %w", c.Name, upstream.ErrOverflow)
	}
	ep.Active.Add(1)
	nc, err := c.dial(ctx, ep.Address)
	if err != nil {
		ep.Active.Add(-1)
		c.Breaker.ReleaseConnection()
		c.ReportFailure(ep, upstream.FailConnect)
		return nil, nil, err
	}
	if c.tls != nil {
		redial := func(ctx context.Context) (net.Conn, error) { return c.dial(ctx, ep.Address) }
		tc, err := secrets.HandshakeClient(ctx, nc, c.tls, redial)
		if err != nil {
			ep.Active.Add(-1)
			c.Breaker.ReleaseConnection()
			return nil, nil, fmt.Errorf("cluster %q: tls to %s: %w", c.Name, ep.Address, err)
		}
		nc = tc
	}
	return nc, func() { ep.Active.Add(-1); c.Breaker.ReleaseConnection() }, nil
}

// HealthStatus reports each endpoint's state for the admin endpoint.
type HealthStatus struct {
	Address  string    `json:"address"`
	Weight   uint32    `json:"weight"`
	Locality string    `json:"locality,omitempty"`
	Healthy  bool      `json:"healthy"`
	Ejected  bool      `json:"ejected"`
	Until    time.Time `json:"ejected_until,omitzero"`
	Active   int64     `json:"active_requests"`
	Total    uint64    `json:"total_requests"`
}

// Status lists endpoint states.
func (c *Cluster) Status() []HealthStatus {
	now := time.Now()
	out := make([]HealthStatus, 0, len(c.Endpoints))
	for _, e := range c.Endpoints {
		out = append(out, HealthStatus{Address: e.Address, Weight: e.Weight, Locality: e.Locality,
			Healthy: e.Healthy(), Ejected: e.Ejected(now), Until: e.EjectedUntil(), Active: e.Active.Load(), Total: e.Total.Load()})
	}
	return out
}

// Close stops the cluster's background work (health checks) and closes
// idle pooled connections. Connections in use close when released.
func (c *Cluster) Close() {
	if c.health != nil {
		c.health.Stop()
	}
	if c.outlier != nil {
		c.outlier.Stop()
	}
	c.h1.Close()
	c.h2.CloseIdle()
}

// Set is an immutable set of clusters, one config version.
type Set struct {
	byName map[string]*Cluster
}

// NewSet builds a set.
func NewSet(cs []*Cluster) *Set {
	s := &Set{byName: make(map[string]*Cluster, len(cs))}
	for _, c := range cs {
		s.byName[c.Name] = c
	}
	return s
}

// Get returns the named cluster or nil.
func (s *Set) Get(name string) *Cluster {
	if s == nil {
		return nil
	}
	return s.byName[name]
}

// All returns the clusters (unordered).
func (s *Set) All() []*Cluster {
	out := make([]*Cluster, 0, len(s.byName))
	for _, c := range s.byName {
		out = append(out, c)
	}
	return out
}

// Metadata is the cluster's metadata (Envoy's Cluster.metadata; Proxy-Wasm's
// cluster_metadata property), nil when it has none. Callers must not modify
// it.
func (c *Cluster) Metadata() *corev3.Metadata { return c.md }
