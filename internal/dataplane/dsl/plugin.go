package dsl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
	"github.com/goccy/go-yaml"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
)

// RouteToHeader is the request header route_to sets (then the route is
// matched again). The router has no per-stream cluster override, so a
// route_to action needs a route matching this header to the cluster; see
// docs/dsl.md. A plugin with a route_to action drops a copy of the header
// sent by the client before its rules run.
const RouteToHeader = "x-omnirelay-route-to"

// ErrCostLimit is wrapped by the error of an evaluation stopped by the cost
// limit.
var ErrCostLimit = errors.New("dsl: evaluation cost limit exceeded")

// Plugin is a compiled rule set. It is shared by every stream of a config
// version; per-stream state comes from a pool and, when the response phase
// needs it, lives in extension.StreamState until OnComplete.
type Plugin struct {
	name     string
	request  []rule
	response []rule
	config   ref.Val
	claims   func(*filter.Stream) map[string]any
	state    func(*filter.Stream) *any
	pool     sync.Pool
	// stateful: response rules may need what request rules left
	// (metadata), so the state is kept until OnComplete. A rule set with
	// one phase only has nothing to carry over.
	stateful bool
	// routeTo: some rule routes with RouteToHeader, so a client's own copy
	// of that header is dropped before the rules run (no route spoofing).
	routeTo bool
}

type rule struct {
	name    string
	when    cel.Program // nil: always
	actions []action
}

type action struct {
	kind    dslrules.ActionKind
	name    string // header name (lower-case), metadata key or cluster
	literal string
	expr    cel.Program // the value when not literal
	status  int
	body    string
	headers [][2]string // respond headers, sorted by name
}

// compile plans programs for a checked rule set.
func compile(name string, c *dslrules.Checked, config []byte, o Options) (*Plugin, error) {
	p := &Plugin{name: name, claims: o.Claims, state: o.state}
	cfg, err := parseConfig(config)
	if err != nil {
		return nil, err
	}
	p.config = cfg
	plan := planner{limit: o.costLimit()}
	for i := range c.Rules {
		cr := &c.Rules[i]
		env := c.Env(cr.Rule.Phase)
		r := rule{name: cr.Rule.Name, actions: make([]action, len(cr.Rule.Actions))}
		if cr.When != nil {
			if r.when, err = plan.program(env, cr.When); err != nil {
				return nil, fmt.Errorf("rule %q: when: %w", r.name, err)
			}
		}
		for j := range cr.Rule.Actions {
			a, err := compileAction(&cr.Rule.Actions[j], cr.Exprs[j], env, plan)
			if err != nil {
				return nil, fmt.Errorf("rule %q: actions[%d]: %w", r.name, j, err)
			}
			if a.kind == dslrules.ActRouteTo {
				p.routeTo = true
			}
			r.actions[j] = a
		}
		if cr.Rule.Phase == dslrules.PhaseResponse {
			p.response = append(p.response, r)
		} else {
			p.request = append(p.request, r)
		}
	}
	p.stateful = len(p.request) > 0 && len(p.response) > 0
	p.pool.New = func() any { return newEvalState(p) }
	return p, nil
}

// planner builds programs under the cost limit. An expression whose worst
// case (dslrules.MaxCost over any request the codecs accept) is within the
// limit cannot exceed it, so it runs without a per-evaluation cost tracker,
// which allocates; any other is tracked and stopped at the limit.
type planner struct{ limit uint64 }

func (pl planner) program(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if worst, err := dslrules.MaxCost(env, ast); err != nil || worst > pl.limit {
		opts = append(opts, cel.CostLimit(pl.limit))
	}
	return env.Program(ast, opts...)
}

func compileAction(src *dslrules.Action, ast *cel.Ast, env *cel.Env, plan planner) (action, error) {
	kind, err := src.Kind()
	if err != nil {
		return action{}, err
	}
	a := action{kind: kind}
	if ast != nil {
		if a.expr, err = plan.program(env, ast); err != nil {
			return action{}, fmt.Errorf("%s: %w", kind, err)
		}
	}
	switch kind {
	case dslrules.ActSetHeader:
		a.name = strings.ToLower(src.SetHeader.Name)
		if src.SetHeader.Value.Value != nil {
			a.literal = *src.SetHeader.Value.Value
		}
	case dslrules.ActRemoveHeader:
		a.name = strings.ToLower(src.RemoveHeader)
	case dslrules.ActDeny:
		a.status, a.body = src.Deny.Status, src.Deny.Body
	case dslrules.ActRouteTo:
		a.name = src.RouteTo
	case dslrules.ActRespond:
		a.status, a.body = src.Respond.Status, src.Respond.Body
		for k, v := range src.Respond.Headers {
			a.headers = append(a.headers, [2]string{strings.ToLower(k), v})
		}
		sortPairs(a.headers)
	case dslrules.ActSetMetadata:
		a.name = src.SetMetadata.Key
		if src.SetMetadata.Value.Value != nil {
			a.literal = *src.SetMetadata.Value.Value
		}
	}
	return a, nil
}

