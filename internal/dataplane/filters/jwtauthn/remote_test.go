package jwtauthn

import (
	"context"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/filtertest"
)

func remoteConf(uri string, async bool) *jwtv3.JwtAuthentication {
	rj := &jwtv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "jwks"},
			Timeout: durationpb.New(2 * time.Second)},
		CacheDuration: durationpb.New(5 * time.Minute),
	}
	if async {
		rj.AsyncFetch = &jwtv3.JwksAsyncFetch{FailedRefetchDuration: durationpb.New(time.Second)}
	}
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"main": {
			Issuer: "https://issuer.test", Audiences: []string{"api"},
			JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: rj},
		}},
		Rules: []*jwtv3.RequirementRule{prefixRule("/", requireProvider("main"))},
	}
}

func status(t *testing.T, flt filter.Filter, tok string) int {
	t.Helper()
	s := filtertest.NewStream("GET", "/api", "authorization", "Bearer "+tok)
	st, _ := run(t, flt, s)
	return st
}

// waitFetches waits until the remote source has no fetch in flight, so that
// the goroutine-leak check and the next step see a settled state.
func waitFetches(t *testing.T, flt filter.Filter) {
	t.Helper()
	rk := flt.(*authn).providers["main"].src.(*remoteKeys)
	rk.mu.Lock()
	done := rk.done
	rk.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("JWKS fetch did not finish")
	}
}

