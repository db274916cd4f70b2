package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

const mtlsConfig = `
listeners:
  - name: strict
    address: 127.0.0.1:15006
    mtls: { allowed_ids: [spiffe://omnirelay.local/ns/a/sa/web, spiffe://omnirelay.local/ns/a/sa/cli] }
    virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }]
  - name: permissive
    address: 127.0.0.1:15007
    protocol: tcp
    cluster: app
    mtls: { mode: PERMISSIVE, trust_domain: mesh.example }
  - name: edge
    address: 127.0.0.1:15443
    protocol: https
    tls: { certificates: [{ cert_file: c.pem, key_file: k.pem }] }
    mtls: { mode: STRICT }
    virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }]
  - name: off
    address: 127.0.0.1:15008
    mtls: { mode: DISABLE }
    virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: app }] }]
clusters:
  - { name: app, endpoints: [127.0.0.1:8080] }
  - { name: cart, protocol: h2, endpoints: [127.0.0.1:9443], mtls: { identity: spiffe://omnirelay.local/ns/shop/sa/cart } }
`

func downstreamCtx(t *testing.T, fc *listenerv3.FilterChain) *tlsv3.DownstreamTlsContext {
	t.Helper()
	d := &tlsv3.DownstreamTlsContext{}
	if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(d); err != nil {
		t.Fatalf("chain %q: %v", fc.GetName(), err)
	}
	return d
}

func sanPatterns(v *tlsv3.CommonTlsContext) []string {
	var out []string
	for _, m := range v.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			out = append(out, "non-URI")
		}
		if p := m.GetMatcher().GetPrefix(); p != "" {
			out = append(out, "prefix:"+p)
		} else {
			out = append(out, "exact:"+m.GetMatcher().GetExact())
		}
	}
	return out
}

func checkMeshSecrets(t *testing.T, c *tlsv3.CommonTlsContext) {
	t.Helper()
	sds := c.GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetName() != SecretDefault ||
		sds[0].GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != SDSClusterName {
		t.Fatalf("certificate SDS = %v", sds)
	}
	if n := c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); n != SecretRootCA {
		t.Fatalf("validation SDS = %q", n)
	}
}

func TestMTLSShapes(t *testing.T) {
	c, err := config.Parse("mtls.yaml", []byte(mtlsConfig), config.SkipFileChecks())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	validateEach(t, snap)
	byName := map[string]*listenerv3.Listener{}
	for _, l := range snap.Listeners {
		byName[l.GetName()] = l
	}
	tests := []struct {
		name     string
		listener string
		check    func(t *testing.T, l *listenerv3.Listener)
	}{
		{name: "STRICT http: one TLS chain, client cert required, allowed ids exact", listener: "strict", check: func(t *testing.T, l *listenerv3.Listener) {
			if len(l.GetFilterChains()) != 1 || len(l.GetListenerFilters()) != 0 {
				t.Fatalf("chains %d, listener filters %d", len(l.GetFilterChains()), len(l.GetListenerFilters()))
			}
			d := downstreamCtx(t, l.GetFilterChains()[0])
			checkMeshSecrets(t, d.GetCommonTlsContext())
			if !d.GetRequireClientCertificate().GetValue() {
				t.Fatal("client certificate not required")
			}
			got := sanPatterns(d.GetCommonTlsContext())
			if len(got) != 2 || got[0] != "exact:spiffe://omnirelay.local/ns/a/sa/web" || got[1] != "exact:spiffe://omnirelay.local/ns/a/sa/cli" {
				t.Fatalf("SAN matchers %v", got)
			}
			if alpn := d.GetCommonTlsContext().GetAlpnProtocols(); len(alpn) != 2 {
				t.Fatalf("ALPN %v", alpn)
			}
		}},
		{name: "PERMISSIVE tcp: tls and raw_buffer chains behind tls_inspector", listener: "permissive", check: func(t *testing.T, l *listenerv3.Listener) {
			fcs := l.GetFilterChains()
			if len(fcs) != 2 || len(l.GetListenerFilters()) != 1 || l.GetListenerFilters()[0].GetName() != NameTLSInspector {
				t.Fatalf("chains %d, listener filters %v", len(fcs), l.GetListenerFilters())
			}
			if fcs[0].GetFilterChainMatch().GetTransportProtocol() != "tls" || fcs[1].GetFilterChainMatch().GetTransportProtocol() != "raw_buffer" {
				t.Fatal("transport_protocol matches wrong")
			}
			if fcs[1].GetTransportSocket() != nil {
				t.Fatal("plaintext chain has a transport socket")
			}
			d := downstreamCtx(t, fcs[0])
			checkMeshSecrets(t, d.GetCommonTlsContext())
			if got := sanPatterns(d.GetCommonTlsContext()); len(got) != 1 || got[0] != "prefix:spiffe://mesh.example/" {
				t.Fatalf("SAN matchers %v", got)
			}
		}},
		{name: "STRICT https: own certificate, mesh validation", listener: "edge", check: func(t *testing.T, l *listenerv3.Listener) {
			for _, fc := range l.GetFilterChains() {
				d := downstreamCtx(t, fc)
				if len(d.GetCommonTlsContext().GetTlsCertificates()) != 1 || len(d.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()) != 0 {
					t.Fatal("https chain lost its certificate")
				}
				if d.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != SecretRootCA ||
					!d.GetRequireClientCertificate().GetValue() {
					t.Fatal("https chain does not verify mesh clients")
				}
			}
		}},
		{name: "DISABLE: plaintext", listener: "off", check: func(t *testing.T, l *listenerv3.Listener) {
			if len(l.GetFilterChains()) != 1 || l.GetFilterChains()[0].GetTransportSocket() != nil {
				t.Fatal("DISABLE listener terminates TLS")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, byName[tt.listener]) })
	}
	t.Run("cluster mtls: SVID, exact identity, h2 ALPN", func(t *testing.T) {
		var cart *clusterv3.Cluster
		for _, cl := range snap.Clusters {
			if cl.GetName() == "cart" {
				cart = cl
			}
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := cart.GetTransportSocket().GetTypedConfig().UnmarshalTo(u); err != nil {
			t.Fatal(err)
		}
		checkMeshSecrets(t, u.GetCommonTlsContext())
		if got := sanPatterns(u.GetCommonTlsContext()); len(got) != 1 || got[0] != "exact:spiffe://omnirelay.local/ns/shop/sa/cart" {
			t.Fatalf("SAN matchers %v", got)
		}
		if alpn := u.GetCommonTlsContext().GetAlpnProtocols(); len(alpn) != 1 || alpn[0] != "h2" {
			t.Fatalf("ALPN %v", alpn)
		}
	})
}
