// Package netrbac is connection-level (L4) RBAC: Envoy's network filter
// envoy.extensions.filters.network.rbac.v3.RBAC, evaluated once per
// connection before any byte is proxied, with the policy engine of the HTTP
// filter (internal/dataplane/filters/rbac). Only connection facts exist
// here: the peer's SPIFFE ID from mTLS, source and destination addresses and
// the SNI; HTTP-only matchers (header, url_path) never match, as in Envoy.
//
// Seam: a listener calls Policy.Allow with the connection's facts after the
// TLS handshake (plaintext: right after accept) and closes the connection
// when it returns false. Policy is immutable and safe for concurrent use;
// build one per config version with Build.
package netrbac

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/rbac"
)

// ConfigType is the xDS network filter config Build accepts.
const ConfigType = "envoy.extensions.filters.network.rbac.v3.RBAC"

// FilterName is Envoy's name for the filter (capability lists).
const FilterName = "envoy.filters.network.rbac"

// Conn is what a connection policy sees.
type Conn struct {
	Source, Dest netip.AddrPort
	// PeerIdentity is the verified client certificate's SPIFFE ID, "" for
	// plaintext or TLS without a client certificate.
	PeerIdentity string
	SNI          string
}

// Policy is a compiled network RBAC filter.
type Policy struct {
	name   string
	rules  *rbac.Engine // nil: enforce nothing
	shadow *rbac.Engine
	log    *slog.Logger

	allowed, denied, shadowAllowed, shadowDenied filter.Counter
}

// Build compiles cfg. stats may be nil; log nil means slog.Default. Counter
// names: rbac.allowed, rbac.denied, rbac.shadow_allowed, rbac.shadow_denied
// under the filter's stat scope.
func Build(name string, cfg *anypb.Any, stats filter.Stats, log *slog.Logger) (*Policy, error) {
	var pb netrbacv3.RBAC
	if cfg == nil {
		return nil, errors.New("network rbac: typed_config: missing")
	}
	if err := cfg.UnmarshalTo(&pb); err != nil {
		return nil, fmt.Errorf("network rbac: typed_config: %w", err)
	}
	if err := pb.ValidateAll(); err != nil {
		return nil, fmt.Errorf("network rbac: typed_config: %w", err)
	}
	switch {
	case pb.GetMatcher() != nil || pb.GetShadowMatcher() != nil:
		return nil, errors.New("network rbac: matcher/shadow_matcher: not supported (use rules/shadow_rules)")
	case pb.GetEnforcementType() == netrbacv3.RBAC_CONTINUOUS:
		// Continuous re-evaluation matters for dynamic metadata that can
		// change mid-connection; nothing here can, so say so.
		return nil, errors.New("network rbac: enforcement_type CONTINUOUS: not supported (ONE_TIME_ON_FIRST_BYTE)")
	case pb.GetDelayDeny() != nil:
		return nil, errors.New("network rbac: delay_deny: not supported")
	}
	p := &Policy{
		name:          name,
		log:           log,
		allowed:       counter(stats, "rbac.allowed"),
		denied:        counter(stats, "rbac.denied"),
		shadowAllowed: counter(stats, "rbac.shadow_allowed"),
		shadowDenied:  counter(stats, "rbac.shadow_denied"),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	celEnv, err := rbac.NewCELEnv(0)
	if err != nil {
		return nil, fmt.Errorf("network rbac: %w", err)
	}
	if pb.GetRules() != nil {
		if p.rules, err = rbac.Compile(pb.GetRules(), celEnv); err != nil {
			return nil, fmt.Errorf("network rbac: rules.%w", err)
		}
	}
	if pb.GetShadowRules() != nil {
		if p.shadow, err = rbac.Compile(pb.GetShadowRules(), celEnv); err != nil {
			return nil, fmt.Errorf("network rbac: shadow_rules.%w", err)
		}
	}
	return p, nil
}

// Allow decides whether the connection may proceed. Shadow rules are
// evaluated and counted (denials logged) but never change the answer.
func (p *Policy) Allow(c Conn) bool {
	in := rbac.Input{Source: c.Source, Dest: c.Dest, PeerIdentity: c.PeerIdentity, SNI: c.SNI}
	if p.shadow != nil {
		if ok, pol := p.shadow.Evaluate(&in); ok {
			p.shadowAllowed.Inc()
		} else {
			p.shadowDenied.Inc()
			p.log.Info("network rbac shadow denied", "filter", p.name, "policy", pol,
				"peer", c.PeerIdentity, "source", c.Source.Addr().String())
		}
	}
	if p.rules == nil {
		return true
	}
	if ok, _ := p.rules.Evaluate(&in); !ok {
		p.denied.Inc()
		return false
	}
	p.allowed.Inc()
	return true
}

// Authorizer adapts policies to the listener's Chain.Authorize hook: every
// policy must allow the connection (each is its own filter, as in Envoy, so
// a DENY filter wins over an ALLOW one).
func Authorizer(ps ...*Policy) func(src, dst net.Addr, sni, peerIdentity string) bool {
	return func(src, dst net.Addr, sni, peerIdentity string) bool {
		c := Conn{Source: addrPort(src), Dest: addrPort(dst), SNI: sni, PeerIdentity: peerIdentity}
		for _, p := range ps {
			if !p.Allow(c) {
				return false
			}
		}
		return true
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

type nopCounter struct{}

func (nopCounter) Inc() {}

func counter(s filter.Stats, name string) filter.Counter {
	if s != nil {
		if c := s.Counter(name); c != nil {
			return c
		}
	}
	return nopCounter{}
}
