package registry

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits on registered values. Names become store key segments and xDS
// cluster-facing identifiers, so they keep to a DNS-like alphabet (no '/').
const (
	maxNameLen      = 253 // as config.Cluster.Service accepts
	MaxWeight       = 128 // as Envoy's load_balancing_weight for OmniRelay's balancers
	maxMetadata     = 64
	maxMetadataSize = 4096
)

// InvalidError is one problem with a registration. Register joins one per
// problem with errors.Join; use errors.As to detect them.
type InvalidError struct {
	Field  string // e.g. "address", "weight", "metadata[\"k\"]"
	Value  string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("registry: %s %q: %s", e.Field, e.Value, e.Reason)
}

func validate(ep *Endpoint, ttl time.Duration) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(checkName("service", ep.Service))
	add(checkName("id", ep.ID))
	add(checkAddress(ep.Address))
	if ep.Weight < 1 || ep.Weight > MaxWeight {
		add(&InvalidError{Field: "weight", Value: strconv.FormatUint(uint64(ep.Weight), 10), Reason: fmt.Sprintf("must be 1..%d", MaxWeight)})
	}
	add(checkHealth(ep.Health))
	add(checkTTL(ttl))
	for _, s := range []struct{ field, v string }{
		{"locality.region", ep.Locality.Region}, {"locality.zone", ep.Locality.Zone}, {"locality.sub_zone", ep.Locality.SubZone},
	} {
		if !utf8.ValidString(s.v) || len(s.v) > maxNameLen {
			add(&InvalidError{Field: s.field, Value: s.v, Reason: fmt.Sprintf("must be valid UTF-8 of at most %d bytes", maxNameLen)})
		}
	}
	if len(ep.Metadata) > maxMetadata {
		add(&InvalidError{Field: "metadata", Value: strconv.Itoa(len(ep.Metadata)) + " entries", Reason: fmt.Sprintf("at most %d entries", maxMetadata)})
	}
	size := 0
	for k, v := range ep.Metadata {
		size += len(k) + len(v)
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			add(&InvalidError{Field: fmt.Sprintf("metadata[%q]", k), Value: v, Reason: "keys must be non-empty and keys and values valid UTF-8"})
		}
	}
	if size > maxMetadataSize {
		add(&InvalidError{Field: "metadata", Value: strconv.Itoa(size) + " bytes", Reason: fmt.Sprintf("at most %d bytes of keys and values", maxMetadataSize)})
	}
	return errors.Join(errs...)
}

func checkName(field, s string) error {
	bad := func(reason string) error { return &InvalidError{Field: field, Value: s, Reason: reason} }
	if s == "" {
		return bad("is required")
	}
	if len(s) > maxNameLen {
		return bad(fmt.Sprintf("longer than %d bytes", maxNameLen))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if c != '-' && c != '.' && c != '_' {
			return bad(fmt.Sprintf("character %q not allowed (letters, digits, '-', '.', '_')", c))
		}
		if i == 0 || i == len(s)-1 {
			return bad("must start and end with a letter or digit")
		}
	}
	return nil
}

func checkAddress(addr string) error {
	bad := func(reason string) error { return &InvalidError{Field: "address", Value: addr, Reason: reason} }
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad("must be host:port")
	}
	if host == "" {
		return bad("host is empty")
	}
	if !utf8.ValidString(host) || len(host) > 253 {
		return bad("host is not a valid name or IP")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return bad("port must be 1..65535")
	}
	return nil
}

func checkHealth(h Health) error {
	switch h {
	case Healthy, Unhealthy, Draining:
		return nil
	}
	return &InvalidError{Field: "health", Value: string(h), Reason: "must be healthy, unhealthy or draining"}
}

func checkTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return &InvalidError{Field: "ttl", Value: ttl.String(), Reason: fmt.Sprintf("must be %s..%s", MinTTL, MaxTTL)}
	}
	return nil
}
