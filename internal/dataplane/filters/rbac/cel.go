package rbac

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"

	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
)

// DefaultCostLimit bounds one condition evaluation (CEL cost units: about
// one per operation, plus string and list sizes). Envoy has no limit; a
// policy condition is on every request, so OmniRelay keeps one.
const DefaultCostLimit = 10_000

// CELVariables returns the top-level names a condition may use, Envoy's
// attribute vocabulary, each a map(string, dyn):
//
//	request:     path, url_path, host, method, scheme, query, headers (map)
//	source:      address ("ip:port"), port
//	destination: address, port
//	connection:  uri_san_peer_certificate (peer SPIFFE ID), requested_server_name, mtls
//	metadata:    filter_metadata["envoy.filters.http.jwt_authn"][key][claim]
func CELVariables() []string {
	return []string{"request", "source", "destination", "connection", "metadata"}
}

// CELEnv is the CEL environment conditions are checked and run in. Build it
// once per config version (NewCELEnv costs milliseconds).
type CELEnv struct {
	env       *cel.Env
	costLimit uint64
}

// NewCELEnv returns an environment with CELVariables() declared. costLimit 0
// means DefaultCostLimit.
func NewCELEnv(costLimit uint64) (*CELEnv, error) {
	var opts []cel.EnvOption
	for _, v := range CELVariables() {
		opts = append(opts, cel.Variable(v, cel.MapType(cel.StringType, cel.DynType)))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("cel env: %w", err)
	}
	if costLimit == 0 {
		costLimit = DefaultCostLimit
	}
	return &CELEnv{env: env, costLimit: costLimit}, nil
}

type condition struct{ prg cel.Program }

// compile type-checks a parsed expression (the Expr of the xDS Policy) and
// requires a bool result.
func (e *CELEnv) compile(expr *exprpb.Expr) (*condition, error) {
	ast := cel.ParsedExprToAst(&exprpb.ParsedExpr{Expr: expr})
	checked, iss := e.env.Check(ast)
	if iss != nil && iss.Err() != nil {
		return nil, iss.Err()
	}
	if !checked.OutputType().IsExactType(cel.BoolType) && !checked.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("result is %s, want bool", checked.OutputType())
	}
	prg, err := e.env.Program(checked, cel.CostLimit(e.costLimit))
	if err != nil {
		return nil, err
	}
	return &condition{prg: prg}, nil
}

func (c *condition) eval(in *Input) (bool, error) {
	out, _, err := c.prg.Eval(&activation{in: in})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, errors.New("condition did not yield a bool")
	}
	return b, nil
}

// activation resolves CEL variables lazily from the Input: a condition
// that only reads request.method never builds the header map.
type activation struct{ in *Input }

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) ResolveName(name string) (any, bool) {
	in := a.in
	switch name {
	case "request":
		m := map[string]any{}
		if r := in.Req; r != nil {
			m["path"] = string(r.Path)
			m["url_path"] = string(r.PathOnly())
			m["host"] = string(r.Host())
			m["method"] = string(r.Method)
			m["scheme"] = string(r.Scheme)
			m["query"] = string(r.Query())
			hs := make(map[string]string, r.Header.Len())
			for i := 0; i < r.Header.Len(); i++ {
				f := r.Header.At(i)
				if prev, ok := hs[string(f.Name)]; ok {
					hs[string(f.Name)] = prev + "," + string(f.Value)
					continue
				}
				hs[string(f.Name)] = string(f.Value)
			}
			m["headers"] = hs
		}
		return m, true
	case "source":
		return map[string]any{"address": in.Source.String(), "port": int64(in.Source.Port())}, true
	case "destination":
		return map[string]any{"address": in.Dest.String(), "port": int64(in.Dest.Port())}, true
	case "connection":
		return map[string]any{
			"uri_san_peer_certificate": in.PeerIdentity,
			"requested_server_name":    in.SNI,
			"mtls":                     in.PeerIdentity != "",
		}, true
	case "metadata":
		jwt := map[string]any{}
		for _, p := range in.Claims {
			if p.Key != "" {
				jwt[p.Key] = p.Claims
			}
		}
		return map[string]any{"filter_metadata": map[string]any{jwtauthn.MetadataNamespace: jwt}}, true
	}
	return nil, false
}

// ParseCondition compiles CEL source into the parsed Expr an xDS Policy
// carries, type-checked against NewCELEnv's declarations. Tests and tools
// use it; the config translator has its own copy of the declarations.
func (e *CELEnv) ParseCondition(src string) (*exprpb.Expr, error) {
	ast, iss := e.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(strings.TrimSpace(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("result is %s, want bool", ast.OutputType())
	}
	parsed, err := cel.AstToParsedExpr(ast)
	if err != nil {
		return nil, err
	}
	return parsed.GetExpr(), nil
}
