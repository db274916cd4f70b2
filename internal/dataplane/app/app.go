// Package app assembles a running data plane from its parts: the runtime,
// the built-in filters, the admin endpoint and a config source. The
// omnirelay binary and the tests start the proxy through it, so what the
// tests exercise is what users run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/admin"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/static"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
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
	XDS     *xdsclient.Client
	watcher *static.Watcher
	// stopIdentity ends the identity agent (nil without one).
	stopIdentity func()
	// filters is the registry the runtime builds from; its extension
	// factory holds the loaded plugins (wazero modules, native handles).
	filters *filter.Registry
	cancel  context.CancelFunc
	done    chan struct{}
	opt     Options

	stopOnce sync.Once
	stopErr  error
}

// NewRegistry returns the filter registry with every built-in filter.
func NewRegistry() (*filter.Registry, error) {
	return filter.NewRegistry(filters.Builtins()...)
}

// Start loads the config, applies it, and starts the admin server and the
// file watcher. A config that does not load is an error: a proxy never starts
// on a config it cannot fully apply.
func Start(opt Options) (*Proxy, error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opt.DrainTimeout == 0 {
		opt.DrainTimeout = 30 * time.Second
	}
	if opt.XDS != nil {
		if opt.ConfigPath != "" {
			return nil, errors.New("a config file and an xDS server are exclusive config sources")
		}
		return startXDS(opt)
	}
	data, err := os.ReadFile(opt.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	loaded, err := static.Parse(opt.ConfigPath, data)
	if err != nil {
		return nil, err
	}
	st := stats.New()
	clusters := &clusterSource{}
	reg, err := proxyRegistry(opt.Log, opt.ExtensionTrustRoot, st, clusters)
	if err != nil {
		return nil, err
	}
	stats.NewXDS(st).SetSource("file")
	store := secrets.NewStore()
	rt := runtime.New(runtime.Options{Log: opt.Log, Stats: st, Filters: reg, DrainTimeout: opt.DrainTimeout, Secrets: store})
	clusters.rt.Store(rt)
	if err := rt.Apply(loaded.Snapshot, "file:"+opt.ConfigPath); err != nil {
		_ = rt.Shutdown(context.Background())
		return nil, err
	}
	var stopIdentity func()
	if opt.Identity != nil {
		if stopIdentity, err = startIdentity(opt.Identity, store, opt.Log); err != nil {
			_ = rt.Shutdown(context.Background())
			return nil, identityError(err)
		}
	}
	adminAddr := loaded.AdminAddress
	if opt.AdminAddress != "" {
		adminAddr = opt.AdminAddress
	}
	adm, err := admin.Listen(adminAddr, rt, opt.Log)
	if err != nil {
		_ = rt.Shutdown(context.Background())
		if stopIdentity != nil {
			stopIdentity()
		}
		return nil, fmt.Errorf("admin: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Runtime: rt, Admin: adm, cancel: cancel, done: make(chan struct{}), opt: opt, stopIdentity: stopIdentity, filters: reg}
	p.watcher = static.NewWatcher(opt.ConfigPath, func(l *static.Loaded, forced bool) error {
		apply := rt.Apply
		if forced {
			apply = rt.Reapply // certificate files may have changed
		}
		err := apply(l.Snapshot, "file:"+opt.ConfigPath)
		if err == nil || errors.Is(err, runtime.ErrUnchanged) {
			return nil
		}
		return rejectedByRuntime{err}
	}, func(err error) {
		// The runtime counts the versions it rejects; a file that does not
		// even parse or validate never reaches it and is counted here.
		if !errors.As(err, new(rejectedByRuntime)) {
			rt.Stats().Reload("rejected")
		}
		opt.Log.Error("config rejected; the running version stays in force", "error", err)
	}, opt.Log)
	p.watcher.Interval = opt.PollInterval
	p.watcher.Files = static.ReferencedFiles(loaded.Snapshot)
	// POST /drain drains the proxy; RunUntilSignal replaces this to also end
	// the process.
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
	go func() {
		defer close(p.done)
		p.watcher.Run(ctx, static.Sum(data))
	}()
	opt.Log.Info("omnirelay started", "config", opt.ConfigPath, "format", loaded.Format, "admin", adm.Addr().String())
	return p, nil
}

// rejectedByRuntime marks an error from Runtime.Apply, which has already
// counted the rejection.
type rejectedByRuntime struct{ error }

func (e rejectedByRuntime) Unwrap() error { return e.error }

// Reload re-reads the config now (SIGHUP). In xDS mode the control plane
// drives reloads and this does nothing.
func (p *Proxy) Reload() {
	if p.watcher != nil {
		p.watcher.Trigger()
	}
}

// Shutdown drains listeners and stops everything.
// Concurrent and repeated calls wait for the first one and return its result.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.Admin.SetDraining()
		p.cancel()
		<-p.done
		p.stopErr = p.Runtime.Shutdown(ctx)
		// Every listener has drained: release the extension plugins.
		if err := closeExtensions(p.filters); err != nil && p.stopErr == nil {
			p.stopErr = err
		}
		if p.stopIdentity != nil {
			p.stopIdentity()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.Admin.Shutdown(sctx)
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
	p, err := Start(opt)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	drain := make(chan struct{}, 1)
	p.Admin.OnDrain = func() {
		select {
		case drain <- struct{}{}:
		default:
		}
	}
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
