package config

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the mesh trust domain when mtls.trust_domain is left
// out; it is MeshKit's default.
const DefaultTrustDomain = "omnirelay.local"

// MTLSMode is a listener's mesh mTLS policy.
type MTLSMode string

// mTLS modes.
const (
	// MTLSStrict requires TLS with a client certificate (an X.509 SVID of
	// the trust domain).
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts mTLS and plaintext on the same port; the
	// first byte of a connection decides.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSDisable serves plaintext, as without mtls.
	MTLSDisable MTLSMode = "DISABLE"
)

// ListenerMTLS makes a listener a mesh mTLS server: it presents the proxy's
// SVID (SDS secret "default") and verifies clients against the mesh trust
// bundle ("ROOTCA"), both kept fresh by the identity agent.
type ListenerMTLS struct {
	// Mode is STRICT (default), PERMISSIVE or DISABLE.
	Mode MTLSMode `yaml:"mode"`
	// TrustDomain clients must belong to (default DefaultTrustDomain).
	TrustDomain string `yaml:"trust_domain"`
	// AllowedIDs, when set, are the only SPIFFE IDs accepted as clients.
	AllowedIDs []string `yaml:"allowed_ids"`
}

// EffectiveMode returns Mode or MTLSStrict.
func (m *ListenerMTLS) EffectiveMode() MTLSMode {
	if m.Mode == "" {
		return MTLSStrict
	}
	return m.Mode
}

// EffectiveTrustDomain returns TrustDomain or DefaultTrustDomain.
func (m *ListenerMTLS) EffectiveTrustDomain() string {
	if m.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return m.TrustDomain
}

// ClusterMTLS makes a cluster originate mesh mTLS: the proxy presents its
// SVID and accepts only endpoints presenting Identity.
type ClusterMTLS struct {
	// Identity is the SPIFFE ID the endpoints must present, e.g.
	// spiffe://omnirelay.local/ns/default/sa/api.
	Identity string `yaml:"identity"`
}

func (v *validator) listenerMTLS(l *Listener, p string) {
	m := l.MTLS
	if m == nil {
		return
	}
	switch m.EffectiveMode() {
	case MTLSStrict, MTLSPermissive, MTLSDisable:
	default:
		v.errf(p+".mode", "unknown mode %q (want STRICT, PERMISSIVE or DISABLE)", m.Mode)
	}
	switch l.EffectiveProtocol() {
	case ProtocolHTTP, ProtocolHTTPS, ProtocolTCP:
	default:
		v.errf(p, "mtls is not allowed on %s listener (tls listeners pass TLS through without terminating it)", article(l.EffectiveProtocol()))
	}
	td, err := spiffeid.TrustDomainFromString(m.EffectiveTrustDomain())
	if err != nil || strings.Contains(m.TrustDomain, "/") {
		v.errf(p+".trust_domain", "invalid trust domain %q (a DNS-like name such as omnirelay.local)", m.TrustDomain)
		return
	}
	for i, id := range m.AllowedIDs {
		sid, err := spiffeid.FromString(id)
		switch {
		case err != nil:
			v.errf(idx(p+".allowed_ids", i), "invalid SPIFFE ID %q: %v", id, err)
		case sid.TrustDomain() != td:
			v.errf(idx(p+".allowed_ids", i), "SPIFFE ID %q is not in trust domain %q", id, td.Name())
		case slices.Index(m.AllowedIDs, id) != i:
			v.errf(idx(p+".allowed_ids", i), "duplicate SPIFFE ID %q", id)
		}
	}
}

func (v *validator) clusterMTLS(c *Cluster, p string) {
	m := c.MTLS
	if m == nil {
		return
	}
	if c.TLS != nil {
		v.errf(p, "use tls or mtls, not both (mtls is TLS with the proxy's SVID)")
	}
	if m.Identity == "" {
		v.errf(p+".identity", "identity is required: the SPIFFE ID the endpoints present")
		return
	}
	if _, err := spiffeid.FromString(m.Identity); err != nil {
		v.errf(p+".identity", "invalid SPIFFE ID %q: %v", m.Identity, err)
	}
}