func sortPairs(p [][2]string) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j][0] < p[j-1][0]; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// parseConfig reads the extension config: empty, or a YAML (or JSON) map of
// strings exposed to the rules as config.
func parseConfig(b []byte) (ref.Val, error) {
	m := map[string]string{}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := yaml.UnmarshalWithOptions(b, &m, yaml.DisallowUnknownField()); err != nil {
			return nil, fmt.Errorf("dsl: config: want a map of strings: %w", err)
		}
	}
	return types.DefaultTypeAdapter.NativeToValue(m), nil
}

func (p *Plugin) claimsOf(s *filter.Stream) ref.Val {
	var c map[string]any
	if p.claims != nil {
		c = p.claims(s)
	} else {
		c = jwtClaims(s)
	}
	if c == nil {
		return types.DefaultTypeAdapter.NativeToValue(map[string]any{})
	}
	return types.DefaultTypeAdapter.NativeToValue(c)
}

// jwtClaims returns the claims of the first token the jwt_authn filter
// verified on the stream, nil when none.
func jwtClaims(s *filter.Stream) map[string]any {
	if ps := s.Attrs.Claims; len(ps) > 0 {
		return ps[0].Claims
	}
	return nil
}

func (p *Plugin) acquire(s *filter.Stream) *evalState {
	st := p.pool.Get().(*evalState)
	st.bind(s)
	return st
}

func (p *Plugin) put(st *evalState) {
	st.release()
	p.pool.Put(st)
}

// evalBool runs a condition. Only a cost-limit stop is an error: any other
// evaluation error (a missing map key, a failed conversion) means the rule
// does not apply, as a failed condition does in Envoy's RBAC.
func (st *evalState) evalBool(prg cel.Program) (bool, error) {
	out, err := st.eval(prg)
	if err != nil {
		if isCostLimit(err) {
			return false, err
		}
		return false, nil
	}
	return out == types.True, nil
}

// evalString runs a value expression. The result may alias the stream's
// headers or the state's cells: use it before the next evaluation.
func (st *evalState) evalString(prg cel.Program) (string, error) {
	out, err := st.eval(prg)
	if err != nil {
		return "", err
	}
	s, ok := out.(types.String)
	if !ok {
		return "", fmt.Errorf("result is %s, want string", out.Type().TypeName())
	}
	return string(s), nil
}

func (st *evalState) eval(prg cel.Program) (ref.Val, error) {
	st.cells.reset()
	st.ipBuf = st.ipBuf[:0]
	out, _, err := prg.Eval(st)
	if err != nil {
		if isCostLimit(err) {
			return nil, fmt.Errorf("%w: %w", ErrCostLimit, err)
		}
		return nil, err
	}
	return out, nil
}

func isCostLimit(err error) bool {
	if errors.Is(err, ErrCostLimit) {
		return true
	}
	var ec interpreter.EvalCancelledError
	return errors.As(err, &ec) && ec.Cause == interpreter.CostLimitExceeded
}

// checkDeadline is the deadline check before rule i of a call: rules that
// ran long end the call between rules. There is none before the first rule:
// the watchdog set the deadline as the call began, and it reads the clock
// again as the call ends, so a check there could catch only a stream
// already cancelled, for a clock read (through the context, ~35 ns) per
// call. A call on a cancelled stream runs its first rule, bounded by the
// cost limit.
func checkDeadline(ctx context.Context, i int) error {
	if i == 0 {
		return nil
	}
	return ctx.Err()
}

// runRequest applies the request rules in order. It reports stop when an
// action answered the request.
func (p *Plugin) runRequest(ctx context.Context, st *evalState) (stop bool, err error) {
	if p.routeTo && st.s.Req.Header.Del(RouteToHeader) > 0 {
		st.s.ClearRoute()
	}
	for i := range p.request {
		r := &p.request[i]
		if err := checkDeadline(ctx, i); err != nil {
			return false, fmt.Errorf("rule %q: %w", r.name, err)
		}
		if r.when != nil {
			ok, err := st.evalBool(r.when)
			if err != nil {
				return false, fmt.Errorf("rule %q: when: %w", r.name, err)
			}
			if !ok {
				continue
			}
		}
		for j := range r.actions {
			stop, err := st.applyRequest(&r.actions[j])
			if err != nil {
				return false, fmt.Errorf("rule %q: actions[%d] %s: %w", r.name, j, r.actions[j].kind, err)
			}
			if stop {
				return true, nil
			}
		}
	}
	return false, nil
}

