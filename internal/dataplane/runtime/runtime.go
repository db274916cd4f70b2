// Package runtime owns the running configuration of a data plane: it compiles
// an xDS resource snapshot into immutable runtime objects (listener configs,
// route tables, filter chains, clusters), binds and keeps listening sockets,
// and swaps versions atomically. A version that fails to compile or bind is
// rejected as a whole and the running one stays in force.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/listener"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// Version is one compiled configuration (see compile); once published it is
// never modified: the request path reads it without locks.
type Version struct {
	ID        string
	Source    string
	AppliedAt time.Time
	Resources *resources.Snapshot
	Clusters  *cluster.Set
	Listeners map[string]*listener.Config

	clusterProtos map[string]*clusterv3.Cluster
	claProtos     map[string]*endpointv3.ClusterLoadAssignment
	secrets       map[string]*secrets.Secret
	// built are the clusters compile built for this version (the others
	// were carried over), until it is published or discarded.
	built []*cluster.Cluster
}

// Options configures a Runtime.
type Options struct {
	Log     *slog.Logger
	Stats   *stats.Stats
	Filters *filter.Registry
	Cluster *cluster.Env // optional overrides (dialer); Log and Stats are filled in
	// DrainTimeout bounds how long a removed listener's connections may run.
	DrainTimeout time.Duration
	// Secrets is the live secret store TLS contexts read their SDS secrets
	// from; the snapshot's Secret resources are published into it, and the
	// identity agent may set more (a new store when nil).
	Secrets *secrets.Store
}

// Runtime holds the running version and its listeners.
type Runtime struct {
	opt Options
	cur atomic.Pointer[Version]

	mu        sync.Mutex // serialises Apply and Shutdown
	listeners map[string]*listener.Listener
	// logFiles are the open access-log files by path, shared by every
	// version that names them so that a reload does not open them again.
	logFiles map[string]*os.File
	lmetrics *listener.Metrics
	closed   bool
	wg       sync.WaitGroup
}

// New returns an empty runtime.
func New(opt Options) *Runtime {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Stats == nil {
		opt.Stats = stats.New()
	}
	if opt.DrainTimeout == 0 {
		opt.DrainTimeout = 30 * time.Second
	}
	if opt.Secrets == nil {
		opt.Secrets = secrets.NewStore()
	}
	env := cluster.Env{}
	if opt.Cluster != nil {
		env = *opt.Cluster
	}
	env.Log, env.Stats, env.Secrets = opt.Log, opt.Stats, opt.Secrets
	opt.Cluster = &env
	return &Runtime{opt: opt, listeners: map[string]*listener.Listener{}, logFiles: map[string]*os.File{},
		lmetrics: listener.NewMetrics(opt.Stats.Registry)}
}

// Current returns the running version (nil before the first Apply).
func (rt *Runtime) Current() *Version { return rt.cur.Load() }

// Secrets returns the secret store (the identity agent publishes into it).
func (rt *Runtime) Secrets() *secrets.Store { return rt.opt.Secrets }

// Stats returns the metrics.
func (rt *Runtime) Stats() *stats.Stats { return rt.opt.Stats }

// ErrUnchanged is returned by Apply when the snapshot equals the running one.
var ErrUnchanged = errors.New("config unchanged")

// Apply validates, compiles, binds and publishes snap (see apply). On error
// nothing changes and the error names the resource.
// A snapshot equal to the running one returns ErrUnchanged.
func (rt *Runtime) Apply(snap *resources.Snapshot, source string) error {
	return rt.apply(snap, source, false)
}

// Reapply is Apply even when the snapshot is unchanged: files the resources
// name (certificates, keys) may have changed on disk (SIGHUP).
func (rt *Runtime) Reapply(snap *resources.Snapshot, source string) error {
	return rt.apply(snap, source, true)
}