func TestRemoteJWKS(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	k1, k2 := newRSAKey(t, "k1"), newRSAKey(t, "k2")
	srv := newJWKSServer(t, jwks(t, k1))
	clk := newClock(t0)
	flt := build(t, Factory{Now: clk.now, Client: srv.Client()}, remoteConf(srv.URL+"/jwks", true))
	waitFetches(t, flt)

	t.Run("first fetch", func(t *testing.T) {
		if st := status(t, flt, k1.sign(t, claims(nil))); st != 200 {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("rotation: a new kid is fetched", func(t *testing.T) {
		srv.set(jwks(t, k1, k2), http.StatusOK)
		tok := k2.sign(t, claims(nil))
		// Within minRefetch of the last fetch an unknown kid does not
		// hit the endpoint (random kids cannot hammer it).
		hits := srv.hits.Load()
		if st := status(t, flt, tok); st != 401 || srv.hits.Load() != hits {
			t.Fatalf("status %d, hits %d->%d", st, hits, srv.hits.Load())
		}
		clk.advance(defaultMinRefetch + time.Second)
		if st := status(t, flt, tok); st != 200 {
			t.Fatalf("rotated key: status %d", st)
		}
	})
	t.Run("endpoint down: cached keys still work", func(t *testing.T) {
		srv.set("oops", http.StatusInternalServerError)
		clk.advance(10 * time.Minute) // past cache_duration: a refresh starts and fails
		if st := status(t, flt, k1.sign(t, claims(nil))); st != 200 {
			t.Fatalf("status %d", st)
		}
		waitFetches(t, flt)
		if st := status(t, flt, k2.sign(t, claims(nil))); st != 200 {
			t.Fatalf("status %d after failed refresh", st)
		}
	})
	t.Run("garbage JWKS does not replace good keys", func(t *testing.T) {
		srv.set(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, http.StatusOK) // a symmetric key from a URL: refused
		clk.advance(10 * time.Minute)
		_ = status(t, flt, k1.sign(t, claims(nil)))
		waitFetches(t, flt)
		if st := status(t, flt, k1.sign(t, claims(nil))); st != 200 {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("key removed upstream is dropped after refresh", func(t *testing.T) {
		srv.set(jwks(t, k2), http.StatusOK)
		clk.advance(10 * time.Minute)
		_ = status(t, flt, k1.sign(t, claims(nil))) // served stale, triggers refresh
		waitFetches(t, flt)
		if st := status(t, flt, k1.sign(t, claims(nil))); st != 401 {
			t.Fatalf("removed key still accepted: %d", st)
		}
	})
	waitFetches(t, flt)
}

func TestRemoteJWKSFailsClosed(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	k := newRSAKey(t, "k")
	tests := []struct {
		name   string
		doc    string
		status int
	}{
		{name: "endpoint error", doc: "down", status: http.StatusServiceUnavailable},
		{name: "not JSON", doc: "<html>", status: http.StatusOK},
		{name: "empty set", doc: `{"keys":[]}`, status: http.StatusOK},
		{name: "attacker HMAC key", doc: `{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}`, status: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, tt.doc)
			srv.set(tt.doc, tt.status)
			flt := build(t, Factory{Now: func() time.Time { return t0 }, Client: srv.Client()}, remoteConf(srv.URL, false))
			if st := status(t, flt, k.sign(t, claims(nil))); st != 401 {
				t.Fatalf("status %d with no usable JWKS", st)
			}
			waitFetches(t, flt)
		})
	}
	t.Run("endpoint unreachable, request deadline", func(t *testing.T) {
		srv := newJWKSServer(t, "")
		url := srv.URL
		srv.Close()
		flt := build(t, Factory{Now: func() time.Time { return t0 }}, remoteConf(url, false))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		s := filtertest.NewStream("GET", "/", "authorization", "Bearer "+k.sign(t, claims(nil)))
		s.Ctx = ctx
		if st, _ := run(t, flt, s); st != 401 {
			t.Fatalf("status %d", st)
		}
		waitFetches(t, flt)
	})
}

// TestJWKSSurvivesReload: a new config version reuses the keys the previous
// one fetched, so a JWKS outage during a reload does not lock users out.
func TestJWKSSurvivesReload(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	k := newRSAKey(t, "k")
	srv := newJWKSServer(t, jwks(t, k))
	f := NewFactory()
	f.Now, f.Client = func() time.Time { return t0 }, srv.Client()
	v1 := build(t, f, remoteConf(srv.URL, true))
	waitFetches(t, v1)
	if st := status(t, v1, k.sign(t, claims(nil))); st != 200 {
		t.Fatalf("v1: %d", st)
	}
	srv.set("down", http.StatusServiceUnavailable)
	v2 := build(t, f, remoteConf(srv.URL, true))
	if st := status(t, v2, k.sign(t, claims(nil))); st != 200 {
		t.Fatalf("v2 during JWKS outage: %d", st)
	}
	// Without the shared store the new version starts empty and fails closed.
	v3 := build(t, Factory{Now: f.Now, Client: srv.Client()}, remoteConf(srv.URL, false))
	if st := status(t, v3, k.sign(t, claims(nil))); st != 401 {
		t.Fatalf("unshared factory during outage: %d", st)
	}
	waitFetches(t, v3)
}

func TestTokenCache(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	k1, k2 := newRSAKey(t, "k1"), newRSAKey(t, "k2")
	srv := newJWKSServer(t, jwks(t, k1))
	clk := newClock(t0)
	conf := remoteConf(srv.URL, true)
	conf.Providers["main"].JwtCacheConfig = &jwtv3.JwtCacheConfig{JwtCacheSize: 2}
	flt := build(t, Factory{Now: clk.now, Client: srv.Client()}, conf)
	waitFetches(t, flt)
	p := flt.(*authn).providers["main"]

	tok := k1.sign(t, claims(nil))
	for i := range 3 {
		if st := status(t, flt, tok); st != 200 {
			t.Fatalf("request %d: %d", i, st)
		}
	}
	if len(p.cache.m) != 1 {
		t.Fatalf("cache holds %d tokens", len(p.cache.m))
	}
	// Claims are checked on every hit: the cached token expires.
	clk.advance(time.Hour + 2*time.Minute)
	if st := status(t, flt, tok); st != 401 {
		t.Fatalf("expired cached token: %d", st)
	}
	waitFetches(t, flt) // that request also started a refresh (set older than ttl)
	// k1 is revoked upstream: after the refresh its cached token fails.
	tok = k1.sign(t, claims(map[string]any{"exp": clk.now().Add(time.Hour).Unix()}))
	if st := status(t, flt, tok); st != 200 {
		t.Fatalf("before revocation: %d", st)
	}
	srv.set(jwks(t, k2), http.StatusOK)
	clk.advance(6 * time.Minute) // past cache_duration (5m): refresh
	_ = status(t, flt, tok)
	waitFetches(t, flt)
	if st := status(t, flt, tok); st != 401 {
		t.Fatalf("token of a revoked key served from cache: %d", st)
	}
	// A bounded cache: distinct tokens evict each other.
	for i := range 5 {
		_ = status(t, flt, k2.sign(t, claims(map[string]any{"jti": i, "exp": clk.now().Add(time.Hour).Unix()})))
	}
	if n := len(p.cache.m); n > 2 {
		t.Fatalf("cache grew to %d", n)
	}
}
