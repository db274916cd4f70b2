package fault

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func pct(n uint32) *typev3.FractionalPercent { return &typev3.FractionalPercent{Numerator: n} }

func abortHTTP(code uint32, p uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: code}, Percentage: pct(p)}
}

func abortGRPC(code uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}, Percentage: pct(100)}
}

func abortHeader() *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}, Percentage: pct(100)}
}

func fixedDelay(d time.Duration, p uint32) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: pct(p)}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
}

func build(t testing.TB, cfg *faultv3.HTTPFault) *injector {
	t.Helper()
	f, err := Factory{}.Build(filtertest.Any(t, cfg), &filter.Env{Name: "fault"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return f.(*injector)
}

func TestAbort(t *testing.T) {
	grpc := []string{"content-type", "application/grpc"}
	tests := []struct {
		name       string
		cfg        *faultv3.HTTPFault
		headers    []string
		wantStatus int // 0: passed to the terminal
		wantHeader map[string]string
		wantBody   string
	}{
		{name: "100% http abort", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100)},
			wantStatus: 503, wantBody: DefaultAbortBody},
		{name: "0% never aborts", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 0)}},
		{name: "unset percentage is 0% like Envoy", cfg: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}}}},
		{name: "million denominator at 100%", cfg: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: 418},
			Percentage: &typev3.FractionalPercent{Numerator: 1_000_000, Denominator: typev3.FractionalPercent_MILLION}}},
			wantStatus: 418, wantBody: DefaultAbortBody},
		{name: "custom body", cfg: &faultv3.HTTPFault{Abort: func() *faultv3.FaultAbort {
			a := abortHTTP(500, 100)
			a.ResponseBody = "boom"
			return a
		}()}, wantStatus: 500, wantBody: "boom"},
		{name: "grpc status on grpc request", cfg: &faultv3.HTTPFault{Abort: abortGRPC(7)}, headers: grpc,
			wantStatus: 200, wantHeader: map[string]string{"grpc-status": "7", "grpc-message": DefaultAbortBody, "content-type": "application/grpc"}},
		{name: "grpc status on plain request is 503", cfg: &faultv3.HTTPFault{Abort: abortGRPC(7)},
			wantStatus: 503, wantBody: DefaultAbortBody},
		{name: "http status on grpc request is mapped", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100)}, headers: grpc,
			wantStatus: 200, wantHeader: map[string]string{"grpc-status": "14"}},
		{name: "header abort", cfg: &faultv3.HTTPFault{Abort: abortHeader()}, headers: []string{HeaderAbort, "429"},
			wantStatus: 429, wantBody: DefaultAbortBody},
		{name: "header abort without header", cfg: &faultv3.HTTPFault{Abort: abortHeader()}},
		{name: "header abort out of range", cfg: &faultv3.HTTPFault{Abort: abortHeader()}, headers: []string{HeaderAbort, "99"}},
		{name: "header abort not a number", cfg: &faultv3.HTTPFault{Abort: abortHeader()}, headers: []string{HeaderAbort, "5x3"}},
		{name: "header grpc abort", cfg: &faultv3.HTTPFault{Abort: abortHeader()},
			headers:    []string{"content-type", "application/grpc", HeaderAbortGRPC, "4"},
			wantStatus: 200, wantHeader: map[string]string{"grpc-status": "4"}},
		{name: "percentage header lowers to 0", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100)},
			headers: []string{HeaderAbortPercentage, "0"}},
		{name: "percentage header cannot raise", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 0)},
			headers: []string{HeaderAbortPercentage, "100"}},
		{name: "header matcher matches", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100),
			Headers: []*routev3.HeaderMatcher{exactHeader("x-chaos", "on")}}, headers: []string{"x-chaos", "on"},
			wantStatus: 503, wantBody: DefaultAbortBody},
		{name: "header matcher value differs", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100),
			Headers: []*routev3.HeaderMatcher{exactHeader("x-chaos", "on")}}, headers: []string{"x-chaos", "off"}},
		{name: "header matcher header absent", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100),
			Headers: []*routev3.HeaderMatcher{exactHeader("x-chaos", "on")}}},
		{name: "downstream node listed", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100), DownstreamNodes: []string{"a", "b"}},
			headers: []string{"x-envoy-downstream-service-node", "b"}, wantStatus: 503, wantBody: DefaultAbortBody},
		{name: "downstream node not listed", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100), DownstreamNodes: []string{"a"}},
			headers: []string{"x-envoy-downstream-service-node", "c"}},
		{name: "max_active_faults 0 injects nothing", cfg: &faultv3.HTTPFault{Abort: abortHTTP(503, 100),
			MaxActiveFaults: wrapperspb.UInt32(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			term := &filtertest.Terminal{}
			f := build(t, tt.cfg)
			chain := filter.NewChain(term, f)
			s := filtertest.NewStream("GET", "/", tt.headers...)
			chain.Run(s)
			chain.Complete(s)
			if tt.wantStatus == 0 {
				if term.Calls() != 1 || s.Resp.Status != 200 {
					t.Fatalf("want pass-through, got status %d, terminal calls %d", s.Resp.Status, term.Calls())
				}
				return
			}
			if term.Calls() != 0 {
				t.Fatal("aborted request reached the terminal")
			}
			if s.Resp.Status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", s.Resp.Status, tt.wantStatus)
			}
			for k, v := range tt.wantHeader {
				if got := s.Resp.Header.GetString(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got := filtertest.Body(t, s.Resp); got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
			if s.ResponseFlags != "FI" {
				t.Errorf("ResponseFlags = %q, want FI", s.ResponseFlags)
			}
			if n := f.active.Load(); n != 0 {
				t.Errorf("active faults after Complete = %d, want 0", n)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	const d = 30 * time.Millisecond
	tests := []struct {
		name      string
		cfg       *faultv3.HTTPFault
		headers   []string
		wantDelay bool
		wantAbort bool
	}{
		{"fixed 100%", &faultv3.HTTPFault{Delay: fixedDelay(d, 100)}, nil, true, false},
		{"fixed 0%", &faultv3.HTTPFault{Delay: fixedDelay(time.Hour, 0)}, nil, false, false},
		{"header delay", &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{HeaderDelay: &commonfaultv3.FaultDelay_HeaderDelay{}},
			Percentage:         pct(100)}}, []string{HeaderDelay, "30"}, true, false},
		{"header delay absent", &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{HeaderDelay: &commonfaultv3.FaultDelay_HeaderDelay{}},
			Percentage:         pct(100)}}, nil, false, false},
		{"delay then abort", &faultv3.HTTPFault{Delay: fixedDelay(d, 100), Abort: abortHTTP(503, 100)}, nil, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			term := &filtertest.Terminal{}
			chain := filter.NewChain(term, build(t, tt.cfg))
			s := filtertest.NewStream("GET", "/", tt.headers...)
			start := time.Now()
			chain.Run(s)
			chain.Complete(s)
			elapsed := time.Since(start)
			if tt.wantDelay && elapsed < d {
				t.Fatalf("elapsed %v, want at least %v", elapsed, d)
			}
			if !tt.wantDelay && elapsed >= d {
				t.Fatalf("elapsed %v, want no delay", elapsed)
			}
			if aborted := term.Calls() == 0; aborted != tt.wantAbort {
				t.Fatalf("aborted = %v, want %v (status %d)", aborted, tt.wantAbort, s.Resp.Status)
			}
			wantFlags := map[[2]bool]string{{true, false}: "DI", {true, true}: "DI,FI", {false, false}: ""}[[2]bool{tt.wantDelay, tt.wantAbort}]
			if s.ResponseFlags != wantFlags {
				t.Fatalf("ResponseFlags = %q, want %q", s.ResponseFlags, wantFlags)
			}
		})
	}
}

