// Package fault is the built-in fault injection HTTP filter
// (envoy.extensions.filters.http.fault.v3.HTTPFault): it delays requests,
// aborts them with an HTTP or gRPC status, and throttles response bodies, for
// a configured fraction of requests, optionally only for requests matching
// headers or coming from given downstream nodes.
//
// Semantics follow Envoy's filter:
//   - A delay comes first; the abort decision is taken after it. A delay
//     waits on a timer and ends early, with a local reply, when s.Ctx is done.
//   - An unset percentage is 0%, as in Envoy (the proto default).
//   - Header-controlled faults are supported: x-envoy-fault-delay-request
//     (ms), x-envoy-fault-abort-request (HTTP status 200-599),
//     x-envoy-fault-abort-grpc-request (gRPC status),
//     x-envoy-fault-throughput-response (KiB/s), and the matching
//     "-percentage" headers, which can lower (never raise) the configured
//     numerator.
//   - max_active_faults bounds streams with an injected fault in progress;
//     per-route overrides share the listener filter's count.
//   - An abort of a gRPC request is an HTTP 200 trailers-only response with
//     grpc-status (grpc_status, or mapped from http_status) and grpc-message.
//   - There is no runtime layer: the *_runtime keys are accepted and ignored.
//   - Rejected: upstream_cluster (the cluster is picked after this filter
//     runs) and filter_metadata (no dynamic metadata yet).
//
// Counters (through filter.Env.Stats, label filter = the configured name):
// fault_delays_injected, fault_aborts_injected, fault_response_rl_injected,
// fault_faults_overflow.
package fault

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/localreply"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "envoy.extensions.filters.http.fault.v3.HTTPFault"

// DefaultAbortBody is the abort body when response_body is empty.
const DefaultAbortBody = "fault filter abort"

// Request headers that control faults (Envoy's names).
const (
	HeaderDelay                = "x-envoy-fault-delay-request"
	HeaderDelayPercentage      = "x-envoy-fault-delay-request-percentage"
	HeaderAbort                = "x-envoy-fault-abort-request"
	HeaderAbortGRPC            = "x-envoy-fault-abort-grpc-request"
	HeaderAbortPercentage      = "x-envoy-fault-abort-request-percentage"
	HeaderThroughput           = "x-envoy-fault-throughput-response"
	HeaderThroughputPercentage = "x-envoy-fault-throughput-response-percentage"
	headerDownstreamNode       = "x-envoy-downstream-service-node"
)

// Factory builds fault filters. The zero value is ready to use.
type Factory struct{}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory.
func (Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	f, err := compile(cfg, env, new(atomic.Int64))
	if err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	return f, nil
}

// BuildOverride implements filter.RouteFactory: the route's HTTPFault
// replaces the listener's settings but shares its active-fault count, so
// max_active_faults stays one budget per listener filter.
func (Factory) BuildOverride(cfg *anypb.Any, base filter.Filter, env *filter.Env) (filter.Filter, error) {
	active := new(atomic.Int64)
	if b, ok := base.(*injector); ok {
		active = b.active
	}
	f, err := compile(cfg, env, active)
	if err != nil {
		return nil, fmt.Errorf("fault per-route: %w", err)
	}
	return f, nil
}

type delaySpec struct {
	fixed      time.Duration
	fromHeader bool
	pct        xdsconfig.Percent
}

type abortSpec struct {
	httpStatus int // 0: none
	grpcStatus int // localreply.NoGRPCStatus: none
	fromHeader bool
	pct        xdsconfig.Percent
}

type throttleSpec struct {
	kbps       uint64
	fromHeader bool
	pct        xdsconfig.Percent
}

// injector is immutable after compile except for the shared active count.
type injector struct {
	index     int
	delay     *delaySpec
	abort     *abortSpec
	throttle  *throttleSpec
	body      string
	headers   strmatch.Headers
	nodes     []string
	maxActive int64 // 0: unlimited
	active    *atomic.Int64

	statDelays, statAborts, statThrottles, statOverflow filter.Counter
}

var (
	_ filter.Filter    = (*injector)(nil)
	_ filter.Completer = (*injector)(nil)
)

