package config_test

import (
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

func TestMTLSValidation(t *testing.T) {
	const vh = `
    virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }]`
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error; none: valid
	}{
		{name: "defaults", yaml: `
listeners:
  - name: in
    address: 127.0.0.1:1
    mtls: {}` + vh},
		{name: "unknown mode", yaml: `
listeners:
  - name: in
    address: 127.0.0.1:1
    mtls: { mode: strict }` + vh, want: []string{"listeners[0].mtls.mode", `unknown mode "strict"`}},
		{name: "tls passthrough listener", yaml: `
listeners:
  - name: in
    address: 127.0.0.1:1
    protocol: tls
    cluster: app
    mtls: {}`, want: []string{"listeners[0].mtls", "not allowed on a tls listener"}},
		{name: "allowed id outside the trust domain", yaml: `
listeners:
  - name: in
    address: 127.0.0.1:1
    mtls: { trust_domain: a.example, allowed_ids: [spiffe://b.example/x, "not an id", spiffe://a.example/y, spiffe://a.example/y] }` + vh,
			want: []string{"allowed_ids[0]", "not in trust domain", "allowed_ids[1]", "invalid SPIFFE ID", "allowed_ids[3]", "duplicate"}},
		{name: "bad trust domain", yaml: `
listeners:
  - name: in
    address: 127.0.0.1:1
    mtls: { trust_domain: "Bad Domain" }` + vh, want: []string{"trust_domain", "invalid trust domain"}},
		{name: "cluster identity required and valid", yaml: `
clusters:
  - { name: x, endpoints: [127.0.0.1:2], mtls: {} }
  - { name: y, endpoints: [127.0.0.1:2], mtls: { identity: "https://not-spiffe" } }
  - { name: z, endpoints: [127.0.0.1:2], mtls: { identity: "spiffe://td/a" }, tls: { insecure_skip_verify: true } }`,
			want: []string{"clusters[1].mtls.identity", "identity is required", "clusters[2].mtls.identity", "invalid SPIFFE ID", "clusters[3].mtls", "use tls or mtls, not both"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := tt.yaml + "\nclusters:\n  - { name: app, endpoints: [127.0.0.1:2] }\n"
			if strings.Contains(tt.yaml, "\nclusters:") {
				y = strings.Replace(tt.yaml, "clusters:", "clusters:\n  - { name: app, endpoints: [127.0.0.1:2] }", 1)
			}
			_, err := config.Parse("t.yaml", []byte(y))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}
