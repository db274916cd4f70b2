package capability

// Default filter lists for clients that do not send OmniRelay's metadata.
// They are sorted, as Set slices are, and built fresh on each call so that
// there is no package-level state a caller could change.

// envoyFilters are filters of a stock Envoy build, used when its Node
// lists no extensions.
func envoyFilters() []string {
	return []string{
		"envoy.filters.http.buffer",
		"envoy.filters.http.compressor",
		"envoy.filters.http.cors",
		"envoy.filters.http.csrf",
		"envoy.filters.http.decompressor",
		"envoy.filters.http.ext_authz",
		"envoy.filters.http.ext_proc",
		"envoy.filters.http.fault",
		"envoy.filters.http.grpc_web",
		"envoy.filters.http.header_mutation",
		"envoy.filters.http.health_check",
		"envoy.filters.http.jwt_authn",
		"envoy.filters.http.local_ratelimit",
		"envoy.filters.http.lua",
		"envoy.filters.http.ratelimit",
		"envoy.filters.http.rbac",
		"envoy.filters.http.router",
		"envoy.filters.http.wasm",
		"envoy.filters.network.ext_authz",
		"envoy.filters.network.http_connection_manager",
		"envoy.filters.network.local_ratelimit",
		"envoy.filters.network.rbac",
		"envoy.filters.network.tcp_proxy",
	}
}

// grpcFilters are the HTTP filters grpc-go's xDS client implements
// (xds/internal/httpfilter: fault, rbac, router), plus the
// HttpConnectionManager it reads from api_listener.
func grpcFilters() []string {
	return []string{
		"envoy.filters.http.fault",
		"envoy.filters.http.rbac",
		"envoy.filters.http.router",
		"envoy.filters.network.http_connection_manager",
	}
}

// unknownFilters is the least any xDS client serving HTTP or TCP can run.
func unknownFilters() []string {
	return []string{
		"envoy.filters.http.router",
		"envoy.filters.network.http_connection_manager",
		"envoy.filters.network.tcp_proxy",
	}
}
