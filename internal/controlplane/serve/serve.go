// Package serve runs a MeshKit process: it opens the store (bbolt in a data
// directory, or etcd), starts the registry's lease expiry, the MeshKit core,
// the xDS gRPC server, the API server (gRPC and its JSON gateway on one
// port) and, when given an address, the identity CA's TLS port; it follows a
// desired-config file when one is given. cmd/meshkit,
// the demo and the end-to-end tests all start MeshKit through it.
package serve

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	"github.com/omnirelay/omnirelay/internal/controlplane/registry"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/lifecycle"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// Options configures a MeshKit process.
type Options struct {
	XDSAddress string // default 127.0.0.1:15010
	// XDSTransport is "lean" (default: xdsserver's own gRPC-over-HTTP/2,
	// one goroutine and ~9 KB per connected proxy) or "grpc" (grpc-go's
	// server, ~43 KB per proxy; the fallback should a client need what
	// the lean transport leaves out, see docs/xds-scale.md).
	XDSTransport string
	APIAddress   string // default 127.0.0.1:15011
	// DataDir holds the embedded bbolt store (meshkit.db); ignored with Etcd.
	DataDir string
	// Etcd, when set, stores state in etcd (several replicas share it).
	Etcd       []string
	EtcdPrefix string // default "/meshkit"
	// SigningKey is a PEM ed25519 private key file; empty serves unsigned.
	SigningKey string
	// ConfigFile, when set, is applied at start and whenever it changes.
	ConfigFile string
	// ReplicaID names this replica in leader elections (default host:pid).
	ReplicaID    string
	PollInterval time.Duration // config file poll (default 1s)
	Log          *slog.Logger

	// IdentityAddress, when set, serves the identity CA (SVIDs by CSR) on
	// this TLS address and IdentityAdmin on the API; empty disables both.
	IdentityAddress string
	TrustDomain     string        // default omnirelay.local
	SVIDTTL         time.Duration // default 1h
	// CACert and CAKey name an operator-provided CA (chain ending with the
	// root, and the signing key); empty generates a root kept in the store.
	CACert, CAKey string
	// CAKEK, when set (identity.ReadKEK), seals the generated CA's key in
	// the store; every replica needs the same one.
	CAKEK []byte

	// APIToken, when set, is the bearer token every API call must carry
	// (ReadAPIToken reads it from a file). Without it the API must be on
	// a loopback address unless APIInsecure.
	APIToken    string
	APIInsecure bool

	// XDSTLS serves xDS over TLS with a certificate from the identity CA
	// (which must be on): an SVID for spiffe://<trust-domain>/meshkit that
	// also names the listen IP and XDSTLSSANs (DNS names or IPs).
	XDSTLS     bool
	XDSTLSSANs []string
	// XDSClientAuth is none, optional (the default with XDSTLS) or require;
	// see the ClientAuth constants.
	XDSClientAuth string
	// XDSInsecure allows a plaintext xDS port on a non-loopback address.
	XDSInsecure bool
	// ServerCertTTL is the lifetime of MeshKit's xDS and API certificates
	// (default identity.DefaultServerCertTTL); each is reissued at
	// half-life.
	ServerCertTTL time.Duration

	// APITLS serves the API (gRPC and the JSON gateway) over TLS with a
	// certificate from the identity CA, like XDSTLS; APITLSSANs are its
	// extra DNS names or IPs. The bearer token stays the authentication.
	APITLS     bool
	APITLSSANs []string
	// CABundleOut, when set, is where the identity CA's trust bundle (PEM)
	// is written at start: the file clients of the TLS ports trust.
	CABundleOut string
}

// Process is a running MeshKit.
type Process struct {
	MeshKit  *meshkit.MeshKit
	Registry *registry.Registry
	Store    store.Store
	// Identity is nil unless Options.IdentityAddress is set.
	Identity *identity.Service

	xdsLn, apiLn net.Listener
	xdsServeLn   net.Listener // xdsLn, wrapped in TLS for the lean transport with XDSTLS
	identityLn   net.Listener
	identitySrv  *grpc.Server
	xdsSrv       *grpc.Server
	apiGRPC      *grpc.Server
	apiHTTP      *http.Server
	wg           sync.WaitGroup
	log          *slog.Logger
	// stop undoes the start, last started first: a start that fails
	// half-way and Shutdown run it.
	stop      lifecycle.Stack
	closeOnce sync.Once
}

