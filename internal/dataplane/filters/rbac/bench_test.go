package rbac

import (
	"testing"

	rbacconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

// BenchmarkEvaluate runs a request through an ALLOW filter whose matching
// policy is the last of several (the realistic worst case), with and without
// a CEL condition.
func BenchmarkEvaluate(b *testing.B) {
	policies := func(cond string) map[string]*rbacconfv3.Policy {
		return map[string]*rbacconfv3.Policy{
			"a-admins": pol([]*rbacconfv3.Permission{pathPerm("/admin")}, []*rbacconfv3.Principal{peerPrin("spiffe://mesh.local/ns/ops/sa/admin")}, ""),
			"b-ips":    pol([]*rbacconfv3.Permission{methodPerm("DELETE")}, []*rbacconfv3.Principal{ipPrin("192.168.0.0", 16)}, ""),
			"c-claims": pol([]*rbacconfv3.Permission{pathPerm("/me")}, []*rbacconfv3.Principal{claimPrin("main", "sub", "alice")}, ""),
			"z-match":  pol([]*rbacconfv3.Permission{andPerm(methodPerm("GET"), pathPerm("/api"))}, []*rbacconfv3.Principal{peerPrin("spiffe://mesh.local/ns/web/sa/frontend")}, cond),
		}
	}
	for _, bc := range []struct{ name, cond string }{
		{"matchers", ""},
		{"cel-method", `request.method == "GET"`},
		{"cel-header", `request.headers["x-tenant"] == "a"`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			flt := build(b, &rbacv3.RBAC{Rules: rules(rbacconfv3.RBAC_ALLOW, policies(bc.cond))}, nil, nil)
			chain := filter.NewChain(&filtertest.Terminal{}, flt)
			s := req{path: "/"}.stream()
			s.Downstream.PeerIdentity = "spiffe://mesh.local/ns/web/sa/frontend"
			ds := s.Downstream
			b.ReportAllocs()
			for b.Loop() {
				filtertest.Fill(s, "GET", "/api/items", "x-tenant", "a", "user-agent", "bench")
				s.Downstream = ds
				chain.Run(s)
				if s.Resp.Status != 200 {
					b.Fatalf("status %d", s.Resp.Status)
				}
			}
		})
	}
}
