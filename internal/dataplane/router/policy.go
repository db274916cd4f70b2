package router

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/headerops"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Retry conditions (Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on names).
const (
	retry5xx uint32 = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriableStatus
	retryRefusedStream
	retryRetriable4xx
	retryGRPCCancelled
	retryGRPCDeadline
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryGRPCInternal
)

var retryNames = map[string]uint32{
	"5xx":                    retry5xx,
	"gateway-error":          retryGatewayError,
	"reset":                  retryReset,
	"connect-failure":        retryConnectFailure,
	"retriable-status-codes": retryRetriableStatus,
	"refused-stream":         retryRefusedStream,
	"retriable-4xx":          retryRetriable4xx,
	"cancelled":              retryGRPCCancelled,
	"deadline-exceeded":      retryGRPCDeadline,
	"resource-exhausted":     retryGRPCResourceExhausted,
	"unavailable":            retryGRPCUnavailable,
	"internal":               retryGRPCInternal,
}

// RetryPolicy is a compiled xDS RetryPolicy.
type RetryPolicy struct {
	on            uint32
	NumRetries    int
	PerTryTimeout time.Duration
	statuses      []uint32
	Base, Max     time.Duration
}

func compileRetry(p *routev3.RetryPolicy) (*RetryPolicy, error) {
	rp := &RetryPolicy{NumRetries: 1, Base: 25 * time.Millisecond}
	for _, name := range strings.Split(p.GetRetryOn(), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		bit, ok := retryNames[name]
		if !ok {
			return nil, fmt.Errorf("retry_policy.retry_on: unsupported condition %q", name)
		}
		rp.on |= bit
	}
	if p.GetNumRetries() != nil {
		rp.NumRetries = int(p.GetNumRetries().GetValue())
	}
	rp.PerTryTimeout = p.GetPerTryTimeout().AsDuration()
	rp.statuses = append(rp.statuses, p.GetRetriableStatusCodes()...)
	sort.Slice(rp.statuses, func(i, j int) bool { return rp.statuses[i] < rp.statuses[j] })
	if b := p.GetRetryBackOff(); b != nil {
		rp.Base = b.GetBaseInterval().AsDuration()
		if b.GetMaxInterval() != nil {
			rp.Max = b.GetMaxInterval().AsDuration()
		}
		if rp.Base <= 0 {
			return nil, fmt.Errorf("retry_policy.retry_back_off.base_interval must be > 0")
		}
	}
	if rp.Max == 0 {
		rp.Max = 10 * rp.Base
	}
	if rp.Max < rp.Base {
		return nil, fmt.Errorf("retry_policy.retry_back_off: max_interval %v < base_interval %v", rp.Max, rp.Base)
	}
	return rp, nil
}

// retryOnStatus reports whether an HTTP status (and gRPC status, -1 if none)
// calls for a retry.
func (p *RetryPolicy) retryOnStatus(status int, grpcStatus int) bool {
	if status >= 500 && p.on&retry5xx != 0 {
		return true
	}
	if (status == 502 || status == 503 || status == 504) && p.on&retryGatewayError != 0 {
		return true
	}
	if status == 409 && p.on&retryRetriable4xx != 0 {
		return true
	}
	if p.on&retryRetriableStatus != 0 {
		for _, s := range p.statuses {
			if uint32(status) == s {
				return true
			}
		}
	}
	switch grpcStatus {
	case 1:
		return p.on&retryGRPCCancelled != 0
	case 4:
		return p.on&retryGRPCDeadline != 0
	case 8:
		return p.on&retryGRPCResourceExhausted != 0
	case 13:
		return p.on&retryGRPCInternal != 0
	case 14:
		return p.on&retryGRPCUnavailable != 0
	}
	return false
}

// backoff returns the jittered exponential backoff before retry n (1-based):
// a uniform draw in [0, min(base*2^(n-1), max)], as Envoy does ("full jitter").
func (p *RetryPolicy) backoff(n int, rnd func(uint64) uint64) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	if d > p.Max {
		d = p.Max
	}
	if d <= 0 {
		return 0
	}
	return time.Duration(rnd(uint64(d)))
}

// headerOps is a compiled set of header additions and removals at one level
// of a route configuration (route_config, virtual host, route, weighted
// cluster). Removals run before additions, as in Envoy.
type headerOps struct {
	req, resp headerops.List
}

func compileHeaderOps(reqAdd []*corev3.HeaderValueOption, reqRm []string, respAdd []*corev3.HeaderValueOption, respRm []string) (headerOps, error) {
	var ops headerOps
	rm, err := headerops.CompileRemovals("request_headers_to_remove", reqRm)
	if err != nil {
		return ops, err
	}
	add, err := headerops.CompileOptions("request_headers_to_add", reqAdd)
	if err != nil {
		return ops, err
	}
	ops.req = headerops.Concat(rm, add)
	if rm, err = headerops.CompileRemovals("response_headers_to_remove", respRm); err != nil {
		return ops, err
	}
	if add, err = headerops.CompileOptions("response_headers_to_add", respAdd); err != nil {
		return ops, err
	}
	ops.resp = headerops.Concat(rm, add)
	return ops, nil
}

func (o *headerOps) applyRequest(s *filter.Stream) {
	if o.req.Len() > 0 {
		o.req.Apply(&s.Req.Header, s)
	}
}

func (o *headerOps) applyResponse(s *filter.Stream, resp *message.Response) {
	if o.resp.Len() > 0 {
		o.resp.Apply(&resp.Header, s)
	}
}

func compileOverrides(m map[string]*anypb.Any, fb FilterBuilder) ([]filter.Filter, error) {
	if len(m) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []filter.Filter
	for _, n := range names {
		if fb == nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: no filter of that name on this listener", n)
		}
		idx, f, err := fb(n, m[n])
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", n, err)
		}
		if idx < 0 {
			continue // filter not configured on this listener: ignored like Envoy
		}
		for len(out) <= idx {
			out = append(out, nil)
		}
		out[idx] = f
	}
	return out, nil
}
