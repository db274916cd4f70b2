package jwtauthn

import (
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

func BenchmarkVerify(b *testing.B) {
	for _, kc := range []struct {
		name  string
		key   func(testing.TB, string) *testKey
		cache bool
	}{{"RS256", newRSAKey, false}, {"ES256", newECKey, false}, {"RS256-cached", newRSAKey, true}} {
		k := kc.key(b, "k")
		p := localProvider(jwks(b, k))
		if kc.cache {
			p.JwtCacheConfig = &jwtv3.JwtCacheConfig{}
		}
		p.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{{HeaderName: "x-user", ClaimName: "sub"}}
		flt := build(b, Factory{Now: func() time.Time { return t0 }}, &jwtv3.JwtAuthentication{
			Providers: map[string]*jwtv3.JwtProvider{"main": p},
			Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("main"))},
		})
		chain := filter.NewChain(&filtertest.Terminal{}, flt)
		auth := "Bearer " + k.sign(b, claims(nil))
		b.Run(kc.name, func(b *testing.B) {
			b.ReportAllocs()
			s := filtertest.NewStream("GET", "/")
			ctx := s.Ctx
			for b.Loop() {
				s.Ctx = ctx // as a connection does per request: payloads do not pile up
				filtertest.Fill(s, "GET", "/api", "authorization", auth)
				chain.Run(s)
				if s.Resp.Status != 200 {
					b.Fatalf("status %d", s.Resp.Status)
				}
			}
		})
		b.Run(kc.name+"/rejected", func(b *testing.B) {
			b.ReportAllocs()
			s := filtertest.NewStream("GET", "/")
			bad := auth[:len(auth)-4] + "AAAA"
			for b.Loop() {
				filtertest.Fill(s, "GET", "/api", "authorization", bad)
				chain.Run(s)
			}
		})
	}
}
