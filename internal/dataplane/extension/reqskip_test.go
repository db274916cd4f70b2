package extension_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// respOnlyRuntime loads plugins with no request phase (Phases without PhaseRequest):
// OnResponse adds "x-resp: <payload>", or fails when the request asks
// (x-mode: error-response).
type respOnlyRuntime struct {
	requests, responses, completes atomic.Int64
	skips                          bool // whether Describe leaves PhaseRequest out
}

func (*respOnlyRuntime) Kind() string   { return extpkg.KindNative }
func (*respOnlyRuntime) ABIs() []string { return []string{"go-test/1"} }

func (r *respOnlyRuntime) Load(_ context.Context, _ extpkg.Manifest, payload, _ []byte) (extension.Plugin, error) {
	return &respOnlyPlugin{rt: r, value: string(payload)}, nil
}

type respOnlyPlugin struct {
	rt    *respOnlyRuntime
	value string
}

var _ extension.Describer = (*respOnlyPlugin)(nil)

func (p *respOnlyPlugin) Describe() extension.Capabilities {
	if p.rt.skips {
		return extension.Capabilities{Phases: extension.PhaseResponse}
	}
	return extension.Capabilities{Phases: extension.AllPhases}
}

func (p *respOnlyPlugin) OnRequest(context.Context, *filter.Stream) (extension.Action, error) {
	p.rt.requests.Add(1)
	return extension.Continue, nil
}

func (p *respOnlyPlugin) OnResponse(_ context.Context, s *filter.Stream) error {
	p.rt.responses.Add(1)
	// The slot is there for the plugin even with no request call before.
	if slot := extension.StreamState(s); slot == nil {
		return errors.New("no stream state slot in OnResponse")
	}
	if s.Req.Header.GetString("x-mode") == "error-response" {
		return errors.New("asked to fail the response")
	}
	s.Resp.Header.Set("x-resp", p.value)
	return nil
}

func (p *respOnlyPlugin) OnComplete(*filter.Stream) { p.rt.completes.Add(1) }
func (p *respOnlyPlugin) Close() error              { return nil }

// TestRequestSkipped: a plugin that says it has no request phase gets no
// request call (none counted) but its response and complete calls, and the
// policy applies to a failed response call; one that says no is called as
// before.
func TestRequestSkipped(t *testing.T) {
	tests := []struct {
		name     string
		skips    bool
		mode     string
		policy   extv1.Policy
		status   int
		resp     string // x-resp
		requests int64  // OnRequest calls
		ok, errs float64
	}{
		{name: "skipped", skips: true, status: 200, resp: "yes", ok: 1},
		{name: "not skipped", skips: false, status: 200, resp: "yes", requests: 1, ok: 2},
		{name: "skipped, response fails open", skips: true, mode: "error-response", policy: extv1.Policy_FAIL_OPEN, status: 200, errs: 1},
		{name: "skipped, response fails closed", skips: true, mode: "error-response", policy: extv1.Policy_FAIL_CLOSED, status: 503, errs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &respOnlyRuntime{skips: tt.skips}
			reg := prometheus.NewRegistry()
			f := newFactoryWith(t, reg, rt)
			c := filter.NewChain(&terminal{}, build(t, f, &extv1.Extension{Package: pkg(t, 1, extpkg.Manifest{}, "yes"), Policy: tt.policy}))
			s := newStream(context.Background(), tt.mode)
			c.Run(s)
			c.Complete(s)
			if s.Resp.Status != tt.status || s.Resp.Header.GetString("x-resp") != tt.resp {
				t.Fatalf("got %d x-resp %q, want %d %q", s.Resp.Status, s.Resp.Header.GetString("x-resp"), tt.status, tt.resp)
			}
			if got := rt.requests.Load(); got != tt.requests {
				t.Errorf("%d OnRequest calls, want %d", got, tt.requests)
			}
			if rt.responses.Load() != 1 || rt.completes.Load() != 1 {
				t.Errorf("%d OnResponse, %d OnComplete calls, want 1 each", rt.responses.Load(), rt.completes.Load())
			}
			if got := counter(t, reg, "omnirelay_extension_calls_total", "outcome", "ok"); got != tt.ok {
				t.Errorf("%v ok calls counted, want %v", got, tt.ok)
			}
			if got := counter(t, reg, "omnirelay_extension_calls_total", "outcome", "error"); got != tt.errs {
				t.Errorf("%v error calls counted, want %v", got, tt.errs)
			}
		})
	}
}
