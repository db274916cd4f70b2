package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/omnirelay/omnirelay/internal/dataplane/admin"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/loadreport"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// DefaultAdminAddress is the admin address in xDS mode, where there is no
// config file to name one.
const DefaultAdminAddress = "127.0.0.1:9901"

// XDSOptions configures xDS mode.
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

// xdsTLS is the xDS client's TLS: MeshKit authenticated by its SPIFFE ID
// against the bundle (host names play no part: any of the replicas'
// addresses will do), and the agent's SVID, read at each handshake, as
// client certificate when there is an agent.
func xdsTLS(xo *XDSOptions, agent *identity.Agent) (*tls.Config, error) {
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
	if agent != nil {
		// Before the first SVID the handshake fails (and the client retries
		// with backoff) rather than going on without a certificate: under
		// client auth "optional" such a stream would be served, without its
		// secrets, for as long as it lasts.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if sv := agent.SVID(); sv != nil {
				return sv.Certificate, nil
			}
			return nil, errors.New("xds: no SVID from the identity agent yet")
		}
	}
	return cfg, nil
}

// builtinNetworkFilters are the filters the runtime itself implements
// (they are not in the HTTP filter registry).
var builtinNetworkFilters = []string{
	"envoy.filters.http.router",
	"envoy.filters.network.http_connection_manager",
	"envoy.filters.network.rbac",
	"envoy.filters.network.tcp_proxy",
}

// Capabilities describes this build for the xDS Node: the HTTP filters of
// reg (by their Envoy names) and the network filters and router the runtime
// implements. No extension runtimes yet.
func Capabilities(build string, reg *filter.Registry) capability.Set {
	fs := append([]string(nil), builtinNetworkFilters...)
	for _, t := range reg.Types() {
		fs = append(fs, filterName(t))
	}
	rts, abis := extensionCapabilities(reg)
	return capability.Set{Kind: capability.KindOmniRelay, Build: build, Filters: fs, Runtimes: rts, ABIs: abis}
}

// filterName maps a filter config type to the name Envoy gives the filter:
// "envoy.extensions.filters.http.cors.v3.Cors" -> "envoy.filters.http.cors".
// Types outside Envoy's extension tree keep their config type name.
func filterName(configType string) string {
	rest, ok := strings.CutPrefix(configType, "envoy.extensions.filters.")
	if !ok {
		return configType
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 2 {
		return configType
	}
	return "envoy.filters." + parts[0] + "." + parts[1]
}

func startXDS(opt Options) (*Proxy, error) {
	xo := opt.XDS
	if xo.Address == "" || xo.NodeID == "" {
		return nil, errors.New("xds mode needs a server address and a node id")
	}
	var verifier *signing.Verifier
	if xo.TrustRoot != "" {
		keys, err := signing.LoadPublicKeys(xo.TrustRoot)
		if err != nil {
			return nil, fmt.Errorf("trust root: %w", err)
		}
		verifier = signing.NewVerifier(keys...)
	}
	st := stats.New()
	extTrust := opt.ExtensionTrustRoot
	if extTrust == "" {
		extTrust = xo.TrustRoot
	}
	clusters := &clusterSource{}
	reg, err := proxyRegistry(opt.Log, extTrust, st, clusters)
	if err != nil {
		return nil, err
	}
	xs := stats.NewXDS(st)
	store := secrets.NewStore()
	rt := runtime.New(runtime.Options{Log: opt.Log, Stats: st, Filters: reg, DrainTimeout: opt.DrainTimeout, Secrets: store})
	clusters.rt.Store(rt)
	var stopIdentity func()
	var agent *identity.Agent
	if opt.Identity != nil {
		if stopIdentity, agent, err = startIdentityAgent(opt.Identity, store, opt.Log); err != nil {
			_ = rt.Shutdown(context.Background())
			return nil, identityError(err)
		}
	}
	var tlsCfg *tls.Config
	if xo.CAFile != "" {
		if tlsCfg, err = xdsTLS(xo, agent); err != nil {
			_ = rt.Shutdown(context.Background())
			if stopIdentity != nil {
				stopIdentity()
			}
			return nil, err
		}
	}
	adminAddr := opt.AdminAddress
	if adminAddr == "" {
		adminAddr = DefaultAdminAddress
	}
	adm, err := admin.Listen(adminAddr, rt, opt.Log)
	if err != nil {
		_ = rt.Shutdown(context.Background())
		if stopIdentity != nil {
			stopIdentity()
		}
		return nil, fmt.Errorf("admin: %w", err)
	}
	applyAs := func(source string) func(*resources.Snapshot, string) error {
		return func(snap *resources.Snapshot, version string) error {
			src := source + ":" + version
			err := rt.Apply(snap, src)
			if errors.Is(err, runtime.ErrUnchanged) {
				err = nil
				// Same resources from another source or version (MeshKit
				// answering with what last-known-good held): record where
				// the running config now comes from.
				if cur := rt.Current(); cur != nil && cur.Source != src {
					err = rt.Reapply(snap, src)
				}
			}
			if err == nil {
				xs.SetSource(source)
			}
			return err
		}
	}
	client := xdsclient.New(xdsclient.Options{
		Address:      xo.Address,
		NodeID:       xo.NodeID,
		Cluster:      xo.Cluster,
		Capabilities: Capabilities(xo.Build, reg),
		SotW:         xo.SotW,
		Verifier:     verifier,
		LKGDir:       xo.LKGDir,
		LKGAfter:     xo.LKGAfter,
		Apply:        applyAs("xds"),
		ApplyLKG:     applyAs("lkg"),
		Log:          opt.Log,
		Stats:        xs,
		Backoff:      xo.Backoff,
		TLS:          tlsCfg,
	})
	adm.ReadyDetail = func() string {
		s := client.Status()
		switch {
		case !s.FromLKG:
			return ""
		case s.Connected:
			return "last-known-good; control plane config not applied yet"
		default:
			return "last-known-good; control plane unreachable"
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Runtime: rt, Admin: adm, XDS: client, cancel: cancel, done: make(chan struct{}), opt: opt, stopIdentity: stopIdentity, filters: reg}
	adm.OnDrain = func() {
		ctx, cancel := context.WithTimeout(context.Background(), opt.DrainTimeout)
		defer cancel()
		_ = p.Shutdown(ctx)
	}
	go func() {
		if err := adm.Serve(); err != nil {
			opt.Log.Error("admin server stopped", "error", err)
		}
	}()
	// Load reports (LRS) to the same control plane, for its rollout
	// analysis; read from the metrics, nothing on the request path.
	lrsNode := &corev3.Node{Id: xo.NodeID, Cluster: xo.Cluster}
	Capabilities(xo.Build, reg).Apply(lrsNode)
	reporter := loadreport.New(loadreport.Options{Address: xo.Address, TLS: tlsCfg, Node: lrsNode, Gatherer: st.Registry, Log: opt.Log})
	go func() {
		defer close(p.done)
		var wg sync.WaitGroup
		wg.Go(func() { _ = reporter.Run(ctx) })
		if err := client.Run(ctx); err != nil {
			opt.Log.Error("xds client stopped", "error", err)
		}
		wg.Wait()
	}()
	opt.Log.Info("omnirelay started in xDS mode", "xds", xo.Address, "node_id", xo.NodeID,
		"sotw", xo.SotW, "lkg_dir", xo.LKGDir, "signed", verifier != nil, "xds_tls", tlsCfg != nil,
		"xds_client_cert", tlsCfg != nil && agent != nil, "admin", adm.Addr().String())
	return p, nil
}
