package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

func (v *validator) cluster(c *Cluster, p string) {
	v.metadata(c.Metadata, p+".metadata")
	v.clusterMTLS(c, p+".mtls")
	lb := c.EffectiveLB()
	switch lb {
	case LBRoundRobin, LBLeastRequest, LBRandom, LBRingHash, LBMaglev:
	default:
		v.errf(p+".lb", "unknown lb policy %q (want round_robin, least_request, random, ring_hash or maglev)", c.LB)
	}
	if c.Service != "" {
		if err := checkServiceName(c.Service); err != nil {
			v.errf(p+".service", "invalid service name %q: %v", c.Service, err)
		}
	}
	if len(c.Endpoints) == 0 && !c.UsesEDS() {
		v.errf(p+".endpoints", "a cluster needs at least one endpoint (or eds: true, or a service)")
	}
	seen := map[string]int{}
	for i, e := range c.Endpoints {
		ep := idx(p+".endpoints", i)
		isIP, err := checkUpstreamAddress(e.Address)
		switch {
		case e.Address == "":
			v.errf(ep, "address is required")
			continue
		case err != nil:
			v.errf(ep, "invalid address %q: %v", e.Address, err)
			continue
		case c.UsesEDS() && !isIP:
			v.errf(ep, "eds endpoints must be IP addresses, not %q", e.Address)
		}
		switch e.Health {
		case "", HealthHealthy, HealthUnhealthy, HealthDraining:
		default:
			v.errf(ep+".health", "unknown health %q (want healthy, unhealthy or draining)", e.Health)
		}
		if j, dup := seen[e.Address]; dup {
			v.errf(ep, "endpoint %s is listed twice (also endpoints[%d])", e.Address, j)
		}
		seen[e.Address] = i
		if e.Priority > 127 {
			v.errf(ep+".priority", "priority %d is more than 127", e.Priority)
		}
	}
	if c.ConnectTimeout != nil && *c.ConnectTimeout <= 0 {
		v.errf(p+".connect_timeout", "must be greater than 0")
	}

	proto := c.EffectiveProtocol()
	switch proto {
	case UpstreamAuto, UpstreamHTTP1, UpstreamH2C, UpstreamH2:
	default:
		v.errf(p+".protocol", "unknown protocol %q (want auto, http1, h2c or h2)", c.Protocol)
	}
	if proto == UpstreamH2C && c.TLS != nil {
		v.errf(p+".tls", "h2c is cleartext HTTP/2; use protocol: h2 for HTTP/2 over TLS")
	}
	if c.TLS != nil {
		v.upstreamTLS(c.TLS, p+".tls")
	}
	if c.HealthCheck != nil {
		v.healthCheck(c.HealthCheck, p+".health_check")
	}
	if cb := c.CircuitBreaker; cb != nil {
		v.atLeastOne(p+".circuit_breaker.max_connections", cb.MaxConnections)
		v.atLeastOne(p+".circuit_breaker.max_pending", cb.MaxPending)
		v.atLeastOne(p+".circuit_breaker.max_requests", cb.MaxRequests)
		v.atLeastOne(p+".circuit_breaker.max_retries", cb.MaxRetries)
	}
	if od := c.OutlierDetection; od != nil {
		op := p + ".outlier_detection"
		v.atLeastOne(op+".consecutive_5xx", od.Consecutive5xx)
		v.atLeastOne(op+".consecutive_gateway_failure", od.ConsecutiveGatewayFailure)
		v.positive(op+".interval", od.Interval)
		v.positive(op+".base_ejection_time", od.BaseEjectionTime)
		v.percent(op+".max_ejection_percent", od.MaxEjectionPercent)
		v.percent(op+".enforcing_consecutive_5xx", od.EnforcingConsecutive5xx)
		if sr := od.SuccessRate; sr != nil {
			v.atLeastOne(op+".success_rate.minimum_hosts", sr.MinimumHosts)
			v.atLeastOne(op+".success_rate.request_volume", sr.RequestVolume)
			v.atLeastOne(op+".success_rate.stdev_factor", sr.StdevFactor)
			v.percent(op+".success_rate.enforcing", sr.Enforcing)
		}
		if fp := od.FailurePercentage; fp != nil {
			v.percent(op+".failure_percentage.threshold", fp.Threshold)
			v.atLeastOne(op+".failure_percentage.minimum_hosts", fp.MinimumHosts)
			v.atLeastOne(op+".failure_percentage.request_volume", fp.RequestVolume)
			v.percent(op+".failure_percentage.enforcing", fp.Enforcing)
		}
	}
	if rb := c.RetryBudget; rb != nil {
		if rb.Percent != nil && (*rb.Percent <= 0 || *rb.Percent > 100) {
			v.errf(p+".retry_budget.percent", "percent %g is not in (0, 100]", *rb.Percent)
		}
	}
	if c.RingHash != nil {
		if lb != LBRingHash {
			v.errf(p+".ring_hash", "only valid with lb: ring_hash")
		}
		if n := c.RingHash.MinimumRingSize; n != 0 && n > 8_388_608 {
			v.errf(p+".ring_hash.minimum_ring_size", "minimum_ring_size %d is more than 8388608", n)
		}
	}
	if c.Maglev != nil {
		if lb != LBMaglev {
			v.errf(p+".maglev", "only valid with lb: maglev")
		}
		if n := c.Maglev.TableSize; n != 0 && (n > 5_000_011 || !isPrime(n)) {
			v.errf(p+".maglev.table_size", "table_size %d must be a prime number up to 5000011", n)
		}
	}
}

