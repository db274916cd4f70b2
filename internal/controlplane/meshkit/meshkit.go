// Package meshkit assembles the control plane: it keeps the desired
// configuration (omnirelay.v1, stored whole in the store so that a replica
// never serves half of an apply), joins it with the service registry, and
// turns the result into one xDS snapshot per group of consumers: OmniRelay
// builds with the same capabilities share one, Envoy gets the standard ADS
// shapes, gRPC proxyless clients get api_listener shapes. Snapshots are
// rebuilt off the xDS streams' goroutines, one rebuild at a time, and
// published to the xDS server's cache; the server wakes the streams.
//
// It also carries out extension rollouts (rollout.go): canary, promote and
// rollback steps rewrite the stored desired config, and a canary by share
// of proxies is resolved per group, OmniRelay groups being keyed by a stable
// node-id bucket as well as by capabilities (groups.go).
package meshkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/loadstats"
	"github.com/omnirelay/omnirelay/internal/controlplane/registry"
	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// KeyDesired is the store key of the desired configuration. It is one key so
// that an apply is atomic on every store, etcd included.
const KeyDesired = "/config/desired"

// Options configures a MeshKit.
type Options struct {
	Store    store.Store
	Registry *registry.Registry
	// Signer signs every resource served to OmniRelay nodes; nil serves
	// them unsigned (a proxy with a trust root will then NACK them).
	Signer *signing.Signer
	Log    *slog.Logger
	// Debounce coalesces bursts of changes (registry heartbeats flipping
	// health, several applies) into one rebuild. Default 10ms.
	Debounce time.Duration
	// Metrics, when set, receives MeshKit's Prometheus series (metrics.go).
	Metrics prometheus.Registerer
	// Directory names this replica in the proxy directory and, on a store
	// with leases (etcd), sets how it is shared (directory_share.go).
	Directory DirectoryOptions
	// LoadReportInterval is how often proxies are asked to send their
	// load reports (LRS; default DefaultLoadReportInterval).
	LoadReportInterval time.Duration
	// HistoryKeep is how many config versions the store keeps
	// (versions.DefaultKeep when 0, at most versions.MaxKeep).
	HistoryKeep int
}

// MeshKit is a running control plane core (without its network servers:
// the caller registers Server() and the API on its own gRPC servers).
type MeshKit struct {
	opt     Options
	cache   *xdsserver.Cache
	server  *xdsserver.Server
	proxies *proxyDirectory
	signed  *signatureCache
	metrics *metrics // nil: not recorded
	// packages resolves store:NAME@VERSION extension packages.
	packages func(name, version string) ([]byte, error)

	mu      sync.Mutex
	desired *desired            // nil until a config was applied
	staged  *stagedChange       // a running rollout's canary; nil without
	groups  map[string]groupKey // every group a node has asked for
	dirty   chan struct{}       // 1-slot rebuild trigger

	buildMu sync.Mutex // one build at a time; held while building a group
	// built holds the snapshots of the last rebuild by desired version,
	// capability set and canary side (buildGroup), so that a node opening
	// a new bucket group reuses its side's snapshot; under buildMu.
	built map[string]*builtSnapshot
	// rolloutMu serialises this replica's rollout steps (rollout.go); the
	// store's revision check orders them with every other writer.
	rolloutMu sync.Mutex
	// rolloutKick wakes the rollout driver (staged.go).
	rolloutKick chan struct{}
	// loads holds the proxies' recent load reports (loadreports.go).
	loads *loadstats.Window
	// verdictWritten is when the driver last stored a verdict; driver
	// goroutine only.
	verdictWritten time.Time
	// leading: this replica leads the rollout election.
	leading atomic.Bool
}

// desired is the stored form of the desired configuration: the version
// record in force (its number, author, summary and signature travel with
// the document so that one write is atomic on every store).
type desired struct {
	versions.Record

	cfg *config.Config // parsed; not stored
}

// New returns a MeshKit. Call Run to start following the store.
func New(opt Options) *MeshKit {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Debounce == 0 {
		opt.Debounce = 10 * time.Millisecond
	}
	m := &MeshKit{
		opt:     opt,
		cache:   xdsserver.NewCache(),
		proxies: newProxyDirectory(),
		signed:  newSignatureCache(),
		groups:  map[string]groupKey{},
		dirty:   make(chan struct{}, 1),

		rolloutKick: make(chan struct{}, 1),
		loads:       loadstats.NewWindow(2 * rollout.MaxWindow),
	}
	if opt.Store != nil {
		m.packages = extstore.Resolver(opt.Store)
	}
	m.metrics = newMetrics(opt.Metrics, m)
	m.proxies.metrics = m.metrics
	m.proxies.enableShare(opt.Store, opt.Directory, opt.Log)
	m.server = xdsserver.New(xdsserver.Options{
		Cache:     m.cache,
		Group:     m.group,
		Callbacks: m.proxies.callbacks(),
		// Load reports come on the xDS port (both transports).
		LoadReports: loadReceiver{m},
		Log:         opt.Log,
	})
	return m
}

// Server returns the xDS server (register it on a gRPC server).
func (m *MeshKit) Server() *xdsserver.Server { return m.server }

// Cache returns the snapshot cache (tests and the load tool read it).
func (m *MeshKit) Cache() *xdsserver.Cache { return m.cache }

