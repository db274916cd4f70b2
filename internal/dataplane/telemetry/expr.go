package telemetry

import (
	"fmt"

	"cel.dev/cel-go/cel"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/shared/otelx/otelcfg"
)

// TenantExpr is a compiled CEL tenant expression (otelcfg.CompileTenantCEL
// says what it sees). It is evaluated only when something is about to be
// emitted for the request (a sampled span, a log record, a metric), never
// for unsampled traffic with logs and metrics off; an evaluation builds a
// header map and allocates.
type TenantExpr struct {
	prg cel.Program
}

// CompileTenantExpr type-checks src.
func CompileTenantExpr(src string) (*TenantExpr, error) {
	prg, err := otelcfg.CompileTenantCEL(src)
	if err != nil {
		return nil, fmt.Errorf("tenant expression %q: %w", src, err)
	}
	return &TenantExpr{prg: prg}, nil
}

// Eval returns the tenant, "" when the expression fails or yields no string.
func (e *TenantExpr) Eval(req *message.Request, route, peer string) string {
	if e == nil {
		return ""
	}
	hs := make(map[string]string, req.Header.Len())
	for i := 0; i < req.Header.Len(); i++ {
		f := req.Header.At(i)
		if _, dup := hs[string(f.Name)]; !dup {
			hs[string(f.Name)] = string(f.Value)
		}
	}
	out, _, err := e.prg.Eval(map[string]any{
		"request": map[string]any{"headers": hs, "path": string(req.Path), "host": string(req.Host()), "method": string(req.Method)},
		"source":  map[string]any{"principal": peer},
		"route":   map[string]any{"name": route},
	})
	if err != nil {
		return ""
	}
	s, _ := out.Value().(string)
	return s
}
