package runtime

import (
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// envoySDS is an Envoy bootstrap whose https listener names its
// certificates by SDS (static secrets): one per SNI chain and a default.
const envoySDS = `
static_resources:
  secrets:
    - name: cert-a
      tls_certificate: { certificate_chain: { inline_string: CERT_A }, private_key: { inline_string: KEY_A } }
    - name: cert-default
      tls_certificate: { certificate_chain: { inline_string: CERT_D }, private_key: { inline_string: KEY_D } }
  listeners:
    - name: edge
      address: { socket_address: { address: 127.0.0.1, port_value: PORT } }
      listener_filters: [{ name: envoy.filters.listener.tls_inspector, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector } }]
      filter_chains:
        - filter_chain_match: { server_names: [a.example] }
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context: { tls_certificate_sds_secret_configs: [{ name: cert-a }] }
          filters: [HCM]
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context: { tls_certificate_sds_secret_configs: [{ name: cert-default }] }
          filters: [HCM]
`

const hcmJSON = `{ "name": "envoy.filters.network.http_connection_manager", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "stat_prefix": "edge", "route_config": { "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": [{ "match": { "prefix": "/" }, "direct_response": { "status": 200 } }] }] }, "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }] } }`

func envoySnapshot(t *testing.T, port string, certA, keyA, certD, keyD []byte) *resources.Snapshot {
	t.Helper()
	q := func(b []byte) string { s, _ := json.Marshal(string(b)); return string(s) }
	y := strings.NewReplacer("CERT_A", q(certA), "KEY_A", q(keyA), "CERT_D", q(certD), "KEY_D", q(keyD),
		"PORT", port, "[HCM]", "["+hcmJSON+"]").Replace(envoySDS)
	snap, _, err := config.LoadEnvoy("sds.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestSDSStaticSecretsPerSNIRotate: certificates named by SDS are served per
// SNI from the snapshot's secrets, and a snapshot with new secret values
// swaps them for the next handshake on the same socket.
func TestSDSStaticSecretsPerSNIRotate(t *testing.T) {
	ca := testca.New(t, "edge.test")
	issue := func(dns string) (c, k []byte, serial string) {
		cert := ca.Issue(t, testca.Leaf{DNS: []string{dns}})
		c, k = testca.PEM(t, cert)
		return c, k, cert.Leaf.SerialNumber.String()
	}
	addr := testutil.Addr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	rt := newRuntime(t)
	ca1, ka1, sa1 := issue("a.example")
	cd1, kd1, sd1 := issue("default.example")
	if err := rt.Apply(envoySnapshot(t, port, ca1, ka1, cd1, kd1), "test"); err != nil {
		t.Fatal(err)
	}
	ln := rt.Listener("edge")
	served := func(sni string) string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("sni %q: %v", sni, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	tests := []struct {
		name, sni, want string
	}{
		{name: "sni chain", sni: "a.example", want: sa1},
		{name: "default chain", sni: "other.example", want: sd1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := served(tt.sni); got != tt.want {
				t.Fatalf("served certificate %s, want %s", got, tt.want)
			}
		})
	}
	ca2, ka2, sa2 := issue("a.example")
	if err := rt.Apply(envoySnapshot(t, port, ca2, ka2, cd1, kd1), "test"); err != nil {
		t.Fatal(err)
	}
	if rt.Listener("edge") != ln {
		t.Fatal("the listener was rebound for a secret change")
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "rotated secret served", func() (bool, string) {
		got := served("a.example")
		return got == sa2, "serving " + got
	})
	if served("other.example") != sd1 {
		t.Fatal("the default certificate changed")
	}
}
