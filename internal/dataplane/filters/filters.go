// Package filters gathers OmniRelay's built-in HTTP filters, one sub-package
// each: headermutation, ratelimit (local rate limit), fault and cors. Each is
// compiled once per config version from its Envoy typed config and shared by
// all streams of that version.
package filters

import (
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/cors"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/fault"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/headermutation"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/ratelimit"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/rbac"
)

// Builtins returns one factory of each built-in filter, for
// filter.NewRegistry. Every factory also implements filter.RouteFactory.
func Builtins() []filter.Factory {
	return []filter.Factory{
		headermutation.Factory{},
		ratelimit.Factory{},
		fault.Factory{},
		cors.Factory{},
		jwtauthn.NewFactory(),
		rbac.Factory{},
	}
}
