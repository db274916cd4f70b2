package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func shutdown(t *testing.T, p *Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

func counterValue(t *testing.T, p *Proxy, name string) float64 {
	t.Helper()
	mfs, err := p.Runtime.Stats().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestXDSMeshMTLSDoesNotWaitForAgentSecrets: a config with mtls, served over
// ADS, names the secrets default and ROOTCA with the agent's source; the
// proxy applies it without waiting for the control plane to send them, and
// serves mTLS once its store has an identity.
func TestXDSMeshMTLSDoesNotWaitForAgentSecrets(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	p := startXDSProxy(t, XDSOptions{Address: cp.addr})
	addr := testutil.Addr(t)
	cp.set(t, "v1", `
listeners:
  - name: in
    address: `+addr+`
    mtls: { mode: PERMISSIVE, trust_domain: omnirelay.local }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            direct_response: { status: 204 }
`)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "config applied", func() (bool, string) {
		return p.ListenerAddr("in") != nil, "listener not bound"
	})
	resp, err := httpClient.Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("plaintext on PERMISSIVE: %v %v", resp, err)
	}
	resp.Body.Close()

	ca := testca.New(t, "omnirelay.local")
	if err := p.Runtime.Secrets().SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://omnirelay.local/ns/a/sa/in"}),
		[]*x509.Certificate{ca.Cert}, spiffeid.RequireTrustDomainFromString("omnirelay.local")); err != nil {
		t.Fatal(err)
	}
	client := ca.Issue(t, testca.Leaf{ID: "spiffe://omnirelay.local/ns/a/sa/client"})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{*client},
		RootCAs: roots, InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get("https://" + addr + "/")
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("mTLS on PERMISSIVE: %v %v", resp, err)
	}
	resp.Body.Close()
}
