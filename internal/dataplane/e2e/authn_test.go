package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// JWT authentication then RBAC, configured as docs/security.md describes,
// through the real proxy with a real JWKS server on loopback.

const authnConfig = `
admin: { address: {{admin}} }
listeners:
  - name: api
    address: {{api}}
    filters:
      - jwt:
          providers:
            - name: auth
              issuer: https://issuer.test/
              audiences: [shop]
              jwks_uri: {{jwks}}
              forward_claims: { sub: x-user }
          rules:
            - { path_prefix: /public }
            - { path_prefix: /, requires: auth }
      - rbac:
          action: DENY
          policies:
            no-debug: { permissions: [{ path_prefix: /debug }] }
      - rbac:
          action: ALLOW
          policies:
            public:
              permissions: [{ path_prefix: /public }]
            admins:
              permissions: [{ path_prefix: /admin }]
              principals: [{ jwt: { provider: auth, claim: roles, value: admin } }]
            users:
              permissions: [{ path_prefix: /api, methods: [GET] }]
              principals: [{ source_ip: [127.0.0.0/8] }]
              condition: 'request.headers["x-tenant"] == "acme"'
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: echo }]
clusters:
  - { name: echo, endpoints: [{{echo}}] }
`

type signer struct {
	kid string
	key *ecdsa.PrivateKey
}

func newSigner(t *testing.T, kid string) *signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, key: k}
}

func (s *signer) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	base := map[string]any{"iss": "https://issuer.test/", "aud": "shop", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		base[k] = v
	}
	payload, _ := json.Marshal(base)
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, s.kid)
	out, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func jwksDoc(t *testing.T, ss ...*signer) string {
	t.Helper()
	set := jwk.NewSet()
	for _, s := range ss {
		k, err := jwk.Import(&s.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		_ = k.Set(jwk.KeyIDKey, s.kid)
		_ = set.AddKey(k)
	}
	b, _ := json.Marshal(set)
	return string(b)
}

func TestAuthnJWTAndRBAC(t *testing.T) {
	s1 := newSigner(t, "k1")
	var mu sync.Mutex
	doc := jwksDoc(t, s1)
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write([]byte(doc))
	}))
	t.Cleanup(jwksSrv.Close)
	echo := filterEcho(t)
	vars := map[string]string{"echo": echo.Addr, "jwks": jwksSrv.URL + "/jwks.json", "api": testutil.Addr(t)}
	startProxy(t, authnConfig, vars)
	base := "http://" + vars["api"]

	admin := s1.token(t, map[string]any{"roles": []string{"dev", "admin"}})
	user := s1.token(t, nil)
	tests := []struct {
		name    string
		method  string
		path    string
		hdr     []string
		want    int
		wantHdr string // upstream x-user
	}{
		{name: "public, no token", path: "/public/x", want: 200},
		{name: "no token", path: "/api/x", want: 401},
		{name: "garbage token", path: "/api/x", hdr: []string{"Authorization", "Bearer x.y.z"}, want: 401},
		{name: "wrong audience", path: "/api/x", hdr: []string{"Authorization", "Bearer " + s1.token(t, map[string]any{"aud": "billing"}), "x-tenant", "acme"}, want: 401},
		{name: "alg none", path: "/api/x", hdr: []string{"Authorization", "Bearer eyJhbGciOiJub25lIiwia2lkIjoiazEifQ.eyJzdWIiOiJyb290In0."}, want: 401},
		{name: "user, tenant acme", path: "/api/x", hdr: []string{"Authorization", "Bearer " + user, "x-tenant", "acme"}, want: 200, wantHdr: "alice"},
		{name: "user, forged x-user replaced", path: "/api/x", hdr: []string{"Authorization", "Bearer " + user, "x-tenant", "acme", "x-user", "root"}, want: 200, wantHdr: "alice"},
		{name: "user, other tenant", path: "/api/x", hdr: []string{"Authorization", "Bearer " + user, "x-tenant", "other"}, want: 403},
		{name: "user, POST", method: "POST", path: "/api/x", hdr: []string{"Authorization", "Bearer " + user, "x-tenant", "acme"}, want: 403},
		{name: "user on admin", path: "/admin", hdr: []string{"Authorization", "Bearer " + user}, want: 403},
		{name: "admin on admin", path: "/admin", hdr: []string{"Authorization", "Bearer " + admin}, want: 200, wantHdr: "alice"},
		{name: "admin on debug: deny wins", path: "/debug/vars", hdr: []string{"Authorization", "Bearer " + admin}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			resp, body := filterDo(t, method, base+tt.path, tt.hdr...)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tt.want, body)
			}
			switch tt.want {
			case 401:
				if wa := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, `Bearer realm="http://`) {
					t.Fatalf("WWW-Authenticate %q", wa)
				}
				if body != "Jwt is missing" && body != "Jwt verification fails" {
					t.Fatalf("401 body %q", body)
				}
			case 403:
				if body != "RBAC: access denied" {
					t.Fatalf("403 body %q", body)
				}
			case 200:
				if tt.wantHdr == "" {
					return
				}
				var got struct {
					Headers http.Header `json:"headers"`
				}
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatal(err)
				}
				if v := got.Headers.Values("X-User"); len(v) != 1 || v[0] != tt.wantHdr {
					t.Fatalf("upstream x-user %v, want [%s]", v, tt.wantHdr)
				}
				if got.Headers.Get("Authorization") != "" {
					t.Fatal("token forwarded upstream")
				}
			}
		})
	}

	t.Run("key rotation", func(t *testing.T) {
		s2 := newSigner(t, "k2")
		mu.Lock()
		doc = jwksDoc(t, s1, s2)
		mu.Unlock()
		tok := s2.token(t, map[string]any{"roles": "admin"})
		// The unknown kid triggers a refetch (at most one per 10s; the
		// proxy fetched once at start, possibly just now: poll).
		testutil.Eventually(t, 15*time.Second, 10*time.Millisecond, "rotated key accepted", testutil.Bool(func() bool {
			resp, _ := filterDo(t, "GET", base+"/admin", "Authorization", "Bearer "+tok)
			return resp.StatusCode == 200
		}))
	})
}

