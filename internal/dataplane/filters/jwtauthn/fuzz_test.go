package jwtauthn

import (
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

// FuzzToken drives arbitrary Authorization values through the whole token
// path (extraction, JWS parsing, key lookup, signature, claims). Whatever the
// input, the filter answers 200 or 401: never a panic, never another status.
// Corpus: testdata/fuzz/FuzzToken.
func FuzzToken(f *testing.F) {
	k := newECKey(f, "k")
	flt := build(f, Factory{Now: func() time.Time { return t0 }}, &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"main": localProvider(jwks(f, k))},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("main"))},
	})
	good := k.sign(f, claims(nil))
	f.Add("Bearer " + good)
	f.Add("Bearer " + tamper(good))
	f.Add("Bearer " + rawToken(map[string]any{"alg": "none"}, claims(nil), nil))
	f.Add("Bearer e30.e30.")
	f.Fuzz(func(t *testing.T, auth string) {
		s := filtertest.NewStream("GET", "/", "authorization", auth)
		status, _ := run(t, flt, s)
		if status != 200 && status != 401 {
			t.Fatalf("status %d for %q", status, auth)
		}
		if status == 200 && auth != "Bearer "+good && auth != "bearer "+good {
			// Only the one signed token (modulo prefix case and trailing
			// space, which extraction trims) may pass.
			if tok, _ := flt.(*authn).all[0].extract(s.Req); tok != good {
				t.Fatalf("accepted %q", auth)
			}
		}
	})
}
