// Package headermutation is the built-in header mutation HTTP filter
// (envoy.extensions.filters.http.header_mutation.v3.HeaderMutation): it adds,
// overwrites and removes request headers before the request goes on and
// response headers before the response goes downstream, with per-route
// additions through HeaderMutationPerRoute.
//
// Supported: request_mutations and response_mutations (append with any
// append_action, remove, remove_on_match), literal values and the formatter
// subset of headerops.Supported. Rejected with an error naming the field:
// query_parameter_mutations, request/response trailer mutations and
// formatter extensions.
package headermutation

import (
	"fmt"

	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
	"github.com/omnirelay/omnirelay/internal/dataplane/headerops"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"

// Factory builds header mutation filters. The zero value is ready to use.
type Factory struct{}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory.
func (Factory) Build(cfg *anypb.Any, _ *filter.Env) (filter.Filter, error) {
	var pb hmv3.HeaderMutation
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("header_mutation: %w", err)
	}
	f, err := compile(pb.GetMutations())
	if err != nil {
		return nil, fmt.Errorf("header_mutation: mutations.%w", err)
	}
	return f, nil
}

// BuildOverride implements filter.RouteFactory: cfg is a
// HeaderMutationPerRoute. The route's mutations run after the listener's, so
// on conflicting overwrites the route wins, matching Envoy's order (filter
// config first, then the per-route config).
func (Factory) BuildOverride(cfg *anypb.Any, base filter.Filter, _ *filter.Env) (filter.Filter, error) {
	var pb hmv3.HeaderMutationPerRoute
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("header_mutation per-route: %w", err)
	}
	route, err := compile(pb.GetMutations())
	if err != nil {
		return nil, fmt.Errorf("header_mutation per-route: mutations.%w", err)
	}
	if b, ok := base.(*mutator); ok {
		return &mutator{
			request:  headerops.Concat(b.request, route.request),
			response: headerops.Concat(b.response, route.response),
		}, nil
	}
	return route, nil
}

func compile(m *hmv3.Mutations) (*mutator, error) {
	switch {
	case len(m.GetQueryParameterMutations()) > 0:
		return nil, fmt.Errorf("query_parameter_mutations: not supported")
	case len(m.GetRequestTrailersMutations()) > 0:
		return nil, fmt.Errorf("request_trailers_mutations: not supported")
	case len(m.GetResponseTrailersMutations()) > 0:
		return nil, fmt.Errorf("response_trailers_mutations: not supported")
	case len(m.GetFormatters()) > 0:
		return nil, fmt.Errorf("formatters: formatter extensions are not supported (built-in subset: %s)", headerops.Supported)
	}
	req, err := headerops.CompileMutations("request_mutations", m.GetRequestMutations())
	if err != nil {
		return nil, err
	}
	resp, err := headerops.CompileMutations("response_mutations", m.GetResponseMutations())
	if err != nil {
		return nil, err
	}
	return &mutator{request: req, response: resp}, nil
}

// mutator is immutable after compile and shared by all streams.
type mutator struct {
	request  headerops.List
	response headerops.List
}

var _ filter.Filter = (*mutator)(nil)

// OnRequest implements filter.Filter.
func (m *mutator) OnRequest(s *filter.Stream) filter.Status {
	if m.request.Len() > 0 {
		// Like Envoy's filter, this does not clear the route: the route was
		// chosen (and its per-route mutations picked) on the original headers.
		m.request.Apply(&s.Req.Header, s)
	}
	return filter.Continue
}

// OnResponse implements filter.Filter.
func (m *mutator) OnResponse(s *filter.Stream) {
	if s.Resp != nil {
		m.response.Apply(&s.Resp.Header, s)
	}
}