const connRBACConfig = `
admin: { address: {{admin}} }
listeners:
  - name: tcp-denied
    address: {{denied}}
    protocol: tcp
    cluster: echo
    connection_rbac:
      - action: DENY
        policies: { loopback: { principals: [{ source_ip: [127.0.0.0/8] }] } }
  - name: tcp-allowed
    address: {{allowed}}
    protocol: tcp
    cluster: echo
    connection_rbac:
      - action: ALLOW
        policies: { loopback: { principals: [{ source_ip: [127.0.0.1] }] } }
      - action: ALLOW
        shadow: true
        policies: { mesh-only: { principals: [{ peer_prefix: "spiffe://mesh.local/" }] } }
  - name: http-mesh-only
    address: {{http}}
    connection_rbac:
      - action: ALLOW
        policies: { mesh: { principals: [{ peer_prefix: "spiffe://mesh.local/" }] } }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: web }]
clusters:
  - { name: echo, endpoints: [{{echo}}] }
  - { name: web, endpoints: [{{web}}] }
`

// TestConnectionRBAC: L4 policies on tcp and http listeners close refused
// connections at accept, before any byte reaches the upstream.
func TestConnectionRBAC(t *testing.T) {
	web := startBackend(t, "web", nil)
	vars := map[string]string{"echo": startEcho(t), "web": web.Addr, "denied": testutil.Addr(t), "allowed": testutil.Addr(t), "http": testutil.Addr(t)}
	p := startProxy(t, connRBACConfig, vars)

	roundTrip := func(addr string) (string, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	tests := []struct {
		name string
		addr string
		want string
	}{
		{name: "allowed source (shadow would refuse)", addr: vars["allowed"], want: "pingbye"},
		{name: "denied source", addr: vars["denied"], want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := roundTrip(tt.addr)
			if got != tt.want {
				t.Fatalf("read %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("counters", func(t *testing.T) {
		_, body := testutil.Get(t, http.DefaultClient, p.AdminURL("/metrics"))
		for _, want := range []string{
			`omnirelay_filter_events_total{event="rbac.denied",filter="envoy.filters.network.rbac"} 1`,
			`omnirelay_filter_events_total{event="rbac.shadow_denied",filter="envoy.filters.network.rbac.1"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
	t.Run("http listener without mTLS peer", func(t *testing.T) {
		_, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + vars["http"] + "/")
		if err == nil {
			t.Fatal("request served on a connection the policy refuses")
		}
		if web.Hits.Load() != 0 {
			t.Fatalf("backend saw %d requests", web.Hits.Load())
		}
	})
}
