package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// TestSecurityDocExamples loads and translates every example of
// docs/security.md.
func TestSecurityDocExamples(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := exampleRE.FindAllSubmatch(data, -1)
	if len(found) < 2 {
		t.Fatalf("security.md has %d examples", len(found))
	}
	for _, m := range found {
		t.Run(string(m[2]), func(t *testing.T) {
			c, err := config.Parse("security.md", m[1], config.SkipFileChecks())
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if _, err := translate.Translate(c); err != nil {
				t.Fatalf("Translate: %v", err)
			}
		})
	}
}

const authnBase = `
listeners:
  - name: api
    address: 127.0.0.1:8080
    filters:
%s
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: shop }]
clusters:
  - { name: shop, endpoints: [127.0.0.1:9000] }
`

func TestAuthnValidation(t *testing.T) {
	tests := []struct {
		name    string
		filters string
		want    string // "" = valid
	}{
		{name: "valid jwt", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/jwks" }] }`},
		{name: "no jwks", filters: `      - jwt: { providers: [{ name: p }] }`, want: "exactly one of jwks_uri and jwks"},
		{name: "both jwks", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/j", jwks: '{"keys":[{}]}' }] }`, want: "exactly one of jwks_uri and jwks"},
		{name: "jwks not JSON", filters: `      - jwt: { providers: [{ name: p, jwks: "nope" }] }`, want: "not a JSON Web Key Set"},
		{name: "jwks_uri file", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "file:///etc/x" }] }`, want: "not an http(s) URL"},
		{name: "unknown provider in rule", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/j" }], rules: [{ path_prefix: /, requires: q }] }`, want: `unknown provider "q"`},
		{name: "rule with two requirements", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/j" }], rules: [{ path_prefix: /, requires: p, allow_missing: true }] }`, want: "at most one of"},
		{name: "several providers need rules", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/j" }, { name: q, jwks_uri: "https://x/k" }] }`, want: "rules are required"},
		{name: "bad claim header", filters: `      - jwt: { providers: [{ name: p, jwks_uri: "https://x/j", forward_claims: { sub: "x user" } }] }`, want: "invalid header name"},
		{name: "valid rbac", filters: `      - rbac: { action: ALLOW, policies: { a: { permissions: [{ path_prefix: /a }], principals: [{ source_ip: [10.0.0.0/8, 192.168.1.1] }] } } }`},
		{name: "bad action", filters: `      - rbac: { action: MAYBE, policies: {} }`, want: "want ALLOW or DENY"},
		{name: "CEL syntax error names policy", filters: `      - rbac: { action: ALLOW, policies: { tenant: { condition: 'request.headers["x" ==' } } }`, want: `policy "tenant"`},
		{name: "CEL not bool", filters: `      - rbac: { action: ALLOW, policies: { p: { condition: '1 + 2' } } }`, want: "want bool"},
		{name: "CEL unknown variable", filters: `      - rbac: { action: ALLOW, policies: { p: { condition: 'jwt.sub == "a"' } } }`, want: "undeclared reference"},
		{name: "bad CIDR", filters: `      - rbac: { action: ALLOW, policies: { p: { principals: [{ source_ip: [10.0.0.0/33] }] } } }`, want: "CIDR"},
		{name: "not a SPIFFE ID", filters: `      - rbac: { action: ALLOW, policies: { p: { principals: [{ peer: frontend }] } } }`, want: "not a SPIFFE ID"},
		{name: "empty permission", filters: `      - rbac: { action: ALLOW, policies: { p: { permissions: [{}] } } }`, want: "empty permission"},
		{name: "lower-case method", filters: `      - rbac: { action: ALLOW, policies: { p: { permissions: [{ methods: [get] }] } } }`, want: "upper-case"},
		{name: "allow and deny together", filters: "      - rbac: { action: DENY, policies: {} }\n      - rbac: { action: ALLOW, policies: {} }"},
		{name: "two allow filters", filters: "      - rbac: { action: ALLOW, policies: {} }\n      - rbac: { action: ALLOW, policies: {} }", want: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("inline.yaml", []byte(strings.Replace(authnBase, "%s", tt.filters, 1)))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestConnectionRBACValidation(t *testing.T) {
	const doc = `
listeners:
  - name: db
    address: 127.0.0.1:15432
    protocol: tcp
    cluster: db
    connection_rbac:
%s
clusters: [{ name: db, endpoints: [127.0.0.1:5432] }]
`
	tests := []struct {
		name, rbac, want string
	}{
		{name: "valid", rbac: `      - { action: ALLOW, policies: { p: { principals: [{ peer: "spiffe://mesh.local/ns/a/sa/b" }] } } }`},
		{name: "path at L4", rbac: `      - { action: ALLOW, policies: { p: { permissions: [{ path_prefix: /x }] } } }`, want: "see no HTTP request"},
		{name: "jwt at L4", rbac: `      - { action: ALLOW, policies: { p: { principals: [{ not: { jwt: { provider: a, claim: sub, value: x } } }] } } }`, want: "see no HTTP request"},
		{name: "twice", rbac: "      - { action: DENY, policies: {} }\n      - { action: DENY, policies: {} }", want: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("inline.yaml", []byte(strings.Replace(doc, "%s", tt.rbac, 1)))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
