package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// DefaultServerCertTTL is the lifetime of the serving certificates MeshKit
// issues itself for its xDS and API ports.
const DefaultServerCertTTL = 24 * time.Hour

// ServerCert is MeshKit's serving certificate for a port other than the
// identity port (xDS, the operator API): an SVID for
// spiffe://<trust-domain>/meshkit that also names the hosts clients dial,
// issued from the CA and reissued at half-life by GetCertificate, so a
// long-running MeshKit never serves an expired certificate and needs no
// restart. Safe for concurrent use.
type ServerCert struct {
	s   *Service
	dns []string
	ips []net.IP
	ttl time.Duration

	mu  sync.Mutex
	cur *tls.Certificate
}

// NewServerCert returns a certificate source for hosts (DNS names or IP
// addresses, each becoming a SAN) with the given lifetime (0: the default).
func (s *Service) NewServerCert(hosts []string, ttl time.Duration) (*ServerCert, error) {
	if ttl == 0 {
		ttl = DefaultServerCertTTL
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("identity: server certificate lifetime %v is below 1s", ttl)
	}
	c := &ServerCert{s: s, ttl: ttl}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			c.ips = append(c.ips, ip)
		} else {
			c.dns = append(c.dns, h)
		}
	}
	if _, err := c.GetCertificate(nil); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate is a tls.Config.GetCertificate: the current certificate,
// reissued (new key) once past half its life.
func (c *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := c.s.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur; cur != nil && now.Before(cur.Leaf.NotBefore.Add(cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore)/2)) {
		return cur, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: server key: %w", err)
	}
	var after time.Time
	if c.cur != nil {
		after = c.cur.Leaf.NotAfter
	}
	leaf, err := c.s.ca.issueWithHosts(key.Public(), c.s.id, "meshkit", now, c.ttl, after, c.dns, c.ips)
	if err != nil {
		return nil, err
	}
	c.cur = &tls.Certificate{Certificate: c.s.chainDER(leaf), PrivateKey: key, Leaf: leaf}
	c.s.log.Info("identity: server certificate issued", "spiffe_id", c.s.id.String(), "dns", c.dns, "ips", c.ips,
		"not_after", leaf.NotAfter)
	return c.cur, nil
}

// RootPool is the CA's trust bundle as a pool, to verify client SVIDs.
func (s *Service) RootPool() *x509.CertPool { return s.ca.RootPool() }

// RootsPEM is the CA's trust bundle (PEM), the file clients trust MeshKit
// with.
func (s *Service) RootsPEM() []byte { return s.ca.RootsPEM() }

// TrustDomain is the CA's trust domain.
func (s *Service) TrustDomain() spiffeid.TrustDomain { return s.ca.TrustDomain() }

// ErrNodeNotEnrolled is LookupNode's error for a node without a record.
var ErrNodeNotEnrolled = errors.New("node not enrolled")

// LookupNode reads the record that binds a node ID to its SPIFFE ID (written
// by CreateJoinToken), so that other ports can check that a certificate's
// node and SPIFFE ID still belong together and the node is not revoked.
func (s *Service) LookupNode(ctx context.Context, nodeID string) (Node, error) {
	kv, err := s.st.Get(ctx, nodePrefix+nodeID)
	if errors.Is(err, store.ErrNotFound) {
		return Node{}, fmt.Errorf("node %q: %w", nodeID, ErrNodeNotEnrolled)
	}
	if err != nil {
		return Node{}, fmt.Errorf("node %q: read: %w", nodeID, err)
	}
	var n Node
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return Node{}, fmt.Errorf("node %q record: %w", nodeID, err)
	}
	return n, nil
}
