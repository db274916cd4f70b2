package dslrules

import (
	"fmt"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// Size bounds the cost estimate assumes. They are the limits the proxy's
// codecs enforce on a request head (64 KiB, 100 fields) and on a JWT
// (8 KiB): an expression's estimated worst case holds for any request the
// proxy accepts.
const (
	maxStringBytes = 64 << 10
	maxMapEntries  = 100
	maxClaimsBytes = 8 << 10
)

// getFunction is m.get(key) and m.get(key, default) on map(string, string):
// the value, or "" (or default) when the key is absent. It is the cheap
// spelling of m[?key].orValue(""): no optional value is built per call.
func getFunction() cel.EnvOption {
	mapSS := cel.MapType(cel.StringType, cel.StringType)
	// No runtime type guard: the checker has typed the call, and the guard
	// would walk the map on every call to check its element types.
	return cel.Function("get", decls.DisableTypeGuards(true),
		cel.MemberOverload("map_string_string_get_string", []*cel.Type{mapSS, cel.StringType}, cel.StringType,
			cel.BinaryBinding(func(m, k ref.Val) ref.Val { return mapGet(m, k, types.String("")) })),
		cel.MemberOverload("map_string_string_get_string_string", []*cel.Type{mapSS, cel.StringType, cel.StringType}, cel.StringType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val { return mapGet(args[0], args[1], args[2]) })),
	)
}

func mapGet(m, k, def ref.Val) ref.Val {
	mm, ok := m.(traits.Mapper)
	if !ok {
		return types.MaybeNoSuchOverloadErr(m)
	}
	v, found := mm.Find(k)
	if !found {
		if v != nil && types.IsError(v) {
			return v
		}
		return def
	}
	return v
}

// estimator gives the checker the sizes of the variables.
type estimator struct{}

func (estimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	p := n.Path()
	if len(p) == 0 {
		return nil
	}
	switch p[0] {
	case VarJWTClaims:
		// Claims come from a token of at most maxClaimsBytes.
		return &cost.SizeEstimate{Min: 0, Max: maxClaimsBytes}
	}
	switch n.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &cost.SizeEstimate{Min: 0, Max: maxStringBytes}
	case types.MapKind, types.ListKind:
		return &cost.SizeEstimate{Min: 0, Max: maxMapEntries}
	}
	return nil
}

func (estimator) EstimateCallCost(function, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	switch overloadID {
	case "map_string_string_get_string", "map_string_string_get_string_string":
		// A lookup, costed as CEL costs m[k].
		return &cost.CallEstimate{CostEstimate: cost.CostEstimate{Min: 1, Max: 1}, ResultSize: &cost.SizeEstimate{Min: 0, Max: maxStringBytes}}
	}
	return nil
}

// MaxCost returns the worst-case cost of a checked expression over any
// request the proxy accepts. The proxy runs an expression whose worst case
// is within its cost limit without tracking cost per evaluation (tracking
// allocates); others are tracked and stopped at the limit.
func MaxCost(env *cel.Env, ast *cel.Ast) (uint64, error) {
	est, err := env.EstimateCost(ast, estimator{})
	if err != nil {
		return 0, fmt.Errorf("estimate cost: %w", err)
	}
	return est.Max, nil
}