// waitActive polls until f has n active faults or fails after a deadline.
func waitActive(t *testing.T, f *injector, n int64) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, time.Millisecond, fmt.Sprintf("%d active faults", n), func() (bool, string) {
		got := f.active.Load()
		return got == n, fmt.Sprintf("active faults = %d", got)
	})
}

func TestDelayHonoursContext(t *testing.T) {
	tests := []struct {
		name       string
		ctx        func() (context.Context, context.CancelFunc)
		cancelMid  bool
		wantStatus int
	}{
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, false, 503},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, false, 504},
		{"cancelled while waiting", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, true, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := build(t, &faultv3.HTTPFault{Delay: fixedDelay(time.Hour, 100)})
			term := &filtertest.Terminal{}
			chain := filter.NewChain(term, f)
			ctx, cancel := tt.ctx()
			defer cancel()
			s := filtertest.NewStream("GET", "/")
			s.Ctx = ctx
			done := make(chan struct{})
			go func() {
				chain.Run(s)
				close(done)
			}()
			if tt.cancelMid {
				waitActive(t, f, 1)
				cancel()
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("delay did not end when the context did")
			}
			chain.Complete(s)
			if term.Calls() != 0 || s.Resp.Status != tt.wantStatus {
				t.Fatalf("status %d, terminal calls %d; want %d and 0", s.Resp.Status, term.Calls(), tt.wantStatus)
			}
			if f.active.Load() != 0 {
				t.Fatalf("active = %d after Complete", f.active.Load())
			}
		})
	}
}

