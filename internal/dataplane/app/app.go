// Package app assembles a running data plane from its parts: the runtime,
// the built-in filters, the admin endpoint and a config source. The
// omnirelay binary and the tests start the proxy through it, so what the
// tests exercise is what users run.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/admin"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/source"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/lifecycle"
)

// Options configures a proxy process.
type Options struct {
	// ConfigPath is the config file (file mode). Exactly one of ConfigPath
	// and XDS is set.
	ConfigPath string
	// XDS makes the proxy an xDS client of a control plane (xDS mode).
	XDS *XDSOptions
	Log *slog.Logger
	// AdminAddress overrides the config's admin address ("" keeps it).
	AdminAddress string
	// DrainTimeout bounds graceful shutdown (default 30s).
	DrainTimeout time.Duration
	// PollInterval is the config file poll interval (default 500ms).
	PollInterval time.Duration
	// ExtensionTrustRoot is the PEM file of ed25519 keys extension packages
	// must be signed by (xDS mode falls back to XDS.TrustRoot).
	ExtensionTrustRoot string
	// Identity starts the identity agent for mesh mTLS (nil: no agent).
	Identity *IdentityOptions
}

// Proxy is a running data plane.
type Proxy struct {
	Runtime *runtime.Runtime
	Admin   *admin.Server
	// XDS is the xDS client in xDS mode (nil in file mode).
	XDS *xdsclient.Client
	src source.Source
	// filters is the registry the runtime builds from; its extension
	// factory holds the loaded plugins (wazero modules, native handles).
	filters *filter.Registry
	// stop undoes the start, last started first (Shutdown, or a start
	// that fails half-way).
	stop lifecycle.Stack
	opt  Options

	// onDrain is what POST /drain does (the admin server reads it while
	// serving).
	onDrain atomic.Pointer[func()]

	stopOnce sync.Once
	stopErr  error
}

// NewRegistry returns the filter registry with every built-in filter.
func NewRegistry() (*filter.Registry, error) {
	return filter.NewRegistry(filters.Builtins()...)
}

// Start opens the config source, applies its first version when it has one
// (a config file), and starts the admin server and the source. A config that
// does not load is an error: a proxy never starts on a config it cannot fully
// apply.
func Start(opt Options) (*Proxy, error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opt.DrainTimeout == 0 {
		opt.DrainTimeout = 30 * time.Second
	}
	if opt.XDS == nil {
		src, err := source.OpenFile(opt.ConfigPath, opt.PollInterval)
		if err != nil {
			return nil, err
		}
		p, err := assemble(opt, src, cmp.Or(opt.AdminAddress, src.AdminAddress()), opt.ExtensionTrustRoot)
		if err != nil {
			return nil, err
		}
		opt.Log.Info("omnirelay started", "config", opt.ConfigPath, "format", src.Format(), "admin", p.Admin.Addr().String())
		return p, nil
	}
	if opt.ConfigPath != "" {
		return nil, errors.New("a config file and an xDS server are exclusive config sources")
	}
	xo := opt.XDS
	src, err := source.NewXDS(*xo)
	if err != nil {
		return nil, err
	}
	p, err := assemble(opt, src, cmp.Or(opt.AdminAddress, DefaultAdminAddress), cmp.Or(opt.ExtensionTrustRoot, xo.TrustRoot))
	if err != nil {
		return nil, err
	}
	p.XDS = src.Client()
	opt.Log.Info("omnirelay started in xDS mode", "xds", xo.Address, "node_id", xo.NodeID,
		"sotw", xo.SotW, "lkg_dir", xo.LKGDir, "signed", src.Signed(), "xds_tls", src.TLS(),
		"xds_client_cert", src.TLS() && opt.Identity != nil, "admin", p.Admin.Addr().String())
	return p, nil
}

