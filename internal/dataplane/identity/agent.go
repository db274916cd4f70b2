// Package identity is the proxy's identity agent: it obtains an X.509 SVID
// from MeshKit's Identity service and keeps it fresh. The private key is
// generated here and never leaves the proxy: MeshKit only sees a
// certificate signing request. The first certificate is authenticated by a
// join token, later ones by the current certificate (mutual TLS), renewed
// at half-life with jitter; on failure the agent retries with backoff and
// keeps serving the current certificate until it expires.
//
// The agent imports no control plane code, only the shared protos. TLS
// users take the live certificate through GetCertificate /
// GetClientCertificate (so a rotation needs no listener restart), or
// subscribe to rotations. The Agent is also a go-spiffe x509svid.Source and
// x509bundle.Source, so go-spiffe's tlsconfig helpers work on it.
package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// KeyType names the kind of key the agent generates.
type KeyType string

// Key types; the zero value means KeyECDSAP256.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA2048   KeyType = "rsa-2048"
)

// Config configures an Agent.
type Config struct {
	// Address is MeshKit's identity address (host:port), or several
	// replicas' separated by commas: a request that fails moves to the next.
	Address string
	// NodeID names this proxy in logs; MeshKit takes the node from the
	// join token (then from the certificate).
	NodeID string
	// JoinToken authenticates the first certificate (omnictl token create).
	JoinToken string
	// CAFile is a PEM trust bundle trusted on first contact with MeshKit
	// (the token's trust_bundle_pem); Bundle is the same, already parsed.
	// One of them is required.
	CAFile string
	Bundle []*x509.Certificate
	// TrustDomain defaults to the one named by the bundle's root (MeshKit's
	// generated roots carry spiffe://<trust-domain> as URI SAN).
	TrustDomain string
	KeyType     KeyType
	// MinBackoff and MaxBackoff bound the retry delay (default 500ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
}

// SVID is one issued identity with the trust bundle it came with. It is
// immutable.
type SVID struct {
	ID          spiffeid.ID
	Certificate *tls.Certificate    // chain leaf first, private key, Leaf set
	Chain       []*x509.Certificate // Certificate's chain, parsed
	Roots       []*x509.Certificate
	Pool        *x509.CertPool // Roots as a pool
}

// ErrNoSVID is returned by the accessors before the first certificate.
var ErrNoSVID = errors.New("identity: no SVID yet")

// Agent obtains and rotates the proxy's SVID. Build it with NewAgent and
// call Run once; the accessors are safe for concurrent use from any
// goroutine and never block.
type Agent struct {
	cfg    Config
	addrs  []string
	td     spiffeid.TrustDomain
	server spiffeid.ID
	log    *slog.Logger

	roots   atomic.Pointer[[]*x509.Certificate] // bundle trusted for MeshKit
	current atomic.Pointer[SVID]
	ready   chan struct{}

	mu     sync.Mutex // guards subs, nextID
	subs   map[int]func(*SVID)
	nextID int
}

// NewAgent checks the configuration and reads the bootstrap bundle.
func NewAgent(cfg Config) (*Agent, error) {
	var addrs []string
	for _, s := range strings.Split(cfg.Address, ",") {
		if s = strings.TrimSpace(s); s != "" {
			addrs = append(addrs, s)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("identity agent: the identity address is required")
	}
	roots := cfg.Bundle
	if cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("identity agent: CA file: %w", err)
		}
		b, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("bootstrap.invalid"), data)
		if err != nil {
			return nil, fmt.Errorf("identity agent: CA file %s: %w", cfg.CAFile, err)
		}
		roots = append(roots, b.X509Authorities()...)
	}
	if len(roots) == 0 {
		return nil, errors.New("identity agent: a CA bundle (--identity-ca) is required to trust MeshKit")
	}
	td, err := trustDomain(cfg.TrustDomain, roots)
	if err != nil {
		return nil, err
	}
	switch cfg.KeyType {
	case "":
		cfg.KeyType = KeyECDSAP256
	case KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA2048:
	default:
		return nil, fmt.Errorf("identity agent: key type %q: want %s, %s, %s or %s", cfg.KeyType, KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA2048)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, addrs: addrs, td: td, server: spiffeid.RequireFromSegments(td, "meshkit"),
		log: cfg.Log.With("node", cfg.NodeID), ready: make(chan struct{}), subs: map[int]func(*SVID){}}
	a.roots.Store(&roots)
	return a, nil
}