// Start opens the store, binds the addresses and starts serving. The steps
// run in order; each one that starts something pushes how to stop it, so
// that a failed step undoes exactly what the ones before it started.
func Start(opt Options) (_ *Process, err error) {
	opt = withDefaults(opt)
	var signer *signing.Signer
	if opt.SigningKey != "" {
		k, err := signing.LoadPrivateKey(opt.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		signer = signing.NewSigner(k)
	}
	st, err := openStore(opt)
	if err != nil {
		return nil, err
	}
	p := &Process{Store: st, log: opt.Log}
	defer func() {
		if err != nil {
			_ = p.stop.Run(context.Background())
		}
	}()
	p.stop.Push(func(context.Context) error { return st.Close() })
	p.Registry = registry.New(st, registry.Options{Log: opt.Log})
	metricsReg := prometheus.NewRegistry()
	metricsReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.MeshKit = meshkit.New(meshkit.Options{Store: st, Registry: p.Registry, Signer: signer, Log: opt.Log, Metrics: metricsReg,
		Directory: meshkit.DirectoryOptions{ReplicaID: opt.ReplicaID}})

	clientAuth, err := checkClientAuth(opt.XDSClientAuth, opt.XDSTLS)
	if err != nil {
		return nil, err
	}
	if err := p.listen(opt); err != nil {
		return nil, err
	}
	// Goroutines started from here on end with ctx; the ones that serve a
	// port end when its server stops (the last step pushed, below).
	ctx, cancel := context.WithCancel(context.Background())
	p.stop.Push(func(context.Context) error { cancel(); p.wg.Wait(); return nil })

	if err := p.loadConfig(ctx, opt); err != nil {
		return nil, err
	}
	apiSrv := api.New(api.Options{Registry: p.Registry, Config: p.MeshKit, Proxies: proxyList{m: p.MeshKit, log: opt.Log}, Rollouts: rolloutAPI{p.MeshKit}, Log: opt.Log})
	p.apiGRPC = grpc.NewServer()
	apiSrv.RegisterGRPC(p.apiGRPC)
	extstore.New(st, opt.Log).Register(p.apiGRPC) // omnictl ext push/list
	if opt.IdentityAddress != "" {
		if err := p.startIdentity(ctx, opt); err != nil {
			return nil, err
		}
	}
	if err := p.startXDS(ctx, opt, clientAuth); err != nil {
		return nil, err
	}
	p.apiHTTP = &http.Server{
		Handler:           h2c.NewHandler(p.apiHandler(apiSrv.HTTPHandler(), metricsReg, opt.APIToken), &http2.Server{}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := p.startAPITLS(opt); err != nil {
		return nil, err
	}

	// Nothing fails from here on.
	p.serve(ctx, opt)
	p.stop.Push(func(ctx context.Context) error {
		cancel()
		// xDS streams never end on their own: stop, do not wait for them.
		// Proxies keep their config and reconnect (to another replica).
		if p.xdsSrv != nil {
			p.xdsSrv.Stop()
		} else {
			p.MeshKit.Server().Stop()
		}
		_ = p.apiHTTP.Shutdown(ctx)
		p.apiGRPC.Stop()
		if p.identitySrv != nil {
			p.identitySrv.Stop()
		}
		return nil
	})
	opt.Log.Info("meshkit started", "xds", p.xdsLn.Addr().String(), "xds_tls", opt.XDSTLS, "xds_client_auth", clientAuth,
		"api", p.apiLn.Addr().String(), "api_tls", opt.APITLS,
		"store", storeName(opt), "signed", signer != nil, "replica", opt.ReplicaID)
	return p, nil
}

// withDefaults fills in the defaults of Options.
func withDefaults(opt Options) Options {
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opt.XDSAddress == "" {
		opt.XDSAddress = "127.0.0.1:15010"
	}
	if opt.APIAddress == "" {
		opt.APIAddress = "127.0.0.1:15011"
	}
	if opt.EtcdPrefix == "" {
		opt.EtcdPrefix = "/meshkit"
	}
	if opt.ReplicaID == "" {
		h, _ := os.Hostname()
		opt.ReplicaID = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if opt.PollInterval == 0 {
		opt.PollInterval = time.Second
	}
	return opt
}

// listen binds the xDS and API addresses, each after the check of who may
// reach it.
func (p *Process) listen(opt Options) error {
	if err := checkXDSExposure(opt.XDSAddress, opt.XDSTLS, opt.XDSInsecure); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opt.XDSAddress)
	if err != nil {
		return fmt.Errorf("xds address: %w", err)
	}
	p.xdsLn = ln
	p.stop.Push(closeListener(ln))
	if err := checkAPIExposure(opt.APIAddress, opt.APIToken, opt.APIInsecure); err != nil {
		return err
	}
	if ln, err = net.Listen("tcp", opt.APIAddress); err != nil {
		return fmt.Errorf("api address: %w", err)
	}
	p.apiLn = ln
	p.stop.Push(closeListener(ln))
	return nil
}

// closeListener is the stop step of a bound listener; its server, once
// serving, has closed it already.
func closeListener(ln net.Listener) func(context.Context) error {
	return func(context.Context) error { _ = ln.Close(); return nil }
}

// loadConfig loads the stored configuration, then applies the config file
// when there is one and follows it (until ctx ends).
func (p *Process) loadConfig(ctx context.Context, opt Options) error {
	if err := p.MeshKit.Load(ctx); err != nil {
		// A stored document that no longer validates (say, after an
		// upgrade) must not stop the replica: log it, serve the next apply.
		opt.Log.Error("stored configuration not loaded", "error", err)
	}
	if opt.ConfigFile == "" {
		return nil
	}
	data, err := os.ReadFile(opt.ConfigFile)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := p.MeshKit.Apply(ctx, opt.ConfigFile, data); err != nil {
		return err
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.followFile(ctx, opt.ConfigFile, data, opt.PollInterval) }()
	return nil
}

// apiHandler serves omnictl (gRPC) and curl (JSON) on one port: gRPC is
// recognised by its content type, as grpc-go's ServeHTTP expects. With a
// token, every call (metrics included) must carry it.
func (p *Process) apiHandler(gateway http.Handler, metrics *prometheus.Registry, token string) http.Handler {
	metricsHandler := promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			p.apiGRPC.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/metrics" {
			metricsHandler.ServeHTTP(w, r) // behind the API token, when there is one
			return
		}
		gateway.ServeHTTP(w, r)
	})
	if token != "" {
		handler = requireToken(token, handler)
	}
	return handler
}

