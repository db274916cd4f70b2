// Package ratelimit is the built-in local rate limit HTTP filter
// (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit): a token
// bucket shared by every stream of one filter instance, answering requests
// over the limit locally.
//
// Semantics follow Envoy's filter, with these choices:
//   - A limited request gets the configured status (default 429; codes below
//     400 mean 429), header "x-omnirelay-ratelimited: true" (Envoy sends
//     x-envoy-ratelimited) and body "local_rate_limited\n". A gRPC request
//     gets HTTP 200 with grpc-status UNAVAILABLE, or RESOURCE_EXHAUSTED with
//     rate_limited_as_resource_exhausted.
//   - filter_enabled and filter_enforced default to 0% when absent, as in
//     Envoy: a LocalRateLimit without filter_enabled counts nothing and
//     limits nothing. runtime_key is ignored (no runtime layer); the
//     default_value applies.
//   - A per-route LocalRateLimit (typed_per_filter_config) must carry a
//     token_bucket and gets its own bucket, independent of the listener's.
//   - Buckets live as long as the compiled filter: a config update, even an
//     unchanged one, starts new, full buckets.
//   - Not supported, rejected at build time: descriptors, rate_limits,
//     local_cluster_rate_limit, local_rate_limit_per_downstream_connection.
//
// Counters (through filter.Env.Stats, label stat_prefix):
// http_local_rate_limit_enabled, http_local_rate_limit_ok,
// http_local_rate_limit_rate_limited, http_local_rate_limit_enforced.
package ratelimit

