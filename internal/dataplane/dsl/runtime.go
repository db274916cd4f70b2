// Package dsl owns the proxy's runtime for "dsl" extensions: rule sets
// written in the OmniRelay rules language (internal/shared/dslrules), whose
// conditions and values are CEL expressions compiled once at load and run
// on the request path under a cost limit.
//
// The request path does not allocate in the common case: CEL reads the
// stream through an interpreter.Activation that resolves each variable from
// the Stream in place (no map[string]any per request), header and query
// lookups return strings that alias the message, and evaluation states are
// pooled per plugin. What still allocates is listed in docs/dsl.md.
package dsl

import (
	"context"
	"fmt"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// DefaultCostLimit bounds one evaluation (one condition or one value) in
// CEL cost units: far above any sensible rule (a header comparison costs a
// few units) and far below what would hold a request noticeably.
const DefaultCostLimit = 10_000

// Options configure the runtime.
type Options struct {
	// CostLimit bounds each evaluation; 0 means DefaultCostLimit.
	CostLimit uint64
	// Claims returns the verified JWT claims of a stream (jwt.claims), nil
	// when none; nil means jwt.claims is always empty.
	Claims func(s *filter.Stream) map[string]any

	slot int
}

func (o Options) costLimit() uint64 {
	if o.CostLimit == 0 {
		return DefaultCostLimit
	}
	return o.CostLimit
}

// Runtime loads dsl packages.
type Runtime struct {
	opts Options
}

// NewRuntime returns the dsl runtime.
func NewRuntime(o Options) *Runtime { return &Runtime{opts: o} }

// Kind implements extension.Runtime.
func (*Runtime) Kind() string { return extpkg.KindDSL }

// ABIs implements extension.Runtime.
func (*Runtime) ABIs() []string { return []string{dslrules.ABI} }

// Compile parses, type-checks and plans a rule set. slot is the stream
// state index the plugin keeps its per-stream state under.
func (r *Runtime) Compile(name string, payload, config []byte, slot int) (*Plugin, error) {
	c, err := dslrules.Compile(payload)
	if err != nil {
		return nil, fmt.Errorf("dsl %q: %w", name, err)
	}
	o := r.opts
	o.slot = slot
	p, err := compile(name, c, config, o)
	if err != nil {
		return nil, fmt.Errorf("dsl %q: %w", name, err)
	}
	return p, nil
}

// Request runs the request rules. stop reports that a rule answered (deny,
// respond): the chain must not continue.
func (p *Plugin) Request(ctx context.Context, s *filter.Stream) (stop bool, err error) {
	if len(p.request) == 0 && !p.stateful {
		return false, nil
	}
	st := p.acquire(s)
	stop, err = p.runRequest(ctx, st)
	if p.stateful {
		s.SetState(p.slot, st)
	} else {
		p.put(st)
	}
	return stop, err
}

// Response runs the response rules.
func (p *Plugin) Response(ctx context.Context, s *filter.Stream) error {
	if len(p.response) == 0 {
		return nil
	}
	st, _ := s.State(p.slot).(*evalState)
	if st == nil || st.plugin != p {
		// The request phase did not run for this plugin (an earlier
		// filter answered): run with a fresh state.
		st = p.acquire(s)
		defer p.put(st)
	}
	return p.runResponse(ctx, st)
}

// Complete releases the stream's state.
func (p *Plugin) Complete(s *filter.Stream) {
	if !p.stateful {
		return
	}
	if st, ok := s.State(p.slot).(*evalState); ok && st.plugin == p {
		s.SetState(p.slot, nil)
		p.put(st)
	}
}

// Close releases nothing: programs are garbage collected with the plugin.
func (p *Plugin) Close() error { return nil }

// Name returns the extension name the plugin was loaded under.
func (p *Plugin) Name() string { return p.name }
