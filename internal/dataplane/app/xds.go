package app

import (
	"strings"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/source"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
)

// DefaultAdminAddress is the admin address in xDS mode, where there is no
// config file to name one.
const DefaultAdminAddress = "127.0.0.1:9901"

// XDSOptions configures xDS mode (the xDS config source).
type XDSOptions = source.XDSOptions

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