// checkServiceName accepts registry service names: 1 to 253 characters,
// ASCII letters, digits, '.', '-' and '_', starting and ending with a letter
// or digit. They end up in keys and metric labels, hence the small alphabet.
func checkServiceName(s string) error {
	if len(s) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' }
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !alnum(b) && b != '.' && b != '-' && b != '_' {
			return fmt.Errorf("character %q at offset %d is not a letter, digit, '.', '-' or '_'", b, i)
		}
	}
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return fmt.Errorf("must start and end with a letter or digit")
	}
	return nil
}

func (v *validator) atLeastOne(p string, n *uint32) {
	if n != nil && *n < 1 {
		v.errf(p, "must be at least 1")
	}
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func (v *validator) healthCheck(h *HealthCheck, p string) {
	kinds := 0
	for _, set := range []bool{h.HTTP != nil, h.TCP != nil, h.GRPC != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		v.errf(p, "a health check needs exactly one of http, tcp, grpc (found %d; write tcp: {} for a plain connect check)", kinds)
	}
	if hh := h.HTTP; hh != nil {
		if hh.Path == "" {
			v.errf(p+".http.path", "path is required")
		} else if !strings.HasPrefix(hh.Path, "/") {
			v.errf(p+".http.path", "path %q must start with /", hh.Path)
		}
		v.headerValue(p+".http.path", hh.Path)
		v.headerValue(p+".http.host", hh.Host)
		for i, s := range hh.ExpectedStatuses {
			if s < 100 || s > 599 {
				v.errf(idx(p+".http.expected_statuses", i), "status %d is not in 100-599", s)
			}
		}
	}
	v.positive(p+".interval", h.Interval)
	v.positive(p+".timeout", h.Timeout)
	v.atLeastOne(p+".unhealthy_threshold", h.UnhealthyThreshold)
	v.atLeastOne(p+".healthy_threshold", h.HealthyThreshold)
}

func (v *validator) upstreamTLS(t *UpstreamTLS, p string) {
	if t.InsecureSkipVerify && t.CAFile != "" {
		v.errf(p+".insecure_skip_verify", "use ca_file or insecure_skip_verify, not both")
	}
	if t.SNI != "" && !isDNSName(t.SNI) {
		v.errf(p+".sni", "invalid server name %q", t.SNI)
	}
	v.keyPair(p, t.CertFile, t.KeyFile, false)
	if t.CAFile != "" && !v.src.skipFiles() {
		pem, err := os.ReadFile(v.c.FilePath(t.CAFile))
		if err != nil {
			v.errf(p+".ca_file", "cannot read CA file: %v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.errf(p+".ca_file", "no PEM certificate found in %s", t.CAFile)
		}
	}
}

// keyPair checks a certificate/key pair: both files named (or, when not
// required, neither) and loadable together.
func (v *validator) keyPair(p, certFile, keyFile string, required bool) {
	switch {
	case certFile == "" && keyFile == "":
		if required {
			v.errf(p+".cert_file", "cert_file and key_file are required")
		}
		return
	case certFile == "":
		v.errf(p+".cert_file", "cert_file is required with key_file")
		return
	case keyFile == "":
		v.errf(p+".key_file", "key_file is required with cert_file")
		return
	}
	if v.src.skipFiles() {
		return
	}
	if _, err := tls.LoadX509KeyPair(v.c.FilePath(certFile), v.c.FilePath(keyFile)); err != nil {
		v.errf(p+".cert_file", "cannot load certificate and key: %v", err)
	}
}

func (s *source) skipFiles() bool { return s != nil && s.opts.skipFileChecks }