func compile(cfg *anypb.Any, env *filter.Env, active *atomic.Int64) (*injector, error) {
	var pb faultv3.HTTPFault
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, err
	}
	if pb.GetUpstreamCluster() != "" {
		return nil, fmt.Errorf("upstream_cluster: not supported (the cluster is chosen after this filter runs)")
	}
	if pb.GetFilterMetadata() != nil {
		return nil, fmt.Errorf("filter_metadata: not supported")
	}
	f := &injector{active: active, nodes: pb.GetDownstreamNodes(), body: DefaultAbortBody}
	var err error
	if d := pb.GetDelay(); d != nil {
		if f.delay, err = compileDelay(d); err != nil {
			return nil, fmt.Errorf("delay.%w", err)
		}
	}
	if a := pb.GetAbort(); a != nil {
		if f.abort, err = compileAbort(a); err != nil {
			return nil, fmt.Errorf("abort.%w", err)
		}
		if a.GetResponseBody() != "" {
			f.body = a.GetResponseBody()
		}
	}
	if r := pb.GetResponseRateLimit(); r != nil {
		if f.throttle, err = compileThrottle(r); err != nil {
			return nil, fmt.Errorf("response_rate_limit.%w", err)
		}
	}
	if f.headers, err = strmatch.CompileHeaders("headers", pb.GetHeaders()); err != nil {
		return nil, err
	}
	if m := pb.GetMaxActiveFaults(); m != nil {
		f.maxActive = int64(m.GetValue())
		if f.maxActive == 0 {
			// Envoy treats 0 as "no faults may be active": inject nothing.
			f.maxActive = -1
		}
	}
	name := ""
	if env != nil {
		f.index, name = env.Index, env.Name
	}
	f.statDelays = xdsconfig.Counter(env, "fault_delays_injected", "filter", name)
	f.statAborts = xdsconfig.Counter(env, "fault_aborts_injected", "filter", name)
	f.statThrottles = xdsconfig.Counter(env, "fault_response_rl_injected", "filter", name)
	f.statOverflow = xdsconfig.Counter(env, "fault_faults_overflow", "filter", name)
	return f, nil
}

func compileDelay(d *commonfaultv3.FaultDelay) (*delaySpec, error) {
	pct, err := xdsconfig.FromFraction(d.GetPercentage(), xdsconfig.None())
	if err != nil {
		return nil, fmt.Errorf("percentage.%w", err)
	}
	spec := &delaySpec{pct: pct}
	switch v := d.GetFaultDelaySecifier().(type) {
	case *commonfaultv3.FaultDelay_FixedDelay:
		spec.fixed = v.FixedDelay.AsDuration()
		if spec.fixed < 0 {
			return nil, fmt.Errorf("fixed_delay: %v is negative", spec.fixed)
		}
	case *commonfaultv3.FaultDelay_HeaderDelay_:
		spec.fromHeader = true
	default:
		return nil, fmt.Errorf("fixed_delay or header_delay: one is required")
	}
	return spec, nil
}

func compileAbort(a *faultv3.FaultAbort) (*abortSpec, error) {
	pct, err := xdsconfig.FromFraction(a.GetPercentage(), xdsconfig.None())
	if err != nil {
		return nil, fmt.Errorf("percentage.%w", err)
	}
	spec := &abortSpec{pct: pct, grpcStatus: localreply.NoGRPCStatus}
	switch v := a.GetErrorType().(type) {
	case *faultv3.FaultAbort_HttpStatus:
		if v.HttpStatus < 200 || v.HttpStatus >= 600 {
			return nil, fmt.Errorf("http_status: %d is outside [200, 600)", v.HttpStatus)
		}
		spec.httpStatus = int(v.HttpStatus)
	case *faultv3.FaultAbort_GrpcStatus:
		// Like Envoy: a non-gRPC request aborted with a gRPC status gets 503.
		spec.httpStatus, spec.grpcStatus = 503, int(v.GrpcStatus)
	case *faultv3.FaultAbort_HeaderAbort_:
		spec.fromHeader = true
	default:
		return nil, fmt.Errorf("http_status, grpc_status or header_abort: one is required")
	}
	return spec, nil
}

func compileThrottle(r *commonfaultv3.FaultRateLimit) (*throttleSpec, error) {
	pct, err := xdsconfig.FromFraction(r.GetPercentage(), xdsconfig.None())
	if err != nil {
		return nil, fmt.Errorf("percentage.%w", err)
	}
	spec := &throttleSpec{pct: pct}
	switch v := r.GetLimitType().(type) {
	case *commonfaultv3.FaultRateLimit_FixedLimit_:
		if v.FixedLimit.GetLimitKbps() == 0 {
			return nil, fmt.Errorf("fixed_limit.limit_kbps: must be above 0")
		}
		spec.kbps = v.FixedLimit.GetLimitKbps()
	case *commonfaultv3.FaultRateLimit_HeaderLimit_:
		spec.fromHeader = true
	default:
		return nil, fmt.Errorf("fixed_limit or header_limit: one is required")
	}
	return spec, nil
}

// streamFault is the per-stream record of an injected fault: it holds one
// slot of the active-fault count until OnComplete, and the response
// throughput limit. Allocated only for streams that get a fault.
type streamFault struct {
	active *atomic.Int64
	kbps   uint64
}