func TestMaxActiveFaultsSharedWithRoute(t *testing.T) {
	cfg := &faultv3.HTTPFault{Delay: fixedDelay(time.Hour, 100), MaxActiveFaults: wrapperspb.UInt32(1)}
	base := build(t, cfg)
	over, err := Factory{}.BuildOverride(filtertest.Any(t, &faultv3.HTTPFault{Abort: abortHTTP(503, 100),
		MaxActiveFaults: wrapperspb.UInt32(1)}), base, &filter.Env{})
	if err != nil {
		t.Fatalf("BuildOverride: %v", err)
	}
	term := &filtertest.Terminal{}
	chain := filter.NewChain(term, base)

	ctx, cancel := context.WithCancel(context.Background())
	slow := filtertest.NewStream("GET", "/")
	slow.Ctx = ctx
	done := make(chan struct{})
	go func() {
		chain.Run(slow)
		close(done)
	}()
	waitActive(t, base, 1)

	tests := []struct {
		name  string
		route *filter.Route
	}{
		{"listener config overflows", nil},
		{"route config shares the budget", &filter.Route{Overrides: []filter.Filter{over}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := filtertest.NewStream("GET", "/")
			s.Route = tt.route
			before := term.Calls()
			chain.Run(s)
			chain.Complete(s)
			if term.Calls() != before+1 || s.Resp.Status != 200 {
				t.Fatalf("want pass-through on overflow, got status %d", s.Resp.Status)
			}
		})
	}
	cancel()
	<-done
	chain.Complete(slow)
	if base.active.Load() != 0 {
		t.Fatalf("active = %d after the delayed stream completed", base.active.Load())
	}
	// With the slot free the route's abort applies again.
	s := filtertest.NewStream("GET", "/")
	s.Route = &filter.Route{Overrides: []filter.Filter{over}}
	chain.Run(s)
	chain.Complete(s)
	if s.Resp.Status != 503 {
		t.Fatalf("route abort after slot freed: status %d, want 503", s.Resp.Status)
	}
}

func TestResponseRateLimit(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4096)
	tests := []struct {
		name     string
		cfg      *faultv3.HTTPFault
		headers  []string
		minTime  time.Duration
		throttle bool
	}{
		{"fixed 16 KiB/s for 4 KiB", &faultv3.HTTPFault{ResponseRateLimit: &commonfaultv3.FaultRateLimit{
			LimitType:  &commonfaultv3.FaultRateLimit_FixedLimit_{FixedLimit: &commonfaultv3.FaultRateLimit_FixedLimit{LimitKbps: 16}},
			Percentage: pct(100)}}, nil, 150 * time.Millisecond, true},
		{"header 16 KiB/s", &faultv3.HTTPFault{ResponseRateLimit: &commonfaultv3.FaultRateLimit{
			LimitType:  &commonfaultv3.FaultRateLimit_HeaderLimit_{HeaderLimit: &commonfaultv3.FaultRateLimit_HeaderLimit{}},
			Percentage: pct(100)}}, []string{HeaderThroughput, "16"}, 150 * time.Millisecond, true},
		{"header limit absent", &faultv3.HTTPFault{ResponseRateLimit: &commonfaultv3.FaultRateLimit{
			LimitType:  &commonfaultv3.FaultRateLimit_HeaderLimit_{HeaderLimit: &commonfaultv3.FaultRateLimit_HeaderLimit{}},
			Percentage: pct(100)}}, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := build(t, tt.cfg)
			term := &filtertest.Terminal{}
			chain := filter.NewChain(filterTerminal{term, body}, f)
			s := filtertest.NewStream("GET", "/", tt.headers...)
			chain.Run(s)
			_, throttled := s.Resp.Body.(*throttledReader)
			if throttled != tt.throttle {
				t.Fatalf("throttled = %v, want %v", throttled, tt.throttle)
			}
			start := time.Now()
			got, err := io.ReadAll(s.Resp.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("body read: %d bytes, err %v", len(got), err)
			}
			if el := time.Since(start); el < tt.minTime {
				t.Fatalf("read took %v, want at least %v", el, tt.minTime)
			}
			chain.Complete(s)
			if f.active.Load() != 0 {
				t.Fatalf("active = %d after Complete", f.active.Load())
			}
		})
	}
}

