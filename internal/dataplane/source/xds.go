package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// XDSOptions configures the xDS source.
type XDSOptions struct {
	// Address is the control plane's ADS address (host:port), or the
	// addresses of its replicas separated by commas.
	Address string
	NodeID  string
	Cluster string
	// LKGDir keeps the last applied config ("" disables last-known-good).
	LKGDir string
	// TrustRoot is a PEM file of ed25519 public keys; when set, every
	// resource must be signed by one of them.
	TrustRoot string
	// SotW selects state-of-the-world ADS instead of delta.
	SotW bool
	// Build is the binary's version, advertised in the xDS Node.
	Build string
	// LKGAfter and Backoff tune the client (zero: its defaults).
	LKGAfter time.Duration
	Backoff  xdsclient.Backoff
	// CAFile is the PEM trust bundle for MeshKit's xDS certificate. When
	// set, xDS runs over TLS and MeshKit must present the SVID
	// spiffe://<trust-domain>/meshkit; with the identity agent on, the
	// proxy presents its current SVID as client certificate (else the TLS
	// authenticates the server only).
	CAFile string
	// TrustDomain is MeshKit's (default: the one the CAFile root names).
	TrustDomain string
}

// XDS is the control-plane source: an xdsclient ADS stream whose complete
// snapshots (warmed, and verified when there is a trust root) are applied
// as "xds:VERSION", and the last-known-good file, applied as "lkg:VERSION"
// when the control plane is out of reach at start. The client ACKs what
// applied and NACKs what was rejected with Apply's message.
type XDS struct {
	opt      XDSOptions
	verifier *signing.Verifier
	tls      *tls.Config // nil: plaintext
	client   *xdsclient.Client
}

var (
	_ Source        = (*XDS)(nil)
	_ ReadyReporter = (*XDS)(nil)
)

// NewXDS checks the options and reads the trust root and the CA bundle.
func NewXDS(o XDSOptions) (*XDS, error) {
	if o.Address == "" || o.NodeID == "" {
		return nil, errors.New("xds mode needs a server address and a node id")
	}
	x := &XDS{opt: o}
	if o.TrustRoot != "" {
		keys, err := signing.LoadPublicKeys(o.TrustRoot)
		if err != nil {
			return nil, fmt.Errorf("trust root: %w", err)
		}
		x.verifier = signing.NewVerifier(keys...)
	}
	if o.CAFile != "" {
		cfg, err := serverTLS(o)
		if err != nil {
			return nil, err
		}
		x.tls = cfg
	}
	return x, nil
}

// Start implements Source: it makes the client (nothing is dialled before
// Run).
func (x *XDS) Start(env Env) error {
	tlsCfg := x.tls
	if tlsCfg != nil && env.Identity != nil {
		tlsCfg = withClientSVID(tlsCfg, env.Identity)
	}
	caps := env.Capabilities
	caps.Build = x.opt.Build
	x.client = xdsclient.New(xdsclient.Options{
		Address:      x.opt.Address,
		NodeID:       x.opt.NodeID,
		Cluster:      x.opt.Cluster,
		Capabilities: caps,
		SotW:         x.opt.SotW,
		Verifier:     x.verifier,
		LKGDir:       x.opt.LKGDir,
		LKGAfter:     x.opt.LKGAfter,
		Apply:        applyAs(env, "xds"),
		ApplyLKG:     applyAs(env, "lkg"),
		Log:          env.Log,
		Stats:        env.XDS,
		Backoff:      x.opt.Backoff,
		TLS:          tlsCfg,
	})
	return nil
}

// applyAs is the client's Apply for versions from one origin ("xds" or
// "lkg"), recorded in omnirelay_config_source once applied.
func applyAs(env Env, origin string) func(*resources.Snapshot, string) error {
	return func(snap *resources.Snapshot, version string) error {
		if err := env.Apply(Update{Snapshot: snap, Source: origin + ":" + version}); err != nil {
			return err
		}
		if env.XDS != nil {
			env.XDS.SetSource(origin)
		}
		return nil
	}
}

// Run implements Source: the ADS stream, reconnected with backoff, until ctx
// ends.
func (x *XDS) Run(ctx context.Context) error { return x.client.Run(ctx) }

// Client is the xDS client (nil before Start).
func (x *XDS) Client() *xdsclient.Client { return x.client }

// Signed reports whether resources must be signed (a trust root is set).
func (x *XDS) Signed() bool { return x.verifier != nil }

// TLS reports whether xDS runs over TLS.
func (x *XDS) TLS() bool { return x.tls != nil }

// ReadyDetail implements ReadyReporter: it says when the running version
// is last-known-good.
func (x *XDS) ReadyDetail() string {
	if x.client == nil {
		return ""
	}
	s := x.client.Status()
	switch {
	case !s.FromLKG:
		return ""
	case s.Connected:
		return "last-known-good; control plane config not applied yet"
	default:
		return "last-known-good; control plane unreachable"
	}
}

// serverTLS is the xDS client's TLS: MeshKit authenticated by its SPIFFE ID
// against the bundle (host names play no part: any of the replicas'
// addresses will do).
func serverTLS(xo XDSOptions) (*tls.Config, error) {
	data, err := os.ReadFile(xo.CAFile)
	if err != nil {
		return nil, fmt.Errorf("xds ca: %w", err)
	}
	placeholder := spiffeid.RequireTrustDomainFromString("bootstrap.invalid")
	b, err := x509bundle.Parse(placeholder, data)
	if err != nil {
		return nil, fmt.Errorf("xds ca %s: %w", xo.CAFile, err)
	}
	var td spiffeid.TrustDomain
	if xo.TrustDomain != "" {
		if td, err = spiffeid.TrustDomainFromString(xo.TrustDomain); err != nil {
			return nil, fmt.Errorf("xds trust domain %q: %w", xo.TrustDomain, err)
		}
	} else {
		for _, r := range b.X509Authorities() {
			for _, u := range r.URIs {
				if id, err := spiffeid.FromURI(u); err == nil && id.Path() == "" && td.IsZero() {
					td = id.TrustDomain()
				}
			}
		}
		if td.IsZero() {
			return nil, fmt.Errorf("xds ca %s: its root names no trust domain: give --trust-domain", xo.CAFile)
		}
	}
	server, err := spiffeid.FromSegments(td, "meshkit")
	if err != nil {
		return nil, fmt.Errorf("xds server id: %w", err)
	}
	cfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, b.X509Authorities()), tlsconfig.AuthorizeID(server))
	cfg.MinVersion = tls.VersionTLS12
	return cfg, nil
}

// withClientSVID is cfg presenting the agent's SVID, read at each
// handshake, as client certificate. Before the first SVID the handshake
// fails (and the client retries with backoff) rather than going on without
// a certificate: under client auth "optional" such a stream would be
// served, without its secrets, for as long as it lasts.
func withClientSVID(cfg *tls.Config, agent *identity.Agent) *tls.Config {
	cfg = cfg.Clone()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if sv := agent.SVID(); sv != nil {
			return sv.Certificate, nil
		}
		return nil, errors.New("xds: no SVID from the identity agent yet")
	}
	return cfg
}
