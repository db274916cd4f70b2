package otelcfg

import (
	"fmt"

	"cel.dev/cel-go/cel"
)

// TenantCELCostLimit bounds one tenant evaluation (CEL cost units).
const TenantCELCostLimit = 1000

// CompileTenantCEL type-checks a tenant expression. It sees request
// (headers: map of lower-case names to first values, path, host, method),
// source (principal: the caller's SPIFFE ID) and route (name), and must
// yield a string. Config validation and the data plane share it, so an
// expression that validates is one the proxy runs.
func CompileTenantCEL(src string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("source", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("route", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("cel env: %w", err)
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, iss.Err()
	}
	if !ast.OutputType().IsExactType(cel.StringType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("result is %s, want string", ast.OutputType())
	}
	return env.Program(ast, cel.CostLimit(TenantCELCostLimit))
}