// OnRequest implements filter.Filter.
func (f *injector) OnRequest(s *filter.Stream) filter.Status {
	if f.delay == nil && f.abort == nil && f.throttle == nil {
		return filter.Continue
	}
	h := &s.Req.Header
	if len(f.nodes) > 0 && !f.nodeMatches(h) {
		return filter.Continue
	}
	if !f.headers.Match(h) {
		return filter.Continue
	}
	if f.maxActive != 0 && f.active.Load() >= f.maxActive {
		f.statOverflow.Inc()
		return filter.Continue
	}
	if f.throttle != nil {
		if kbps := f.throttleKbps(h); kbps > 0 {
			f.acquire(s).kbps = kbps
			f.statThrottles.Inc()
		}
	}
	if f.delay != nil {
		if d, ok := f.delayFor(h); ok && d > 0 {
			f.acquire(s)
			f.statDelays.Inc()
			addFlag(s, "DI")
			if err := wait(s.Ctx, d); err != nil {
				status, body := 503, "request cancelled during fault delay\n"
				if errors.Is(err, context.DeadlineExceeded) {
					status, body = 504, "request timed out during fault delay\n"
				}
				addFlag(s, "DC")
				localreply.Send(s, status, localreply.NoGRPCStatus, body)
				return filter.Stop
			}
		}
	}
	if f.abort != nil {
		if httpStatus, grpcStatus, ok := f.abortFor(h); ok {
			f.acquire(s)
			f.statAborts.Inc()
			addFlag(s, "FI")
			localreply.Send(s, httpStatus, grpcStatus, f.body)
			return filter.Stop
		}
	}
	return filter.Continue
}

// OnResponse implements filter.Filter: it throttles the body when a response
// rate limit was chosen for this stream.
func (f *injector) OnResponse(s *filter.Stream) {
	st, ok := s.State(f.index).(*streamFault)
	if !ok || st.kbps == 0 || s.Resp == nil || s.Resp.Body == nil {
		return
	}
	s.Resp.Body = newThrottledReader(s.Ctx, s.Resp.Body, st.kbps*1024)
}

// OnComplete implements filter.Completer: it releases the stream's
// active-fault slot. The chain calls it on the listener's filter, so the
// slot records which count it came from.
func (f *injector) OnComplete(s *filter.Stream) {
	if st, ok := s.State(f.index).(*streamFault); ok && st.active != nil {
		st.active.Add(-1)
		st.active = nil
	}
}

// acquire returns the stream's fault record, taking an active-fault slot the
// first time.
func (f *injector) acquire(s *filter.Stream) *streamFault {
	if st, ok := s.State(f.index).(*streamFault); ok {
		return st
	}
	st := &streamFault{}
	s.SetState(f.index, st)
	if s.State(f.index) == st {
		// Count the slot only when the stream can hold the record that
		// releases it (Stream has a fixed number of state slots).
		st.active = f.active
		f.active.Add(1)
	}
	return st
}

func (f *injector) nodeMatches(h *message.Headers) bool {
	v, ok := h.Get(headerDownstreamNode)
	if !ok {
		return false
	}
	for _, n := range f.nodes {
		if string(v) == n {
			return true
		}
	}
	return false
}

func (f *injector) delayFor(h *message.Headers) (time.Duration, bool) {
	d := f.delay
	if !headerPercent(h, HeaderDelayPercentage, d.pct).Sample() {
		return 0, false
	}
	if !d.fromHeader {
		return d.fixed, true
	}
	ms, ok := headerUint(h, HeaderDelay)
	if !ok || ms > uint64(time.Duration(1<<62)/time.Millisecond) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

func (f *injector) abortFor(h *message.Headers) (httpStatus, grpcStatus int, ok bool) {
	a := f.abort
	if !headerPercent(h, HeaderAbortPercentage, a.pct).Sample() {
		return 0, 0, false
	}
	if !a.fromHeader {
		return a.httpStatus, a.grpcStatus, true
	}
	if code, ok := headerUint(h, HeaderAbort); ok && code >= 200 && code < 600 {
		return int(code), localreply.NoGRPCStatus, true
	}
	if code, ok := headerUint(h, HeaderAbortGRPC); ok && code <= 1<<16 {
		return 503, int(code), true
	}
	return 0, 0, false
}

func (f *injector) throttleKbps(h *message.Headers) uint64 {
	t := f.throttle
	if !headerPercent(h, HeaderThroughputPercentage, t.pct).Sample() {
		return 0
	}
	if !t.fromHeader {
		return t.kbps
	}
	kbps, ok := headerUint(h, HeaderThroughput)
	if !ok || kbps > 1<<40 {
		return 0
	}
	return kbps
}

// headerPercent applies a "-percentage" request header, which may only lower
// the configured numerator.
func headerPercent(h *message.Headers, name string, p xdsconfig.Percent) xdsconfig.Percent {
	if n, ok := headerUint(h, name); ok {
		return p.CapNumerator(n)
	}
	return p
}

// headerUint parses the first value of name as a decimal integer without
// allocating. Untrusted input: anything but digits, or an overflow, is
// treated as absent.
func headerUint(h *message.Headers, name string) (uint64, bool) {
	v, ok := h.Get(name)
	if !ok {
		return 0, false
	}
	return parseUint(v)
}

func parseUint(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// wait blocks for d or until ctx is done.
func wait(ctx context.Context, d time.Duration) error {
	if ctx == nil {
		ctx = context.Background()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func addFlag(s *filter.Stream, flag string) {
	if s.ResponseFlags == "" {
		s.ResponseFlags = flag
		return
	}
	s.ResponseFlags += "," + flag
}
