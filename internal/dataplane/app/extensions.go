package app

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/native"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// extensionRuntimes are the extension runtimes of this build, one per kind.
// Proxy-Wasm call-outs go to the clusters of the running version.
func extensionRuntimes(log *slog.Logger, clusters *clusterSource) []extension.Runtime {
	rts := []extension.Runtime{dsl.NewRuntime(dsl.Options{})}
	if rt := native.NewRuntime(log); rt != nil {
		rts = append(rts, rt)
	}
	calls := &wasm.ClusterCaller{Cluster: clusters.cluster}
	// Built by the first Wasm extension a config loads, not here.
	rts = append(rts, newLazyWasm(wasm.Options{Logger: log, HTTPCall: calls.Call, KnownUpstream: calls.Known, ClusterMetadata: calls.Metadata, Running: clusters.running}))
	return rts
}

// clusterSource resolves cluster names in the running config version for
// extensions (Proxy-Wasm call-outs). The registry, and the runtimes in it,
// are built before the data-plane runtime, which is set here once it
// exists; until then every name is unknown.
type clusterSource struct {
	rt atomic.Pointer[runtime.Runtime]
}

// running reports whether a config version is in service.
func (c *clusterSource) running() bool {
	rt := c.rt.Load()
	return rt != nil && rt.Current() != nil
}

func (c *clusterSource) cluster(name string) *cluster.Cluster {
	rt := c.rt.Load()
	if rt == nil {
		return nil
	}
	v := rt.Current()
	if v == nil {
		return nil
	}
	return v.Clusters.Get(name)
}

// proxyRegistry is NewRegistry plus the extension filter, which needs the
// process's metrics, the extension trust root (trustRoot, a PEM file of
// ed25519 public keys; empty: every extension package is refused) and the
// clusters extensions may call.
func proxyRegistry(log *slog.Logger, trustRoot string, st *stats.Stats, clusters *clusterSource) (*filter.Registry, error) {
	var trust *signing.Verifier
	if trustRoot != "" {
		keys, err := signing.LoadPublicKeys(trustRoot)
		if err != nil {
			return nil, fmt.Errorf("extension trust root: %w", err)
		}
		trust = signing.NewVerifier(keys...)
	}
	m, err := extension.NewMetrics(st.Registry)
	if err != nil {
		return nil, err
	}
	rts := extensionRuntimes(log, clusters)
	for _, rt := range rts {
		// Runtimes whose plugins define metrics (Proxy-Wasm) export them.
		if c, ok := rt.(interface{ Collector() prometheus.Collector }); ok {
			if err := st.Registry.Register(c.Collector()); err != nil {
				return nil, fmt.Errorf("extension runtime %s metrics: %w", rt.Kind(), err)
			}
		}
	}
	var reg *filter.Registry
	ef, err := extension.NewFactory(extension.Options{
		Trust: trust, Runtimes: rts, Metrics: m, Log: log,
		Capabilities: func() []string {
			c := Capabilities("", reg)
			return append(append(c.Filters, c.Runtimes...), c.ABIs...)
		},
	})
	if err != nil {
		return nil, err
	}
	reg, err = filter.NewRegistry(append(filters.Builtins(), ef)...)
	return reg, err
}

// extensionCapabilities returns the runtimes and ABIs of reg's extension
// filter (none when it has none).
func extensionCapabilities(reg *filter.Registry) (runtimes, abis []string) {
	f, ok := reg.Lookup(extension.ConfigType)
	if !ok {
		return nil, nil
	}
	ef, ok := f.(*extension.Factory)
	if !ok {
		return nil, nil
	}
	return ef.Kinds(), ef.ABIs()
}

// closeExtensions closes reg's extension factory, releasing every plugin it
// loaded (nil registry or no factory: nothing to do).
func closeExtensions(reg *filter.Registry) error {
	if reg == nil {
		return nil
	}
	f, ok := reg.Lookup(extension.ConfigType)
	if !ok {
		return nil
	}
	ef, ok := f.(*extension.Factory)
	if !ok {
		return nil
	}
	if err := ef.Close(); err != nil {
		return fmt.Errorf("close extensions: %w", err)
	}
	return nil
}