// serve starts the MeshKit core, the lease expiry and the servers of every
// bound port, each on a goroutine of p.wg.
func (p *Process) serve(ctx context.Context, opt Options) {
	p.wg.Add(4)
	go func() { defer p.wg.Done(); _ = p.MeshKit.Run(ctx) }()
	go func() { defer p.wg.Done(); p.Registry.RunExpiry(ctx, opt.ReplicaID) }()
	go func() {
		defer p.wg.Done()
		var err error
		if p.xdsSrv != nil {
			if err = p.xdsSrv.Serve(p.xdsLn); errors.Is(err, grpc.ErrServerStopped) {
				err = nil
			}
		} else {
			err = p.MeshKit.Server().Serve(p.xdsServeLn)
		}
		if err != nil {
			opt.Log.Error("xds server stopped", "error", err)
		}
	}()
	go func() {
		defer p.wg.Done()
		var err error
		if p.apiHTTP.TLSConfig != nil {
			err = p.apiHTTP.ServeTLS(p.apiLn, "", "") // certificates come from TLSConfig.GetCertificate
		} else {
			err = p.apiHTTP.Serve(p.apiLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			opt.Log.Error("api server stopped", "error", err)
		}
	}()
	if p.identitySrv != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.identitySrv.Serve(p.identityLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				opt.Log.Error("identity server stopped", "error", err)
			}
		}()
		opt.Log.Info("identity served", "address", p.identityLn.Addr().String(),
			"trust_domain", p.Identity.ServerID().TrustDomain().Name())
	}
}

func storeName(opt Options) string {
	if len(opt.Etcd) > 0 {
		return "etcd " + strings.Join(opt.Etcd, ",")
	}
	return "bbolt " + filepath.Join(opt.DataDir, "meshkit.db")
}

func openStore(opt Options) (store.Store, error) {
	if len(opt.Etcd) > 0 {
		st, err := store.OpenEtcd(opt.Etcd, opt.EtcdPrefix)
		if err != nil {
			return nil, fmt.Errorf("etcd store: %w", err)
		}
		return st, nil
	}
	if opt.DataDir == "" {
		return nil, errors.New("a data directory (--data-dir) or etcd endpoints (--etcd) are required")
	}
	if err := os.MkdirAll(opt.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	st, err := store.OpenBolt(filepath.Join(opt.DataDir, "meshkit.db"))
	if err != nil {
		return nil, fmt.Errorf("bbolt store: %w", err)
	}
	return st, nil
}

// followFile applies the config file again whenever its content changes.
// A bad edit is logged with its positions and the stored config stays.
func (p *Process) followFile(ctx context.Context, path string, last []byte, every time.Duration) {
	sum := sha256.Sum256(last)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			p.log.Warn("config file unreadable; the stored config stays", "file", path, "error", err)
			continue
		}
		s := sha256.Sum256(data)
		if s == sum {
			continue
		}
		sum = s
		if v, err := p.MeshKit.Apply(ctx, path, data); err != nil {
			p.log.Error("config file rejected; the stored config stays", "file", path, "error", err)
		} else {
			p.log.Info("config file applied", "file", path, "version", v)
		}
	}
}

// XDSAddr is the bound xDS address.
func (p *Process) XDSAddr() net.Addr { return p.xdsLn.Addr() }

// APIAddr is the bound API address.
func (p *Process) APIAddr() net.Addr { return p.apiLn.Addr() }

// Shutdown stops serving: xDS streams end (proxies reconnect elsewhere or
// keep their config), the API stops, the store closes.
func (p *Process) Shutdown(ctx context.Context) error {
	var err error
	p.closeOnce.Do(func() { err = p.stop.Run(ctx) })
	return err
}
