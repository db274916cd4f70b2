package ratelimit

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

// clock is a manual clock safe for concurrent readers.
type clock struct {
	base time.Time
	off  atomic.Int64
}

func newClock() *clock { return &clock{base: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func always() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}
}

func never() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 0}}
}

// config returns an enabled and enforced LocalRateLimit; mutate adjusts it.
func config(maxTokens, perFill uint32, interval time.Duration, mutate func(*lrlv3.LocalRateLimit)) *lrlv3.LocalRateLimit {
	c := &lrlv3.LocalRateLimit{
		StatPrefix: "test",
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     maxTokens,
			TokensPerFill: wrapperspb.UInt32(perFill),
			FillInterval:  durationpb.New(interval),
		},
		FilterEnabled:  always(),
		FilterEnforced: always(),
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

func build(t testing.TB, c *clock, cfg *lrlv3.LocalRateLimit) filter.Filter {
	t.Helper()
	f, err := Factory{Now: c.Now}.Build(filtertest.Any(t, cfg), &filter.Env{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return f
}

// run sends one request through a chain and returns the final stream.
func run(chain *filter.Chain, headers ...string) *filter.Stream {
	s := filtertest.NewStream("GET", "/", headers...)
	chain.Run(s)
	return s
}

func TestLimitAndReply(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*lrlv3.LocalRateLimit)
		reqHeaders []string
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{
			name:       "default 429",
			wantStatus: 429,
			wantHeader: map[string]string{LimitedHeader: "true", "content-type": "text/plain"},
			wantBody:   Body,
		},
		{
			name: "custom status",
			mutate: func(c *lrlv3.LocalRateLimit) {
				c.Status = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
			},
			wantStatus: 503,
			wantBody:   Body,
		},
		{
			name:       "status below 400 means 429",
			mutate:     func(c *lrlv3.LocalRateLimit) { c.Status = &typev3.HttpStatus{Code: typev3.StatusCode_OK} },
			wantStatus: 429,
			wantBody:   Body,
		},
		{
			name: "response headers to add",
			mutate: func(c *lrlv3.LocalRateLimit) {
				c.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-limited-by", Value: "omnirelay"}}}
			},
			wantStatus: 429,
			wantHeader: map[string]string{"x-limited-by": "omnirelay", LimitedHeader: "true"},
			wantBody:   Body,
		},
		{
			name: "x-ratelimit and retry-after headers",
			mutate: func(c *lrlv3.LocalRateLimit) {
				c.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
				c.EnableRetryAfterHeader = true
			},
			wantStatus: 429,
			wantHeader: map[string]string{"x-ratelimit-limit": "1", "x-ratelimit-remaining": "0",
				"x-ratelimit-reset": "60", "retry-after": "60"},
			wantBody: Body,
		},
		{
			name:       "grpc request gets trailers-only UNAVAILABLE",
			reqHeaders: []string{"content-type", "application/grpc"},
			wantStatus: 200,
			wantHeader: map[string]string{"grpc-status": "14", "grpc-message": "local_rate_limited",
				"content-type": "application/grpc", LimitedHeader: "true"},
		},
		{
			name:       "grpc as resource exhausted",
			mutate:     func(c *lrlv3.LocalRateLimit) { c.RateLimitedAsResourceExhausted = true },
			reqHeaders: []string{"content-type", "application/grpc+proto"},
			wantStatus: 200,
			wantHeader: map[string]string{"grpc-status": "8"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			term := &filtertest.Terminal{}
			chain := filter.NewChain(term, build(t, c, config(1, 1, time.Minute, tt.mutate)))
			if s := run(chain, tt.reqHeaders...); s.Resp.Status != 200 || term.Calls() != 1 {
				t.Fatalf("first request: status %d, terminal calls %d", s.Resp.Status, term.Calls())
			}
			s := run(chain, tt.reqHeaders...)
			if term.Calls() != 1 {
				t.Fatalf("limited request reached the terminal")
			}
			if s.Resp.Status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", s.Resp.Status, tt.wantStatus)
			}
			for k, want := range tt.wantHeader {
				if got := s.Resp.Header.GetString(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if got := filtertest.Body(t, s.Resp); got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
			if s.ResponseFlags != "RL" {
				t.Errorf("ResponseFlags = %q, want RL", s.ResponseFlags)
			}
		})
	}
}

func TestEnabledEnforced(t *testing.T) {
	tests := []struct {
		name         string
		mutate       func(*lrlv3.LocalRateLimit)
		wantLimited  bool
		wantReqAdded bool
	}{
		{"enabled and enforced", nil, true, false},
		{"filter_enabled absent defaults to 0% like Envoy", func(c *lrlv3.LocalRateLimit) { c.FilterEnabled = nil }, false, false},
		{"filter_enabled 0%", func(c *lrlv3.LocalRateLimit) { c.FilterEnabled = never() }, false, false},
		{"not enforced adds request headers", func(c *lrlv3.LocalRateLimit) {
			c.FilterEnforced = nil
			c.RequestHeadersToAddWhenNotEnforced = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-would-limit", Value: "1"}}}
		}, false, true},
		{"ten-thousandths denominator at 100%", func(c *lrlv3.LocalRateLimit) {
			c.FilterEnforced = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
				Numerator: 10_000, Denominator: typev3.FractionalPercent_TEN_THOUSAND}}
		}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reqAdded bool
			term := &filtertest.Terminal{OnServe: func(s *filter.Stream) { reqAdded = s.Req.Header.Has("x-would-limit") }}
			chain := filter.NewChain(term, build(t, newClock(), config(1, 1, time.Minute, tt.mutate)))
			run(chain)
			if reqAdded {
				t.Fatal("request header added while a token was available")
			}
			s := run(chain)
			if limited := s.Resp.Status == 429; limited != tt.wantLimited {
				t.Fatalf("limited = %v (status %d), want %v", limited, s.Resp.Status, tt.wantLimited)
			}
			if reqAdded != tt.wantReqAdded {
				t.Fatalf("request header added = %v, want %v", reqAdded, tt.wantReqAdded)
			}
		})
	}
}

