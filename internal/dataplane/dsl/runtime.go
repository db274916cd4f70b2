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

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// DefaultCostLimit bounds one evaluation (one condition or one value) in
// CEL cost units, where a comparison costs one unit plus one per ten bytes
// compared. A few string operations over header-sized values (64 KiB) fit;
// a regex or an iteration over large input does not and is stopped. The
// watchdog deadline still bounds the whole call.
const DefaultCostLimit = 100_000

// Options configure the runtime.
type Options struct {
	// CostLimit bounds each evaluation; 0 means DefaultCostLimit.
	CostLimit uint64
	// Claims returns the verified JWT claims of a stream (jwt.claims), nil
	// when none. Nil means the claims of the first token the jwt_authn
	// filter verified on the stream (Stream.Attrs.Claims).
	Claims func(s *filter.Stream) map[string]any

	// state finds a stream's state slot; nil means extension.StreamState.
	// Tests that call a plugin outside the extension filter set it.
	state func(s *filter.Stream) *any
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

var (
	_ extension.Runtime   = (*Runtime)(nil)
	_ extension.Plugin    = (*Plugin)(nil)
	_ extension.Describer = (*Plugin)(nil)
)

// NewRuntime returns the dsl runtime.
func NewRuntime(o Options) *Runtime { return &Runtime{opts: o} }

// Kind implements extension.Runtime.
func (*Runtime) Kind() string { return extpkg.KindDSL }

// ABIs implements extension.Runtime.
func (*Runtime) ABIs() []string { return []string{dslrules.ABI} }

// Load implements extension.Runtime: parse, type-check and plan the rules
// of payload once; config is an optional YAML map of strings (the config
// variable).
func (r *Runtime) Load(_ context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	if m.Kind != extpkg.KindDSL {
		return nil, fmt.Errorf("dsl %q: package kind %q, want %q", m.Name, m.Kind, extpkg.KindDSL)
	}
	if m.ABI != dslrules.ABI {
		return nil, fmt.Errorf("dsl %q: ABI %q, want %q", m.Name, m.ABI, dslrules.ABI)
	}
	return r.Compile(m.Name, payload, config)
}

// Compile is Load without a manifest (tools and tests).
func (r *Runtime) Compile(name string, payload, config []byte) (*Plugin, error) {
	c, err := dslrules.Compile(payload)
	if err != nil {
		return nil, fmt.Errorf("dsl %q: %w", name, err)
	}
	p, err := compile(name, c, config, r.opts)
	if err != nil {
		return nil, fmt.Errorf("dsl %q: %w", name, err)
	}
	return p, nil
}

// Describe implements extension.Describer: a rule set is called only in the
// phases it has rules for, fixed at load. A set with no request rules
// (response rules only) needs no request call: route_to is a request
// action, so such a set has no client header to drop either.
func (p *Plugin) Describe() extension.Capabilities {
	var c extension.Capabilities
	if len(p.request) > 0 || p.routeTo {
		c.Phases |= extension.PhaseRequest
	}
	if len(p.response) > 0 {
		c.Phases |= extension.PhaseResponse
	}
	return c
}

// OnRequest implements extension.Plugin: the request rules in order. Stop
// means a rule answered (deny, respond).
func (p *Plugin) OnRequest(ctx context.Context, s *filter.Stream) (extension.Action, error) {
	if len(p.request) == 0 {
		return extension.Continue, nil
	}
	st := p.acquire(s)
	stop, err := p.runRequest(ctx, st)
	// Only a stateful set keeps the state: the others need not look up the
	// slot (a scan of the stream's filter slots).
	var slot *any
	if p.stateful {
		slot = p.stateOf(s)
	}
	if slot != nil {
		*slot = st
	} else {
		p.put(st)
	}
	if stop {
		return extension.Stop, err
	}
	return extension.Continue, err
}

// OnResponse implements extension.Plugin: the response rules in order.
func (p *Plugin) OnResponse(ctx context.Context, s *filter.Stream) error {
	if len(p.response) == 0 {
		return nil
	}
	var st *evalState
	if slot := p.stateOf(s); slot != nil {
		st, _ = (*slot).(*evalState)
	}
	if st == nil || st.plugin != p {
		// No state from the request phase: run with a fresh one.
		st = p.acquire(s)
		defer p.put(st)
	}
	return p.runResponse(ctx, st)
}

// OnComplete implements extension.Plugin: the stream's state goes back to
// the pool.
func (p *Plugin) OnComplete(s *filter.Stream) {
	if !p.stateful {
		return
	}
	slot := p.stateOf(s)
	if slot == nil {
		return
	}
	if st, ok := (*slot).(*evalState); ok && st.plugin == p {
		*slot = nil
		p.put(st)
	}
}

func (p *Plugin) stateOf(s *filter.Stream) *any {
	if p.state != nil {
		return p.state(s)
	}
	return extension.StreamState(s)
}

// Close implements extension.Plugin. Programs hold no resources beyond
// memory.
func (p *Plugin) Close() error { return nil }

// Name returns the extension name the plugin was loaded under.
func (p *Plugin) Name() string { return p.name }