import (
	"fmt"
	"strconv"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/localreply"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
	"github.com/omnirelay/omnirelay/internal/dataplane/headerops"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

// Body is the local reply body of a limited request.
const Body = "local_rate_limited\n"

// LimitedHeader marks a response produced by this filter.
const LimitedHeader = "x-omnirelay-ratelimited"

// minFillInterval is Envoy's lower bound for fill_interval.
const minFillInterval = 50 * time.Millisecond

const (
	grpcResourceExhausted = 8
	grpcUnavailable       = 14
)

// Factory builds local rate limit filters. The zero value uses time.Now;
// tests set Now to drive refills.
type Factory struct {
	Now func() time.Time
}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory. A listener-level config may omit
// token_bucket: the filter then passes everything and only routes with their
// own config limit.
func (f Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	l, err := f.compile(cfg, env, false)
	if err != nil {
		return nil, fmt.Errorf("local_ratelimit: %w", err)
	}
	return l, nil
}

// BuildOverride implements filter.RouteFactory. The route gets its own
// bucket; base is not consulted.
func (f Factory) BuildOverride(cfg *anypb.Any, _ filter.Filter, env *filter.Env) (filter.Filter, error) {
	l, err := f.compile(cfg, env, true)
	if err != nil {
		return nil, fmt.Errorf("local_ratelimit per-route: %w", err)
	}
	return l, nil
}

func (f Factory) compile(cfg *anypb.Any, env *filter.Env, perRoute bool) (*limiter, error) {
	var pb lrlv3.LocalRateLimit
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, err
	}
	switch {
	case len(pb.GetDescriptors()) > 0:
		return nil, fmt.Errorf("descriptors: not supported")
	case len(pb.GetRateLimits()) > 0:
		return nil, fmt.Errorf("rate_limits: not supported")
	case pb.GetLocalClusterRateLimit() != nil:
		return nil, fmt.Errorf("local_cluster_rate_limit: not supported")
	case pb.GetLocalRateLimitPerDownstreamConnection():
		return nil, fmt.Errorf("local_rate_limit_per_downstream_connection: not supported")
	}
	now := f.Now
	if now == nil {
		now = time.Now
	}
	l := &limiter{now: now, status: 429, grpcStatus: grpcUnavailable}
	if env != nil {
		l.index = env.Index
	}
	if tb := pb.GetTokenBucket(); tb != nil {
		interval := tb.GetFillInterval().AsDuration()
		if interval < minFillInterval {
			return nil, fmt.Errorf("token_bucket.fill_interval: %v is below the minimum %v", interval, minFillInterval)
		}
		perFill := uint32(1)
		if tpf := tb.GetTokensPerFill(); tpf != nil {
			perFill = tpf.GetValue()
		}
		if perFill == 0 {
			return nil, fmt.Errorf("token_bucket.tokens_per_fill: must be above 0")
		}
		l.bucket = newBucket(tb.GetMaxTokens(), perFill, interval, now())
	} else if perRoute {
		return nil, fmt.Errorf("token_bucket: required in a per-route config")
	}
	if st := pb.GetStatus(); st != nil && st.GetCode() >= 400 {
		l.status = int(st.GetCode())
	}
	if pb.GetRateLimitedAsResourceExhausted() {
		l.grpcStatus = grpcResourceExhausted
	}
	var err error
	if l.enabled, err = xdsconfig.FromRuntime(pb.GetFilterEnabled(), xdsconfig.None()); err != nil {
		return nil, fmt.Errorf("filter_enabled: %w", err)
	}
	if l.enforced, err = xdsconfig.FromRuntime(pb.GetFilterEnforced(), xdsconfig.None()); err != nil {
		return nil, fmt.Errorf("filter_enforced: %w", err)
	}
	if l.responseHeaders, err = headerops.CompileOptions("response_headers_to_add", pb.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	if l.requestHeaders, err = headerops.CompileOptions("request_headers_to_add_when_not_enforced",
		pb.GetRequestHeadersToAddWhenNotEnforced()); err != nil {
		return nil, err
	}
	l.xRateLimit = pb.GetEnableXRatelimitHeaders() == ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	l.retryAfter = pb.GetEnableRetryAfterHeader()
	label := []string{"stat_prefix", pb.GetStatPrefix()}
	l.statEnabled = xdsconfig.Counter(env, "http_local_rate_limit_enabled", label...)
	l.statOK = xdsconfig.Counter(env, "http_local_rate_limit_ok", label...)
	l.statLimited = xdsconfig.Counter(env, "http_local_rate_limit_rate_limited", label...)
	l.statEnforced = xdsconfig.Counter(env, "http_local_rate_limit_enforced", label...)
	return l, nil
}

// limiter is immutable after compile except for its bucket's atomic state.
type limiter struct {
	bucket          *bucket // nil: listener config without a bucket, pass through
	now             func() time.Time
	index           int
	status          int
	grpcStatus      int
	enabled         xdsconfig.Percent
	enforced        xdsconfig.Percent
	responseHeaders headerops.List
	requestHeaders  headerops.List
	xRateLimit      bool
	retryAfter      bool

	statEnabled, statOK, statLimited, statEnforced filter.Counter
}

var _ filter.Filter = (*limiter)(nil)

// OnRequest implements filter.Filter.
func (l *limiter) OnRequest(s *filter.Stream) filter.Status {
	if l.bucket == nil || !l.enabled.Sample() {
		return filter.Continue
	}
	l.statEnabled.Inc()
	if l.xRateLimit {
		// Remember which limiter (and so which bucket) decided, for the
		// x-ratelimit headers of the response.
		s.SetState(l.index, l)
	}
	now := l.now()
	if l.bucket.take(now) {
		l.statOK.Inc()
		return filter.Continue
	}
	l.statLimited.Inc()
	if !l.enforced.Sample() {
		l.requestHeaders.Apply(&s.Req.Header, s)
		return filter.Continue
	}
	l.statEnforced.Inc()
	localreply.Send(s, l.status, l.grpcStatus, Body)
	h := &s.Resp.Header
	h.Set(LimitedHeader, "true")
	l.responseHeaders.Apply(h, s)
	if l.xRateLimit {
		l.addXRateLimit(h, now)
	}
	if l.retryAfter && l.status == 429 && !h.Has("retry-after") {
		l.setSeconds(h, "retry-after", l.bucket.untilNextFill(now))
	}
	if s.ResponseFlags == "" {
		s.ResponseFlags = "RL"
	}
	return filter.Stop
}

// OnResponse implements filter.Filter: it adds the x-ratelimit headers of the
// limiter that took a token for this stream.
func (l *limiter) OnResponse(s *filter.Stream) {
	if s.Resp == nil {
		return
	}
	if owner, ok := s.State(l.index).(*limiter); ok && owner.xRateLimit {
		owner.addXRateLimit(&s.Resp.Header, owner.now())
	}
}

func (l *limiter) addXRateLimit(h *message.Headers, now time.Time) {
	var num [20]byte
	h.SetBytes("x-ratelimit-limit", strconv.AppendUint(num[:0], uint64(l.bucket.max), 10))
	h.SetBytes("x-ratelimit-remaining", strconv.AppendUint(num[:0], uint64(l.bucket.remaining(now)), 10))
	l.setSeconds(h, "x-ratelimit-reset", l.bucket.untilNextFill(now))
}

// setSeconds writes d rounded up to whole seconds, at least 1.
func (l *limiter) setSeconds(h *message.Headers, name string, d time.Duration) {
	secs := max(int64((d+time.Second-1)/time.Second), 1)
	var num [20]byte
	h.SetBytes(name, strconv.AppendInt(num[:0], secs, 10))
}