func TestRefill(t *testing.T) {
	c := newClock()
	chain := filter.NewChain(&filtertest.Terminal{}, build(t, c, config(3, 2, time.Second, nil)))
	steps := []struct {
		name    string
		advance time.Duration
		send    int
		wantOK  int
	}{
		{"initial burst capped at max_tokens", 0, 5, 3},
		{"no refill before the interval", 999 * time.Millisecond, 1, 0},
		{"one fill adds tokens_per_fill", time.Millisecond, 3, 2},
		{"many intervals refill to max only", 10 * time.Second, 5, 3},
		{"half interval later still empty", 500 * time.Millisecond, 1, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			c.Advance(st.advance)
			ok := 0
			for i := 0; i < st.send; i++ {
				if run(chain).Resp.Status == 200 {
					ok++
				}
			}
			if ok != st.wantOK {
				t.Fatalf("passed %d of %d, want %d", ok, st.send, st.wantOK)
			}
		})
	}
}

func TestConcurrentBurstNeverExceedsMax(t *testing.T) {
	const maxTokens, workers, perWorker = 100, 8, 50
	c := newClock()
	term := &filtertest.Terminal{}
	chain := filter.NewChain(term, build(t, c, config(maxTokens, 1, time.Hour, nil)))
	var passed, limited atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < perWorker; i++ {
				switch run(chain).Resp.Status {
				case 200:
					passed.Add(1)
				case 429:
					limited.Add(1)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if passed.Load() != maxTokens || term.Calls() != maxTokens {
		t.Fatalf("passed %d (terminal %d), want exactly %d", passed.Load(), term.Calls(), maxTokens)
	}
	if limited.Load() != workers*perWorker-maxTokens {
		t.Fatalf("limited %d, want %d", limited.Load(), workers*perWorker-maxTokens)
	}
}

func TestXRateLimitHeadersOnAllowedResponse(t *testing.T) {
	c := newClock()
	f := build(t, c, config(5, 1, 10*time.Second, func(l *lrlv3.LocalRateLimit) {
		l.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	}))
	chain := filter.NewChain(&filtertest.Terminal{}, f)
	c.Advance(2500 * time.Millisecond)
	s := run(chain)
	want := map[string]string{"x-ratelimit-limit": "5", "x-ratelimit-remaining": "4", "x-ratelimit-reset": "8"}
	for k, v := range want {
		if got := s.Resp.Header.GetString(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestPerRouteBucket(t *testing.T) {
	c := newClock()
	fac := Factory{Now: c.Now}
	base := build(t, c, config(1, 1, time.Minute, nil))
	over, err := fac.BuildOverride(filtertest.Any(t, config(2, 1, time.Minute, nil)), base, &filter.Env{})
	if err != nil {
		t.Fatalf("BuildOverride: %v", err)
	}
	routeA := &filter.Route{Name: "a", Overrides: []filter.Filter{over}}
	chain := filter.NewChain(&filtertest.Terminal{}, base)
	send := func(r *filter.Route) int {
		s := filtertest.NewStream("GET", "/")
		s.Route = r
		chain.Run(s)
		return s.Resp.Status
	}
	tests := []struct {
		name  string
		route *filter.Route
		want  int
	}{
		{"listener bucket first token", nil, 200},
		{"listener bucket empty", nil, 429},
		{"route has its own bucket", routeA, 200},
		{"route second token", routeA, 200},
		{"route bucket empty", routeA, 429},
		{"listener still empty", &filter.Route{}, 429},
		{"route disables the filter", &filter.Route{Overrides: []filter.Filter{filter.Disabled}}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := send(tt.route); got != tt.want {
				t.Fatalf("status = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestListenerWithoutBucketPasses(t *testing.T) {
	f := build(t, newClock(), config(0, 1, time.Second, func(c *lrlv3.LocalRateLimit) { c.TokenBucket = nil }))
	chain := filter.NewChain(&filtertest.Terminal{}, f)
	for i := 0; i < 3; i++ {
		if s := run(chain); s.Resp.Status != 200 {
			t.Fatalf("request %d: status %d", i, s.Resp.Status)
		}
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name     string
		cfg      *anypb.Any
		perRoute bool
		want     string
	}{
		{"wrong type", filtertest.Any(t, durationpb.New(time.Second)), false, "typed_config"},
		{"fill interval too short", filtertest.Any(t, config(1, 1, 10*time.Millisecond, nil)), false, "token_bucket.fill_interval"},
		{"tokens per fill zero", filtertest.Any(t, config(1, 0, time.Second, nil)), false, "TokensPerFill"},
		{"missing stat prefix", filtertest.Any(t, config(1, 1, time.Second, func(c *lrlv3.LocalRateLimit) { c.StatPrefix = "" })), false, "StatPrefix"},
		{"descriptors", filtertest.Any(t, config(1, 1, time.Second, func(c *lrlv3.LocalRateLimit) {
			c.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{
				Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}},
				TokenBucket: &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(time.Second)},
			}}
		})), false, "descriptors: not supported"},
		{"per connection", filtertest.Any(t, config(1, 1, time.Second, func(c *lrlv3.LocalRateLimit) {
			c.LocalRateLimitPerDownstreamConnection = true
		})), false, "local_rate_limit_per_downstream_connection"},
		{"bad response header", filtertest.Any(t, config(1, 1, time.Second, func(c *lrlv3.LocalRateLimit) {
			c.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":status", Value: "1"}}}
		})), false, "response_headers_to_add[0]: header.key"},
		{"per-route without bucket", filtertest.Any(t, config(1, 1, time.Second, func(c *lrlv3.LocalRateLimit) { c.TokenBucket = nil })), true, "per-route: token_bucket: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.perRoute {
				_, err = Factory{}.BuildOverride(tt.cfg, nil, &filter.Env{})
			} else {
				_, err = Factory{}.Build(tt.cfg, &filter.Env{})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestBucketTickWrapAndBackwards(t *testing.T) {
	tests := []struct {
		name           string
		tokens, last   uint32
		now            uint32
		wantRefilledTo uint32
	}{
		{"forward", 0, 10, 12, 4},
		{"across uint32 wrap", 0, ^uint32(0), 1, 4},
		{"backwards is ignored", 1, 12, 10, 1},
		{"capped", 9, 0, 100, 10},
	}
	b := &bucket{max: 10, perFill: 2, interval: time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.refill(tt.tokens, tt.last, tt.now); got != tt.wantRefilledTo {
				t.Fatalf("refill = %d, want %d", got, tt.wantRefilledTo)
			}
		})
	}
}

func BenchmarkOnRequestAllowed(b *testing.B) {
	f := build(b, newClock(), config(^uint32(0), 1, time.Hour, func(c *lrlv3.LocalRateLimit) {
		c.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	}))
	f = rebuildWithRealClock(b, f)
	s := filtertest.NewStream("GET", "/")
	term := &filtertest.Terminal{}
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/")
		if f.OnRequest(s) != filter.Continue {
			b.Fatal("limited")
		}
		_ = term.Serve(s)
		f.OnResponse(s)
	}
}

func BenchmarkOnRequestLimited(b *testing.B) {
	f, err := Factory{}.Build(filtertest.Any(b, config(0, 1, time.Hour, nil)), &filter.Env{})
	if err != nil {
		b.Fatal(err)
	}
	s := filtertest.NewStream("GET", "/")
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/")
		if f.OnRequest(s) != filter.Stop {
			b.Fatal("not limited")
		}
	}
}

func BenchmarkBucketParallel(b *testing.B) {
	bk := newBucket(^uint32(0), 1, time.Hour, time.Now())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bk.take(time.Now())
		}
	})
}

// rebuildWithRealClock swaps the test clock for time.Now so the benchmark
// measures the real clock read.
func rebuildWithRealClock(b *testing.B, f filter.Filter) filter.Filter {
	l := f.(*limiter)
	l.now = time.Now
	return l
}