// Load reads the desired configuration from the store. Call it before
// serving xDS: a replica that served before knowing the stored config would
// have nothing to answer a proxy with.
func (m *MeshKit) Load(ctx context.Context) error {
	if err := m.reloadDesired(ctx); err != nil {
		return err
	}
	return m.reloadRollout(ctx)
}

// Run follows the store and the registry until ctx ends, rebuilding
// snapshots on change.
func (m *MeshKit) Run(ctx context.Context) error {
	m.trigger()
	var wg sync.WaitGroup
	wg.Add(6)
	go func() { defer wg.Done(); m.shareLoads(ctx) }()
	go func() { defer wg.Done(); m.followStore(ctx) }()
	go func() { defer wg.Done(); m.followRollout(ctx) }()
	go func() { defer wg.Done(); m.driveRollouts(ctx) }()
	go func() { defer wg.Done(); m.followRegistry(ctx) }()
	go func() { defer wg.Done(); m.proxies.run(ctx) }()
	m.rebuildLoop(ctx)
	wg.Wait()
	return nil
}

func (m *MeshKit) trigger() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// followStore watches the desired-config key so that an apply on another
// replica (etcd) reaches this replica's proxies too.
func (m *MeshKit) followStore(ctx context.Context) {
	for ctx.Err() == nil {
		_, rev, err := m.opt.Store.List(ctx, KeyDesired)
		if err != nil {
			m.opt.Log.Warn("store list failed; retrying", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		if err := m.reloadDesired(ctx); err != nil {
			m.opt.Log.Error("stored configuration not loaded", "error", err)
		}
		for range m.opt.Store.Watch(ctx, KeyDesired, rev) {
			if err := m.reloadDesired(ctx); err != nil {
				m.opt.Log.Error("stored configuration not loaded; the running one stays", "error", err)
			}
		}
		// The watch ended (compaction, store restart): list again.
	}
}

func (m *MeshKit) followRegistry(ctx context.Context) {
	if m.opt.Registry == nil {
		return
	}
	for range m.opt.Registry.Changes(ctx) {
		m.trigger()
	}
}

func (m *MeshKit) rebuildLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.dirty:
		}
		// Coalesce a burst into one rebuild.
		t := time.NewTimer(m.opt.Debounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m.rebuildAll()
	}
}

// reloadDesired reads the stored configuration and, when it differs from
// the one in force, parses and validates it before switching to it.
func (m *MeshKit) reloadDesired(ctx context.Context) error {
	kv, err := m.opt.Store.Get(ctx, KeyDesired)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", KeyDesired, err)
	}
	d, err := decodeDesired(kv.Value)
	if err != nil {
		return err
	}
	m.mu.Lock()
	same := m.desired != nil && m.desired.Version == d.Version && m.desired.Number == d.Number
	m.mu.Unlock()
	if same {
		return nil
	}
	cfg, err := m.parseAndCheck(d.Filename, d.YAML)
	if err != nil {
		return fmt.Errorf("stored configuration %s: %w", d.Version, err)
	}
	d.cfg = cfg
	m.mu.Lock()
	m.desired = d
	m.mu.Unlock()
	if err := m.ensureHistory(ctx, d); err != nil {
		m.opt.Log.Warn("config version not recorded in the history", "number", d.Number, "error", err)
	}
	m.opt.Log.Info("configuration in force", "version", d.Version, "number", d.Number, "file", d.Filename)
	m.trigger()
	return nil
}

// Apply validates a configuration document and stores it as the desired
// state (a new version, origin apply). It implements the API's
// ConfigService. An invalid document is rejected with every problem (file,
// path, reason) and nothing is stored.
func (m *MeshKit) Apply(ctx context.Context, filename string, data []byte) (version string, err error) {
	a, err := m.ApplyVersion(ctx, filename, data, versions.OriginApply)
	return a.Version, err
}

// Get returns the desired configuration document and its version.
func (m *MeshKit) Get(ctx context.Context) ([]byte, string, error) {
	m.mu.Lock()
	d := m.desired
	m.mu.Unlock()
	if d == nil {
		return nil, "", fmt.Errorf("no configuration applied yet: %w", store.ErrNotFound)
	}
	return d.YAML, d.Version, nil
}

// group maps a node to its snapshot group, building the group's snapshot
// the first time a node of a new kind or capability set asks.
func (m *MeshKit) group(node *corev3.Node) (string, error) {
	if node.GetId() == "" {
		return "", errors.New("node id is required")
	}
	k := groupOf(node)
	g := k.name()
	m.mu.Lock()
	_, known := m.groups[g]
	if !known {
		m.groups[g] = k
	}
	m.mu.Unlock()
	if !known {
		m.buildMu.Lock()
		m.buildGroup(g, k, m.built)
		m.buildMu.Unlock()
	}
	return g, nil
}

func (m *MeshKit) rebuildAll() {
	m.buildMu.Lock()
	defer m.buildMu.Unlock()
	defer m.metrics.rebuilt(time.Now())
	m.mu.Lock()
	groups := make(map[string]groupKey, len(m.groups))
	for g, k := range m.groups {
		groups[g] = k
	}
	m.mu.Unlock()
	// Groups that differ only by canary bucket mostly get the same
	// resources: build each distinct snapshot once.
	m.built = map[string]*builtSnapshot{}
	for g, k := range groups {
		m.buildGroup(g, k, m.built)
	}
	m.signed.sweep()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