// assemble builds the proxy around src: metrics, the filter registry (with
// the extension runtimes), the runtime, the admin endpoint on adminAddr, the
// identity agent, then src's first version, then the goroutines. Each step
// that starts something adds to p.stop how to stop it, so that a failed
// step undoes the ones before it and Shutdown stops in reverse order: the
// source, the runtime (listeners drain), the extensions (no listener uses
// them any more), the identity agent, and the admin endpoint last (it
// answers "draining" until the end). extTrust is the extension trust root.
func assemble(opt Options, src source.Source, adminAddr, extTrust string) (_ *Proxy, err error) {
	p := &Proxy{src: src, opt: opt}
	defer func() {
		if err != nil {
			_ = p.stop.Run(context.Background())
		}
	}()
	st := stats.New()
	xs := stats.NewXDS(st)
	clusters := &clusterSource{}
	if p.filters, err = proxyRegistry(opt.Log, extTrust, st, clusters); err != nil {
		return nil, err
	}
	store := secrets.NewStore()
	rt := runtime.New(runtime.Options{Log: opt.Log, Stats: st, Filters: p.filters, DrainTimeout: opt.DrainTimeout, Secrets: store})
	clusters.rt.Store(rt)
	p.Runtime = rt

	if p.Admin, err = admin.Listen(adminAddr, rt, opt.Log); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	p.stop.Push(func(context.Context) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.Admin.Shutdown(ctx)
		return nil
	})
	var agent *identityAgent
	if opt.Identity != nil {
		if agent, err = newIdentity(opt.Identity, store, opt.Log); err != nil {
			return nil, err
		}
		p.stop.Push(agent.stop)
	}
	p.stop.Push(func(context.Context) error { return closeExtensions(p.filters) })
	p.stop.Push(rt.Shutdown)

	env := source.Env{Apply: applyTo(rt), Capabilities: Capabilities("", p.filters), Stats: st, XDS: xs, Log: opt.Log}
	if agent != nil {
		env.Identity = agent.Agent
	}
	if err := src.Start(env); err != nil {
		return nil, err
	}

	// Started: from here on nothing fails.
	if agent != nil {
		agent.run()
	}
	if r, ok := src.(source.ReadyReporter); ok {
		p.Admin.ReadyDetail = r.ReadyDetail
	}
	// POST /drain drains the proxy; RunUntilSignal replaces this to also end
	// the process.
	drain := func() {
		ctx, cancel := context.WithTimeout(context.Background(), opt.DrainTimeout)
		defer cancel()
		_ = p.Shutdown(ctx)
	}
	p.onDrain.Store(&drain)
	p.Admin.OnDrain = func() { (*p.onDrain.Load())() }
	ctx, cancel := context.WithCancel(context.Background())
	srcDone := make(chan struct{})
	go func() {
		defer close(srcDone)
		if err := src.Run(ctx); err != nil {
			opt.Log.Error("config source stopped; the running version stays", "error", err)
		}
	}()
	p.stop.Push(func(context.Context) error { cancel(); <-srcDone; return nil })
	// Last: POST /drain may run the stop stack from now on.
	p.Admin.Start()
	return p, nil
}

// applyTo is the sources' Apply on rt. A version equal to the running one is
// not an error; when it comes from another source or version (MeshKit
// answering with what last-known-good held) it is applied again so that
// the running version records where it now comes from.
func applyTo(rt *runtime.Runtime) source.Apply {
	return func(u source.Update) error {
		apply := rt.Apply
		if u.Reread {
			apply = rt.Reapply // certificate files may have changed
		}
		err := apply(u.Snapshot, u.Source)
		if errors.Is(err, runtime.ErrUnchanged) {
			err = nil
			if cur := rt.Current(); cur != nil && cur.Source != u.Source {
				err = rt.Reapply(u.Snapshot, u.Source)
			}
		}
		return err
	}
}

// Reload re-reads the config now (SIGHUP). In xDS mode the control plane
// drives reloads and this does nothing.
func (p *Proxy) Reload() {
	if r, ok := p.src.(source.Reloader); ok {
		r.Reload()
	}
}

// Shutdown drains listeners and stops everything.
// Concurrent and repeated calls wait for the first one and return its result.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.Admin.SetDraining()
		p.stopErr = p.stop.Run(ctx)
	})
	return p.stopErr
}

// ListenerAddr returns the bound address of a listener (tests use port 0).
func (p *Proxy) ListenerAddr(name string) net.Addr {
	if l := p.Runtime.Listener(name); l != nil {
		return l.Addr()
	}
	return nil
}

// RunUntilSignal runs the proxy until SIGINT/SIGTERM (graceful drain) and
// reloads on SIGHUP.
func RunUntilSignal(opt Options) error {
	// Before Start: /ready answers 200 before Start returns, and a SIGHUP
	// sent by whoever saw it must be queued, not kill the process.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	p, err := Start(opt)
	if err != nil {
		return err
	}
	drain := make(chan struct{}, 1)
	onDrain := func() {
		select {
		case drain <- struct{}{}:
		default:
		}
	}
	p.onDrain.Store(&onDrain)
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				opt.Log.Info("SIGHUP: reloading config")
				p.Reload()
				continue
			}
			opt.Log.Info("signal: draining", "signal", s.String(), "timeout", p.opt.DrainTimeout)
		case <-drain:
			opt.Log.Info("admin /drain: draining", "timeout", p.opt.DrainTimeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.opt.DrainTimeout)
		err := p.Shutdown(ctx)
		cancel()
		return err
	}
}