func trustDomain(name string, roots []*x509.Certificate) (spiffeid.TrustDomain, error) {
	if name != "" {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("identity agent: trust domain %q: %w", name, err)
		}
		return td, nil
	}
	for _, r := range roots {
		for _, u := range r.URIs {
			if id, err := spiffeid.FromURI(u); err == nil && id.Path() == "" {
				return id.TrustDomain(), nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errors.New("identity agent: the CA bundle names no trust domain: set the trust domain")
}

// Ready is closed once the first SVID is held.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// SVID returns the current identity, or nil before the first one.
func (a *Agent) SVID() *SVID { return a.current.Load() }

// Current returns the certificate, the trust bundle and the SPIFFE ID, or
// ErrNoSVID before the first certificate.
func (a *Agent) Current() (*tls.Certificate, *x509.CertPool, spiffeid.ID, error) {
	s := a.current.Load()
	if s == nil {
		return nil, nil, spiffeid.ID{}, ErrNoSVID
	}
	return s.Certificate, s.Pool, s.ID, nil
}

// GetCertificate serves the current SVID to TLS clients; a listener using
// it picks up every rotation at its next handshake.
func (a *Agent) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s := a.current.Load(); s != nil {
		return s.Certificate, nil
	}
	return nil, ErrNoSVID
}

// GetClientCertificate presents the current SVID to TLS servers, or no
// certificate before the first one.
func (a *Agent) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if s := a.current.Load(); s != nil {
		return s.Certificate, nil
	}
	return &tls.Certificate{}, nil
}

// GetX509SVID implements go-spiffe's x509svid.Source.
func (a *Agent) GetX509SVID() (*x509svid.SVID, error) {
	s := a.current.Load()
	if s == nil {
		return nil, ErrNoSVID
	}
	return &x509svid.SVID{ID: s.ID, Certificates: s.Chain, PrivateKey: s.Certificate.PrivateKey.(crypto.Signer)}, nil
}

// GetX509BundleForTrustDomain implements go-spiffe's x509bundle.Source: the
// latest bundle MeshKit sent (the bootstrap one before the first SVID).
func (a *Agent) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != a.td {
		return nil, fmt.Errorf("identity agent: no bundle for trust domain %q", td.Name())
	}
	return x509bundle.FromX509Authorities(td, *a.roots.Load()), nil
}

var (
	_ x509svid.Source   = (*Agent)(nil)
	_ x509bundle.Source = (*Agent)(nil)
)

// Subscribe calls f with every new SVID, from the agent's goroutine: f must
// not block nor call Subscribe or the returned cancel. It is called at once
// with the current SVID if there is one. The returned function
// unsubscribes.
func (a *Agent) Subscribe(f func(*SVID)) (cancel func()) {
	a.mu.Lock()
	id := a.nextID
	a.nextID++
	a.subs[id] = f
	cur := a.current.Load()
	if cur != nil {
		f(cur)
	}
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		delete(a.subs, id)
		a.mu.Unlock()
	}
}

// publish makes s current and tells subscribers, under mu so that a
// subscriber never sees an older SVID after a newer one.
func (a *Agent) publish(s *SVID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	first := a.current.Swap(s) == nil
	a.roots.Store(&s.Roots)
	for _, f := range a.subs {
		f(s)
	}
	if first {
		close(a.ready)
	}
}

