package translate

import (
	"context"
	"net/netip"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/rbac"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/netrbac"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

const authnDoc = `
listeners:
  - name: api
    address: 127.0.0.1:8080
    filters:
      - jwt:
          providers:
            - name: local
              issuer: https://issuer.local/
              audiences: [api]
              jwks: '{"keys":[{"kty":"EC","crv":"P-256","kid":"local-1","alg":"ES256","x":"-oWo_hRm2Z1VFwGvLb_YCdvxPUM02lkV-GtvU_pl5pE","y":"Rb49AYgoC-GaRi7E_2muq-oQPIEJZ5T48NgCIkyuMuo"}]}'
              from: { header: x-token, query: tok, cookie: session }
              forward_claims: { sub: x-user }
            - name: remote
              jwks_uri: https://auth.example.com/jwks.json
              cache_duration: 1m
          rules:
            - { path: /both, all: [local, remote] }
            - { path_prefix: /either, any: [local, remote] }
            - { path_prefix: /open, allow_missing: true }
            - { path_prefix: /, requires: local }
      - rbac:
          action: DENY
          policies:
            no-debug: { permissions: [{ path_prefix: /debug, not: { methods: [OPTIONS] } }] }
      - rbac:
          action: ALLOW
          policies:
            admins:
              permissions: [{ path_prefix: /admin, methods: [GET, POST], header: { name: x-env, exact: prod } }]
              principals: [{ jwt: { provider: local, claim: realm.roles, value: admin } }]
            mesh:
              principals: [{ peer_prefix: spiffe://mesh.local/ns/ops/, source_ip: [10.0.0.0/8, 192.168.0.7] }]
              condition: 'request.method == "GET"'
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: shop }]
clusters:
  - { name: shop, endpoints: [127.0.0.1:9000] }
`

// TestAuthnTranslation checks the filter names and that the data plane's
// own factories accept what translation produced, then runs the translated
// RBAC against requests to pin the semantics of the user config.
func TestAuthnTranslation(t *testing.T) {
	snap := translateYAML(t, authnDoc)
	m := hcmOf(t, snap.Listeners[0], 0)
	if got, want := filterNames(m), "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,envoy.filters.http.rbac.allow,envoy.filters.http.router"; got != want {
		t.Fatalf("filters %s, want %s", got, want)
	}
	// JWT: the proto is checked field by field (building it would start a
	// JWKS fetch to auth.example.com); jwtauthn's tests cover the filter.
	var ja jwtv3.JwtAuthentication
	if err := m.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&ja); err != nil {
		t.Fatal(err)
	}
	local, remote := ja.GetProviders()["local"], ja.GetProviders()["remote"]
	if local.GetPayloadInMetadata() != "local" || local.GetLocalJwks().GetInlineString() == "" ||
		len(local.GetFromHeaders()) != 1 || local.GetFromParams()[0] != "tok" || local.GetFromCookies()[0] != "session" ||
		local.GetClaimToHeaders()[0].GetHeaderName() != "x-user" || local.GetAudiences()[0] != "api" {
		t.Errorf("local provider: %v", local)
	}
	if rj := remote.GetRemoteJwks(); rj.GetHttpUri().GetUri() != "https://auth.example.com/jwks.json" ||
		rj.GetHttpUri().GetCluster() != "jwks_auth.example.com" || rj.GetCacheDuration().AsDuration() != time.Minute || rj.GetAsyncFetch() == nil {
		t.Errorf("remote provider: %v", rj)
	}
	if len(ja.GetRules()) != 4 || ja.GetRules()[0].GetRequires().GetRequiresAll() == nil || ja.GetRules()[2].GetRequires().GetAllowMissing() == nil {
		t.Errorf("rules: %v", ja.GetRules())
	}
	if err := ja.ValidateAll(); err != nil {
		t.Errorf("jwt_authn does not pass Envoy's validation: %v", err)
	}
	var built []filter.Filter
	for i, hf := range m.GetHttpFilters()[1:3] {
		f, err := rbac.Factory{}.Build(hf.GetTypedConfig(), &filter.Env{Index: i, Name: hf.GetName()})
		if err != nil {
			t.Fatalf("%s: %v", hf.GetName(), err)
		}
		built = append(built, f)
	}
	chain := filter.NewChain(okTerminal{}, built...)
	tests := []struct {
		name    string
		method  string
		path    string
		headers []string
		src     string
		peer    string
		claims  map[string]any
		want    int
	}{
		{name: "debug denied", method: "GET", path: "/debug/x", peer: "spiffe://mesh.local/ns/ops/sa/a", src: "10.1.1.1:1", want: 403},
		{name: "debug OPTIONS not denied by DENY (but no ALLOW policy for it)", method: "OPTIONS", path: "/debug/x", want: 403},
		{name: "mesh GET", method: "GET", path: "/x", peer: "spiffe://mesh.local/ns/ops/sa/a", src: "192.168.0.7:1", want: 200},
		{name: "mesh POST fails condition", method: "POST", path: "/x", peer: "spiffe://mesh.local/ns/ops/sa/a", src: "10.1.1.1:1", want: 403},
		{name: "mesh wrong namespace", method: "GET", path: "/x", peer: "spiffe://mesh.local/ns/web/sa/a", src: "10.1.1.1:1", want: 403},
		{name: "mesh wrong source", method: "GET", path: "/x", peer: "spiffe://mesh.local/ns/ops/sa/a", src: "192.168.0.8:1", want: 403},
		{name: "admin claim in list", method: "POST", path: "/admin", headers: []string{"x-env", "prod"}, claims: map[string]any{"realm": map[string]any{"roles": []any{"dev", "admin"}}}, want: 200},
		{name: "admin claim string", method: "GET", path: "/admin", headers: []string{"x-env", "prod"}, claims: map[string]any{"realm": map[string]any{"roles": "admin"}}, want: 200},
		{name: "admin wrong env", method: "GET", path: "/admin", headers: []string{"x-env", "dev"}, claims: map[string]any{"realm": map[string]any{"roles": "admin"}}, want: 403},
		{name: "admin DELETE", method: "DELETE", path: "/admin", headers: []string{"x-env", "prod"}, claims: map[string]any{"realm": map[string]any{"roles": "admin"}}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}}
			s.Req.SetMethod(tt.method)
			s.Req.SetPath(tt.path)
			for i := 0; i+1 < len(tt.headers); i += 2 {
				s.Req.Header.Add(tt.headers[i], tt.headers[i+1])
			}
			if tt.src != "" {
				s.Downstream.RemoteAddr = netip.MustParseAddrPort(tt.src)
			}
			s.Downstream.PeerIdentity = tt.peer
			if tt.claims != nil {
				s.Attrs.Claims = append(s.Attrs.Claims, jwtauthn.Payload{Provider: "local", Key: "local", Claims: tt.claims})
			}
			chain.Run(s)
			if s.Resp.Status != tt.want {
				t.Fatalf("status %d, want %d", s.Resp.Status, tt.want)
			}
		})
	}
	// gRPC proxyless clients lack jwt_authn: the listener is withheld with
	// a reason, not an error.
	c, err := config.Parse("inline.yaml", []byte(authnDoc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ForGRPC(c, Options{}); err != nil {
		t.Fatalf("ForGRPC: %v", err)
	}
	if _, err := TranslateWith(c, Options{ADS: true}); err != nil {
		t.Fatalf("TranslateWith(ADS): %v", err)
	}
}

type okTerminal struct{}

func (okTerminal) Serve(s *filter.Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	s.Resp = r
	return nil
}

func TestConnectionRBACTranslation(t *testing.T) {
	snap := translateYAML(t, `
listeners:
  - name: db
    address: 127.0.0.1:15432
    protocol: tls
    sni_routes: [{ sni: [db.example.com], cluster: shop }]
    cluster: shop
    connection_rbac:
      - { action: DENY, policies: { outside: { principals: [{ not: { source_ip: [10.0.0.0/8] } }] } } }
      - { action: ALLOW, shadow: true, policies: { mesh: { principals: [{ peer_prefix: "spiffe://mesh.local/" }], condition: 'connection.mtls' } } }
clusters:
  - { name: shop, endpoints: [127.0.0.1:9000] }
`)
	chains := snap.Listeners[0].GetFilterChains()
	if len(chains) != 2 {
		t.Fatalf("%d chains", len(chains))
	}
	for _, fc := range chains {
		fs := fc.GetFilters()
		if len(fs) != 3 || fs[0].GetName() != NameNetworkRBAC || fs[1].GetName() != NameNetworkRBAC+".1" || fs[2].GetName() != NameTCPProxy {
			t.Fatalf("chain %s filters %v", fc.GetName(), fs)
		}
		for _, f := range fs[:2] {
			p, err := netrbac.Build(f.GetName(), f.GetTypedConfig(), nil, nil)
			if err != nil {
				t.Fatalf("data plane refuses %s: %v", f.GetName(), err)
			}
			src := netip.MustParseAddrPort("192.168.1.1:1")
			if f.GetName() == NameNetworkRBAC && p.Allow(netrbac.Conn{Source: src}) {
				t.Fatal("DENY outside 10/8 let 192.168.1.1 in")
			}
		}
	}
}
