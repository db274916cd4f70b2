package dslrules

import (
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
)

// Variables the rules see. Names are qualified identifiers (request.path is
// one variable, not a field of a request object) so that the checker refuses
// a misspelt field and the proxy resolves each one without building objects.
const (
	VarRequestMethod   = "request.method"
	VarRequestPath     = "request.path" // without the query
	VarRequestHost     = "request.host" // without the port
	VarRequestScheme   = "request.scheme"
	VarRequestQuery    = "request.query" // map(string, string), raw (not decoded) values
	VarRequestHeaders  = "request.headers"
	VarConnRemoteIP    = "connection.remote_ip"
	VarConnTLS         = "connection.tls"
	VarConnSNI         = "connection.sni"
	VarPeerSPIFFEID    = "peer.spiffe_id"
	VarJWTClaims       = "jwt.claims"
	VarMetadata        = "metadata"
	VarConfig          = "config"
	VarResponseStatus  = "response.status"
	VarResponseHeaders = "response.headers"
)

type variable struct {
	name     string
	typ      *cel.Type
	response bool // declared in the response phase only
	doc      string
}

var variables = []variable{
	{VarRequestMethod, cel.StringType, false, "HTTP method, e.g. GET"},
	{VarRequestPath, cel.StringType, false, "path without the query string"},
	{VarRequestHost, cel.StringType, false, "authority without the port"},
	{VarRequestScheme, cel.StringType, false, "http or https"},
	{VarRequestQuery, cel.MapType(cel.StringType, cel.StringType), false, "query parameters (first value, not percent-decoded)"},
	{VarRequestHeaders, cel.MapType(cel.StringType, cel.StringType), false, "request headers (first value; names are case-insensitive)"},
	{VarConnRemoteIP, cel.StringType, false, "downstream peer address"},
	{VarConnTLS, cel.BoolType, false, "whether the downstream connection is TLS"},
	{VarConnSNI, cel.StringType, false, "TLS server name, empty without TLS"},
	{VarPeerSPIFFEID, cel.StringType, false, "authenticated peer SPIFFE ID (mTLS), empty when none"},
	{VarJWTClaims, cel.MapType(cel.StringType, cel.DynType), false, "claims of the JWT verified on this stream, empty when none"},
	{VarMetadata, cel.MapType(cel.StringType, cel.StringType), false, "keys set by set_metadata earlier in this stream"},
	{VarConfig, cel.MapType(cel.StringType, cel.StringType), false, "the extension's config (a YAML map of strings)"},
	{VarResponseStatus, cel.IntType, true, "response status (response phase)"},
	{VarResponseHeaders, cel.MapType(cel.StringType, cel.StringType), true, "response headers (response phase)"},
}

// Variables lists the variable names declared in phase p, for documentation
// and tooling.
func Variables(p Phase) []string {
	var out []string
	for _, v := range variables {
		if !v.response || p == PhaseResponse {
			out = append(out, v.name)
		}
	}
	return out
}

// NewEnv returns the CEL environment of a phase: the standard library, the
// strings extension, optional values (m[?"k"].orValue("")), m.get(k) and
// m.get(k, default) on string maps, and the variables.
func NewEnv(p Phase) (*cel.Env, error) {
	opts := []cel.EnvOption{ext.Strings(), cel.OptionalTypes(), cel.CrossTypeNumericComparisons(true), getFunction()}
	for _, v := range variables {
		if !v.response || p == PhaseResponse {
			opts = append(opts, cel.VariableWithDoc(v.name, v.typ, v.doc))
		}
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("dsl: cel environment: %w", err)
	}
	return env, nil
}

// Checked is a type-checked rule set, ready for the proxy to plan programs.
type Checked struct {
	Set   *RuleSet
	Rules []CheckedRule
	envs  [2]*cel.Env
}

// CheckedRule holds the checked expressions of one rule.
type CheckedRule struct {
	Rule *Rule
	// When is nil when the rule always applies.
	When *cel.Ast
	// Exprs parallels Rule.Actions: the string expression of the action
	// (set_header/set_metadata expr, rewrite_path), nil when it has none.
	Exprs []*cel.Ast
}

// Env returns the environment the expressions of phase p were checked in;
// programs must be planned in it.
func (c *Checked) Env(p Phase) *cel.Env {
	if p == PhaseResponse {
		return c.envs[1]
	}
	return c.envs[0]
}

// Compile parses and checks a payload: the one call omnictl, MeshKit and the
// proxy make.
func Compile(src []byte) (*Checked, error) {
	rs, err := Parse(src)
	if err != nil {
		return nil, err
	}
	return Check(rs)
}

// Check type-checks every expression of rs. Errors name the rule, the field
// and the position in the expression.
func Check(rs *RuleSet) (*Checked, error) {
	c := &Checked{Set: rs, Rules: make([]CheckedRule, len(rs.Rules))}
	var err error
	if c.envs[0], err = NewEnv(PhaseRequest); err != nil {
		return nil, err
	}
	if c.envs[1], err = NewEnv(PhaseResponse); err != nil {
		return nil, err
	}
	for i := range rs.Rules {
		r := &rs.Rules[i]
		env := c.Env(r.Phase)
		cr := CheckedRule{Rule: r, Exprs: make([]*cel.Ast, len(r.Actions))}
		if strings.TrimSpace(r.When) != "" {
			if cr.When, err = compileExpr(env, r.When, cel.BoolType); err != nil {
				return nil, fmt.Errorf("rules[%d] %q: when: %w", i, r.Name, err)
			}
		}
		for j := range r.Actions {
			src, field := r.Actions[j].expr()
			if src == "" {
				continue
			}
			if cr.Exprs[j], err = compileExpr(env, src, cel.StringType); err != nil {
				return nil, fmt.Errorf("rules[%d] %q: actions[%d]: %s: %w", i, r.Name, j, field, err)
			}
		}
		c.Rules[i] = cr
	}
	return c, nil
}

// expr returns the CEL source an action evaluates and the field it came
// from, or "" when the action has only literals.
func (a *Action) expr() (src, field string) {
	switch {
	case a.SetHeader != nil && a.SetHeader.Expr != "":
		return a.SetHeader.Expr, "set_header.expr"
	case a.SetMetadata != nil && a.SetMetadata.Expr != "":
		return a.SetMetadata.Expr, "set_metadata.expr"
	case a.RewritePath != "":
		return a.RewritePath, "rewrite_path"
	}
	return "", ""
}

func compileExpr(env *cel.Env, src string, want *cel.Type) (*cel.Ast, error) {
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(want) {
		return nil, fmt.Errorf("%q has type %s, want %s", src, ast.OutputType(), want)
	}
	return ast, nil
}
