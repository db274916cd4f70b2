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

// headerOps is a compiled set of header additions and removals.
type headerOps struct {
	reqAdd, respAdd       []headerAdd
	reqRemove, respRemove []string
}

type headerAdd struct {
	name, value string
	action      corev3.HeaderValueOption_HeaderAppendAction
}

func compileHeaderOps(reqAdd []*corev3.HeaderValueOption, reqRm []string, respAdd []*corev3.HeaderValueOption, respRm []string) (headerOps, error) {
	var ops headerOps
	conv := func(in []*corev3.HeaderValueOption, what string) ([]headerAdd, error) {
		var out []headerAdd
		for i, o := range in {
			h := o.GetHeader()
			if h.GetKey() == "" {
				return nil, fmt.Errorf("%s[%d]: empty header name", what, i)
			}
			v := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				v = string(h.GetRawValue())
			}
			if strings.Contains(v, "%") && strings.Count(v, "%") >= 2 {
				return nil, fmt.Errorf("%s[%d]: header %q: formatter values (%%...%%) are not supported", what, i, h.GetKey())
			}
			act := o.GetAppendAction()
			if o.GetAppend() != nil && !o.GetAppend().GetValue() {
				act = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
			out = append(out, headerAdd{name: strings.ToLower(h.GetKey()), value: v, action: act})
		}
		return out, nil
	}
	var err error
	if ops.reqAdd, err = conv(reqAdd, "request_headers_to_add"); err != nil {
		return ops, err
	}
	if ops.respAdd, err = conv(respAdd, "response_headers_to_add"); err != nil {
		return ops, err
	}
	for _, n := range reqRm {
		ops.reqRemove = append(ops.reqRemove, strings.ToLower(n))
	}
	for _, n := range respRm {
		ops.respRemove = append(ops.respRemove, strings.ToLower(n))
	}
	return ops, nil
}

func (o *headerOps) empty() bool {
	return len(o.reqAdd) == 0 && len(o.respAdd) == 0 && len(o.reqRemove) == 0 && len(o.respRemove) == 0
}

func applyAdds(h *message.Headers, adds []headerAdd) {
	for i := range adds {
		a := &adds[i]
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(a.name, a.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !h.Has(a.name) {
				h.Add(a.name, a.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(a.name, a.value)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if h.Has(a.name) {
				h.Set(a.name, a.value)
			}
		}
	}
}

func (o *headerOps) applyRequest(h *message.Headers) {
	for _, n := range o.reqRemove {
		h.Del(n)
	}
	applyAdds(h, o.reqAdd)
}

func (o *headerOps) applyResponse(h *message.Headers) {
	for _, n := range o.respRemove {
		h.Del(n)
	}
	applyAdds(h, o.respAdd)
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