// Run obtains the first SVID with the join token, then renews it at
// half-life until ctx ends. It returns ctx's error, or an error MeshKit will
// not change its mind about: the token refused, the node revoked. The
// current SVID stays available after Run returns.
func (a *Agent) Run(ctx context.Context) error {
	backoff := a.cfg.MinBackoff
	for replica := 0; ; {
		cur := a.current.Load()
		addr := a.addrs[replica%len(a.addrs)]
		err := a.renew(ctx, cur, addr)
		if err == nil {
			backoff = a.cfg.MinBackoff
			got := a.current.Load()
			a.log.Info("identity: SVID obtained", "address", addr, "spiffe_id", got.ID.String(), "expires_at", got.Certificate.Leaf.NotAfter)
			// MinBackoff is a floor: a certificate whose renewal time has
			// already passed (a clock skew, a tiny lifetime) must not
			// turn the loop into a stream of requests.
			if err := sleep(ctx, max(time.Until(a.renewAt(got.Certificate.Leaf)), a.cfg.MinBackoff)); err != nil {
				return err
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) {
			a.log.Error("identity: MeshKit refuses this proxy a certificate", "error", err)
			return err
		}
		a.log.Warn("identity: SVID request failed; retrying", "address", addr, "error", err, "retry_in", backoff,
			"current_expires_at", expiresAt(cur))
		replica++ // the next replica, if there are several
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// renewAt is half-way through the certificate's life, less up to a tenth
// of it so that proxies started together do not renew together.
func (a *Agent) renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	jitter := time.Duration(mrand.Int64N(int64(life/10) + 1))
	return leaf.NotBefore.Add(life/2 - jitter)
}

func expiresAt(s *SVID) any {
	if s == nil {
		return "none"
	}
	return s.Certificate.Leaf.NotAfter
}

// permanent says whether MeshKit refused for a reason a retry cannot fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// renew sends one CSR: with the join token when there is no SVID yet,
// otherwise over mutual TLS with the current one. Each request dials anew
// so that the TLS handshake presents the certificate held now.
func (a *Agent) renew(ctx context.Context, cur *SVID, addr string) error {
	key, err := generateKey(a.cfg.KeyType)
	if err != nil {
		return err
	}
	tmpl := &x509.CertificateRequest{}
	req := &meshkitv1.SignRequest{}
	if cur == nil {
		// No SAN: MeshKit issues the token's SPIFFE ID.
		req.JoinToken = a.cfg.JoinToken
		if req.JoinToken == "" {
			return status.Error(codes.Unauthenticated, "identity agent: a join token is required for the first certificate")
		}
	} else {
		tmpl.URIs = append(tmpl.URIs, cur.ID.URL())
	}
	if req.Csr, err = x509.CreateCertificateRequest(rand.Reader, tmpl, key); err != nil {
		return fmt.Errorf("identity agent: CSR: %w", err)
	}
	cfg := tlsconfig.TLSClientConfig(a, tlsconfig.AuthorizeID(a.server))
	cfg.GetClientCertificate = a.GetClientCertificate
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return fmt.Errorf("identity agent: %s: %w", addr, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := meshkitv1.NewIdentityClient(conn).Sign(cctx, req)
	if err != nil {
		return err
	}
	s, err := a.accept(resp, key, cur)
	if err != nil {
		return err
	}
	a.publish(s)
	return nil
}

// accept checks a Sign response: the chain verifies against the bundle it
// came with (which must be of our trust domain), and a renewal keeps the
// SPIFFE ID.
func (a *Agent) accept(resp *meshkitv1.SignResponse, key crypto.Signer, cur *SVID) (*SVID, error) {
	var certs, roots []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("identity agent: issued certificate: %w", err)
		}
		certs = append(certs, c)
	}
	for _, der := range resp.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("identity agent: trust bundle: %w", err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		roots = *a.roots.Load()
	}
	if len(certs) == 0 {
		return nil, errors.New("identity agent: empty certificate chain")
	}
	id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(a.td, roots))
	if err != nil {
		return nil, fmt.Errorf("identity agent: issued SVID does not verify: %w", err)
	}
	if cur != nil && id != cur.ID {
		return nil, fmt.Errorf("identity agent: renewal returned %s, want %s", id, cur.ID)
	}
	if pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("identity agent: issued certificate is not for our key")
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &SVID{ID: id, Certificate: &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: certs[0]}, Chain: certs, Roots: roots, Pool: pool}, nil
}

func generateKey(t KeyType) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	switch t {
	case KeyECDSAP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case KeyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("identity agent: generate %s key: %w", t, err)
	}
	return k, nil
}
