package filter

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/types/known/anypb"
)

// Factory builds filters of one kind from their xDS typed config. A factory is
// registered under the fully qualified proto message name of its config
// (the part of the Any type URL after the last '/').
type Factory interface {
	// ConfigType is the proto message name, e.g.
	// "envoy.extensions.filters.http.fault.v3.HTTPFault".
	ConfigType() string
	// Build compiles a listener-level filter. It validates strictly and
	// returns an error that names the offending field.
	Build(cfg *anypb.Any, env *Env) (Filter, error)
}

// RouteFactory is implemented by factories whose filters accept a per-route
// override (xDS typed_per_filter_config). base is the listener-level filter
// the override replaces on that route.
type RouteFactory interface {
	BuildOverride(cfg *anypb.Any, base Filter, env *Env) (Filter, error)
}

// Env is what a factory may use while building: the filter's index in the
// chain (for Stream.State) and the name it was configured under. It grows as
// filters need more (metrics scope, clusters for call-outs).
type Env struct {
	Index int
	Name  string
	// Stats receives named counters the filter wants on /metrics; nil-safe.
	Stats Stats
}

// Stats is the narrow metrics surface filters get.
type Stats interface {
	Counter(name string, labels ...string) Counter
}

// Counter is a monotonically increasing metric.
type Counter interface{ Inc() }

// Registry maps config types to factories. It is built at start-up and
// read-only afterwards; registering a type twice is an error.
type Registry struct {
	byType map[string]Factory
}

// NewRegistry returns a registry with the given factories.
func NewRegistry(fs ...Factory) (*Registry, error) {
	r := &Registry{byType: make(map[string]Factory, len(fs))}
	for _, f := range fs {
		if err := r.Register(f); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds f. Duplicates are rejected, never overwritten.
func (r *Registry) Register(f Factory) error {
	t := f.ConfigType()
	if _, dup := r.byType[t]; dup {
		return fmt.Errorf("filter registry: config type %q registered twice", t)
	}
	r.byType[t] = f
	return nil
}

// Lookup returns the factory for an Any type URL or message name.
func (r *Registry) Lookup(typeURL string) (Factory, bool) {
	f, ok := r.byType[messageName(typeURL)]
	return f, ok
}

// Types lists registered config types, sorted (capability advertisement).
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.byType))
	for t := range r.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func messageName(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '/' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}