func (st *evalState) value(a *action) (string, error) {
	if a.expr == nil {
		return a.literal, nil
	}
	return st.evalString(a.expr)
}

// metaValue is value for set_metadata, which keeps the value for the rest
// of the stream: an expression's result may alias a header arena or a cell,
// so it is copied; a literal belongs to the plugin and is not.
func (st *evalState) metaValue(a *action) (string, error) {
	if a.expr == nil {
		return a.literal, nil
	}
	v, err := st.evalString(a.expr)
	return strings.Clone(v), err
}

func (st *evalState) applyRequest(a *action) (stop bool, err error) {
	s := st.s
	switch a.kind {
	case dslrules.ActSetHeader:
		v, err := st.value(a)
		if err != nil {
			return false, err
		}
		if !validHeaderValue(v) {
			return false, errors.New("value holds CR, LF or NUL")
		}
		// Header edits keep the matched route, as Envoy's header mutation
		// does by default; route_to and rewrite_path rematch.
		s.Req.Header.Set(a.name, v)
	case dslrules.ActRemoveHeader:
		s.Req.Header.Del(a.name)
	case dslrules.ActRewritePath:
		v, err := st.evalString(a.expr)
		if err != nil {
			return false, err
		}
		if len(v) == 0 || v[0] != '/' || !validHeaderValue(v) {
			return false, fmt.Errorf("rewritten path %q: want an absolute path", v)
		}
		st.pathBuf = append(st.pathBuf[:0], v...)
		if q := s.Req.Query(); q != nil && strings.IndexByte(v, '?') < 0 {
			st.pathBuf = append(st.pathBuf, '?')
			st.pathBuf = append(st.pathBuf, q...)
		}
		s.Req.SetPathBytes(st.pathBuf)
		st.query.q = s.Req.Query()
		s.ClearRoute()
	case dslrules.ActRouteTo:
		s.Req.Header.Set(RouteToHeader, a.name)
		s.ClearRoute()
	case dslrules.ActDeny:
		s.Reply(a.status, a.body)
		return true, nil
	case dslrules.ActRespond:
		s.Reply(a.status, a.body)
		for _, h := range a.headers {
			s.Resp.Header.Set(h[0], h[1])
		}
		return true, nil
	case dslrules.ActSetMetadata:
		v, err := st.metaValue(a)
		if err != nil {
			return false, err
		}
		st.meta.set(a.name, v)
	}
	return false, nil
}

// runResponse applies the response rules in order.
func (p *Plugin) runResponse(ctx context.Context, st *evalState) error {
	if st.s.Resp == nil {
		return nil
	}
	st.respHdr.h = &st.s.Resp.Header
	// A state kept from the request phase holds the query as it was then;
	// a later filter may have rewritten the path since (and its bytes).
	st.query.q = st.s.Req.Query()
	for i := range p.response {
		r := &p.response[i]
		if err := checkDeadline(ctx, i); err != nil {
			return fmt.Errorf("rule %q: %w", r.name, err)
		}
		if r.when != nil {
			ok, err := st.evalBool(r.when)
			if err != nil {
				return fmt.Errorf("rule %q: when: %w", r.name, err)
			}
			if !ok {
				continue
			}
		}
		for j := range r.actions {
			if err := st.applyResponse(&r.actions[j]); err != nil {
				return fmt.Errorf("rule %q: actions[%d] %s: %w", r.name, j, r.actions[j].kind, err)
			}
		}
	}
	return nil
}

func (st *evalState) applyResponse(a *action) error {
	h := &st.s.Resp.Header
	switch a.kind {
	case dslrules.ActSetHeader:
		v, err := st.value(a)
		if err != nil {
			return err
		}
		if !validHeaderValue(v) {
			return errors.New("value holds CR, LF or NUL")
		}
		h.Set(a.name, v)
	case dslrules.ActRemoveHeader:
		h.Del(a.name)
	case dslrules.ActSetMetadata:
		v, err := st.metaValue(a)
		if err != nil {
			return err
		}
		st.meta.set(a.name, v)
	}
	return nil
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}