// filterTerminal wraps a recording terminal and gives the response a body.
type filterTerminal struct {
	*filtertest.Terminal
	body []byte
}

func (ft filterTerminal) Serve(s *filter.Stream) error {
	if err := ft.Terminal.Serve(s); err != nil {
		return err
	}
	s.Resp.Body = bytes.NewReader(ft.body)
	s.Resp.ContentLength = int64(len(ft.body))
	return nil
}

func TestThrottleStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newThrottledReader(ctx, bytes.NewReader(make([]byte, 1<<20)), 1024)
	buf := make([]byte, 4096)
	if _, err := r.Read(buf); err != nil {
		t.Fatalf("first read: %v", err)
	}
	cancel()
	if _, err := r.Read(buf); err != context.Canceled {
		t.Fatalf("read after cancel: err = %v, want context.Canceled", err)
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  *anypb.Any
		want string
	}{
		{"wrong type", filtertest.Any(t, durationpb.New(time.Second)), "typed_config"},
		{"upstream cluster", filtertest.Any(t, &faultv3.HTTPFault{Abort: abortHTTP(503, 1), UpstreamCluster: "c"}), "upstream_cluster"},
		{"filter metadata", filtertest.Any(t, &faultv3.HTTPFault{Abort: abortHTTP(503, 1), FilterMetadata: &structpb.Struct{}}), "filter_metadata"},
		{"http status out of range", filtertest.Any(t, &faultv3.HTTPFault{Abort: abortHTTP(700, 1)}), "HttpStatus"},
		{"abort without type", filtertest.Any(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{Percentage: pct(1)}}), "Abort"},
		{"delay without type", filtertest.Any(t, &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{Percentage: pct(1)}}), "Delay"},
		{"zero throughput", filtertest.Any(t, &faultv3.HTTPFault{ResponseRateLimit: &commonfaultv3.FaultRateLimit{
			LimitType: &commonfaultv3.FaultRateLimit_FixedLimit_{FixedLimit: &commonfaultv3.FaultRateLimit_FixedLimit{}}}}), "LimitKbps"},
		{"bad header regex", filtertest.Any(t, &faultv3.HTTPFault{Abort: abortHTTP(503, 1), Headers: []*routev3.HeaderMatcher{{
			Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "(["}}}}}),
			"headers[0]: safe_regex_match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Factory{}.Build(tt.cfg, &filter.Env{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint64
		ok   bool
	}{
		{"zero", "0", 0, true},
		{"number", "1234", 1234, true},
		{"empty", "", 0, false},
		{"sign", "-1", 0, false},
		{"space", " 1", 0, false},
		{"too long", "12345678901234567890", 0, false},
		{"max accepted", "9999999999999999999", 9999999999999999999, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseUint([]byte(tt.in))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("parseUint(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func BenchmarkOnRequestNoFault(b *testing.B) {
	f := build(b, &faultv3.HTTPFault{
		Delay:   fixedDelay(time.Second, 100),
		Abort:   abortHeader(),
		Headers: []*routev3.HeaderMatcher{exactHeader("x-chaos", "on")},
	})
	s := filtertest.NewStream("GET", "/")
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/", "x-chaos", "off", "user-agent", "bench")
		if f.OnRequest(s) != filter.Continue {
			b.Fatal("fault injected")
		}
		f.OnResponse(s)
		f.OnComplete(s)
	}
}

func BenchmarkOnRequestHeaderAbortMiss(b *testing.B) {
	f := build(b, &faultv3.HTTPFault{Abort: abortHeader()})
	s := filtertest.NewStream("GET", "/")
	b.ReportAllocs()
	for b.Loop() {
		filtertest.Fill(s, "GET", "/", HeaderAbortPercentage, "50")
		if f.OnRequest(s) != filter.Continue {
			b.Fatal("fault injected")
		}
	}
}

func FuzzParseUint(f *testing.F) {
	f.Add([]byte("200"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, ok := parseUint(in)
		want, err := strconv.ParseUint(string(in), 10, 64)
		digitsOnly := len(in) > 0
		for _, c := range in {
			digitsOnly = digitsOnly && '0' <= c && c <= '9'
		}
		wantOK := err == nil && digitsOnly && len(in) <= 19
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("parseUint(%q) = %d, %v; strconv says %d, %v", in, got, ok, want, err)
		}
	})
}

// TestMain fails the package if a delay or throttle leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