// apply is the life of one config version: compile it (nothing running is
// touched), bind the sockets of its new listeners (a port in use rejects the
// version as a whole), swap it in (secrets, the version, listener configs;
// in-flight requests finish on the version they started with), then drain
// the listeners and close the clusters it no longer has. Applies are
// serialised by rt.mu.
func (rt *Runtime) apply(snap *resources.Snapshot, source string, force bool) (err error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	defer func() {
		switch {
		case errors.Is(err, ErrUnchanged):
			rt.opt.Stats.Reload("unchanged")
		case err != nil:
			rt.opt.Stats.Reload("rejected")
		default:
			rt.opt.Stats.Reload("applied")
		}
	}()
	if rt.closed {
		return errors.New("runtime is shut down")
	}
	id := snap.Hash()
	prev := rt.cur.Load()
	if prev != nil && prev.ID == id && !force {
		return ErrUnchanged
	}
	v, err := rt.compile(snap, id, source, prev)
	if err != nil {
		return err
	}
	fresh, err := rt.bind(v)
	if err != nil {
		v.discard()
		return err
	}
	rebuilt := len(v.built)
	removed := rt.swap(v, fresh)
	rt.retire(prev, v, removed)
	rt.opt.Stats.SetConfig(id, source)
	rt.opt.Log.Info("config applied", "version", id, "source", source,
		"listeners", len(v.Listeners), "clusters", len(snap.Clusters), "clusters_rebuilt", rebuilt)
	return nil
}

// bind opens the sockets of v's listeners that are new or moved, before
// anything is published, so that a port in use rejects the version instead
// of half-applying it. A listener that keeps its address keeps its socket.
func (rt *Runtime) bind(v *Version) (map[string]*listener.Listener, error) {
	fresh := map[string]*listener.Listener{}
	for name, lc := range v.Listeners {
		if old := rt.listeners[name]; old != nil && sameAddr(old, lc.Address) {
			continue
		}
		l, err := listener.Listen(lc, rt.opt.Log)
		if err != nil {
			for _, f := range fresh {
				f.Close()
			}
			return nil, err
		}
		fresh[name] = l
	}
	return fresh, nil
}

// swap publishes v: its secrets first (the new chains and clusters may name
// them), then the version, then each kept listener's new config; fresh
// listeners start serving. It returns the listeners v no longer has (or
// that moved to a fresh socket), still open, for retire to drain.
func (rt *Runtime) swap(v *Version, fresh map[string]*listener.Listener) (removed []*listener.Listener) {
	rt.opt.Secrets.SetSnapshot(v.secrets)
	v.published(time.Now())
	rt.cur.Store(v)
	for name, l := range rt.listeners {
		lc, keep := v.Listeners[name]
		if keep && fresh[name] == nil {
			l.Update(lc)
			continue
		}
		removed = append(removed, l)
		delete(rt.listeners, name)
	}
	for name, l := range fresh {
		rt.listeners[name] = l
		rt.wg.Add(1)
		go func() { defer rt.wg.Done(); l.Serve() }()
	}
	return removed
}

// retire drains the removed listeners (each within DrainTimeout, in the
// background: their in-flight requests finish on prev) and closes the
// clusters of prev that v did not carry over.
func (rt *Runtime) retire(prev, v *Version, removed []*listener.Listener) {
	for _, l := range removed {
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), rt.opt.DrainTimeout)
			defer cancel()
			_ = l.Drain(ctx)
		}()
	}
	if prev == nil {
		return
	}
	for _, c := range prev.Clusters.All() {
		if v.Clusters.Get(c.Name) != c {
			c.Close()
		}
	}
}

func sameAddr(l *listener.Listener, addr string) bool {
	return l.Config().Address == addr || l.Addr().String() == addr
}

// Listener returns the running listener of that name (tests use its Addr).
func (rt *Runtime) Listener(name string) *listener.Listener {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.listeners[name]
}

// Shutdown drains every listener (graceful: in-flight requests finish,
// keep-alive connections close) within ctx, then stops clusters.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	rt.closed = true
	ls := rt.listeners
	rt.listeners = map[string]*listener.Listener{}
	rt.mu.Unlock()
	var wg sync.WaitGroup
	var firstErr error
	var emu sync.Mutex
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Drain(ctx); err != nil {
				emu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("drain: %w", err)
				}
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	rt.wg.Wait()
	if v := rt.cur.Load(); v != nil {
		for _, c := range v.Clusters.All() {
			c.Close()
		}
	}
	rt.mu.Lock()
	for path, f := range rt.logFiles {
		_ = f.Close()
		delete(rt.logFiles, path)
	}
	rt.mu.Unlock()
	return firstErr
}
