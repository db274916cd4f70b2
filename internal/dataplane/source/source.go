// Package source defines where a data plane's config versions come from,
// and holds the two sources it has: a config file (File: omnirelay.v1 or
// Envoy static_resources, re-applied when it changes, on SIGHUP and when a
// certificate file it names is renewed) and an xDS control plane (XDS: an
// ADS stream with signature checks and last-known-good).
//
// A source only produces versions: it hands each one to the Apply it is
// given and never touches listeners, the admin endpoint or the runtime
// itself, so the proxy (package app) and an embedding host run the same
// sources against their own runtime.
package source

import (
	"context"
	"log/slog"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// Source is one config source.
//
// Lifecycle: the owner calls Start once, on the goroutine that starts the
// proxy, then Run once, on a goroutine it owns. To stop, it cancels Run's
// context and waits for Run to return before it shuts the runtime down, so
// that Apply is never called on a stopped runtime.
type Source interface {
	// Start prepares the source before the proxy serves. A source that has
	// a version at hand (a file) applies it here, so that a proxy never
	// starts on a config it cannot apply: an error from Start fails the
	// start, and Run is not called. Start does not block on the network.
	Start(env Env) error
	// Run delivers versions to env.Apply, one at a time, until ctx ends,
	// then returns nil. Another error means the source gave up; the
	// running version stays. A rejected version is reported by the source
	// (a log line, a NACK) and does not end Run.
	Run(ctx context.Context) error
}

// Apply compiles, binds and publishes one version (runtime.Apply). It
// returns nil when the version runs, also when it equals the running one;
// otherwise the reason it was rejected, naming the resource, and the
// running version stays. It blocks for as long as the compile and the
// binding take (milliseconds for a thousand routes; seconds when a Wasm
// extension compiles for the first time), never on traffic. Calls are
// serialised by the runtime.
type Apply func(Update) error

// Update is one config version.
type Update struct {
	Snapshot *resources.Snapshot
	// Source says where the version comes from, as /ready and
	// omnirelay_config_version show it: "file:PATH", "xds:VERSION",
	// "lkg:VERSION".
	Source string
	// Reread applies the snapshot even when it equals the running one:
	// files it names (certificates, keys) may have changed on disk.
	Reread bool
}

// Env is what the owner offers its source at Start.
type Env struct {
	Apply Apply
	// Capabilities describe this build (filters, extension runtimes) for
	// the xDS Node; a source sets the Build it was given.
	Capabilities capability.Set
	// Identity is the proxy's identity agent, nil without one. It may not
	// hold an SVID yet (it runs after Start): read it at each use.
	Identity *identity.Agent
	// Stats counts versions rejected before they reach Apply (a file that
	// does not parse); the runtime counts the others.
	Stats *stats.Stats
	// XDS holds the metrics a source reports: omnirelay_config_source, and
	// the xDS stream's state and ACK/NACK counts.
	XDS *stats.XDS
	Log *slog.Logger
}

// Reloader is a source that re-reads its config on demand (SIGHUP). Reload
// does not block: the reload happens on Run's goroutine.
type Reloader interface{ Reload() }

// ReadyReporter is a source that qualifies a ready proxy's /ready body
// ("last-known-good; control plane unreachable"); "" adds nothing. It is
// called from the admin server's goroutines and must not block.
type ReadyReporter interface{ ReadyDetail() string }
