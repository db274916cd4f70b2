package filters

import (
	"testing"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

func TestBuiltinsRegister(t *testing.T) {
	reg, err := filter.NewRegistry(Builtins()...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"header mutation", &hmv3.HeaderMutation{}},
		{"local rate limit", &lrlv3.LocalRateLimit{}},
		{"fault", &faultv3.HTTPFault{}},
		{"cors", &corsv3.Cors{}},
		{"jwt_authn", &jwtv3.JwtAuthentication{}},
		{"rbac", &rbacv3.RBAC{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := "type.googleapis.com/" + string(tt.msg.ProtoReflect().Descriptor().FullName())
			f, ok := reg.Lookup(url)
			if !ok {
				t.Fatalf("no factory for %s", url)
			}
			if _, ok := f.(filter.RouteFactory); !ok {
				t.Fatalf("%T does not accept per-route config", f)
			}
		})
	}
	if n := len(reg.Types()); n != len(tests) {
		t.Fatalf("registry has %d types, want %d", n, len(tests))
	}
}
