package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/sds"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// TestSDSForEnvoyWorkload plays an Envoy sidecar's part with a real SDS
// client: the node-local SDS server gets the workload's SVID from MeshKit's
// identity service and serves it as "default" and "ROOTCA"; the client then
// calls an OmniRelay proxy that requires mesh mTLS with exactly that
// identity, and the backend sees it. With 2 s SVIDs the rotation is pushed on
// the open stream and the new certificate is accepted too.
func TestSDSForEnvoyWorkload(t *testing.T) {
	const td = "omnirelay.test"
	envoyID := "spiffe://" + td + "/ns/shop/sa/envoy-web"
	apiID := "spiffe://" + td + "/ns/shop/sa/api"

	ids := startIdentitySvc(t, td, 2*time.Second)
	token := func(node, id string) string { return ids.token(t, node, id) }

	// The receiving side: an OmniRelay proxy requiring mesh mTLS from
	// envoyID only, forwarding the peer's identity to the app.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("x-peer"))
	}))
	defer backend.Close()
	inAddr := testutil.Addr(t)
	cfg := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(cfg, []byte(`
listeners:
  - name: in
    address: `+inAddr+`
    mtls: { mode: STRICT, trust_domain: `+td+`, allowed_ids: ["`+envoyID+`"] }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: app
            request_headers_add: { x-peer: "%DOWNSTREAM_PEER_URI_SAN%" }
clusters:
  - { name: app, endpoints: [`+strings.TrimPrefix(backend.URL, "http://")+`] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	proxytest.StartWith(t, app.Options{ConfigPath: cfg, AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second, Log: testutil.Logger(t).With("side", "proxy"),
		Identity: &app.IdentityOptions{Address: ids.addr, JoinToken: token("in", apiID), CAFile: ids.caFile, NodeID: "in"}})

	// The Envoy workload's node agent: identity agent + SDS on a socket.
	agent, err := identity.NewAgent(identity.Config{Address: ids.addr, JoinToken: token("envoy-web", envoyID), CAFile: ids.caFile,
		NodeID: "envoy-web", MinBackoff: 50 * time.Millisecond, Log: testutil.Logger(t).With("side", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	agentDone, sdsDone := make(chan struct{}), make(chan error, 1)
	go func() { defer close(agentDone); _ = agent.Run(ctx) }()
	sock := filepath.Join(t.TempDir(), "sds.sock")
	l, err := sds.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { sdsDone <- sds.New(agent, testutil.Logger(t).With("side", "sds")).Serve(ctx, l) }()
	defer func() {
		cancel()
		<-agentDone
		if err := <-sdsDone; err != nil {
			t.Errorf("sds Serve: %v", err)
		}
	}()

	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(sctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-web", Cluster: "shop"}
	names := []string{sds.SecretDefault, sds.SecretRootCA}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	recv := func() (*tls.Certificate, *x509.CertPool) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var secs []*tlsv3.Secret
		for _, r := range resp.GetResources() {
			s := &tlsv3.Secret{}
			if err := r.UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			secs = append(secs, s)
		}
		got, err := secrets.ParseSnapshot(secs)
		if err != nil {
			t.Fatal(err)
		}
		if got[sds.SecretDefault] == nil || got[sds.SecretRootCA] == nil {
			t.Fatalf("response lacks default or ROOTCA: %v", got)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: names,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return got[sds.SecretDefault].Cert, got[sds.SecretRootCA].Validation.Pool
	}
	call := func(cert *tls.Certificate, roots *x509.CertPool) string {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{*cert}, RootCAs: roots, ServerName: "in",
			// Mesh peers are verified by SPIFFE ID, not host name: check
			// the chain against ROOTCA and the server's ID by hand.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				leaf, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					return err
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != apiID {
					t.Errorf("server identity %v, want %s", leaf.URIs, apiID)
				}
				return nil
			}}}}
		defer c.CloseIdleConnections()
		var last string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			resp, err := c.Get("https://" + inAddr + "/")
			if err != nil {
				last = err.Error()
				continue // the proxy's own SVID may still be on its way
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			last = resp.Status
		}
		t.Fatalf("mTLS call with the SDS-served SVID failed: %s", last)
		return ""
	}

	cert, roots := recv()
	if id := cert.Leaf.URIs[0].String(); id != envoyID {
		t.Fatalf("SDS served %s, want %s", id, envoyID)
	}
	if peer := call(cert, roots); peer != envoyID {
		t.Fatalf("backend saw peer %q, want %q", peer, envoyID)
	}
	// The agent renews at half-life (~1 s): the push arrives on the same
	// stream, with a new certificate that works as well.
	cert2, roots2 := recv()
	if cert2.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0 {
		t.Fatal("the pushed SVID is the same certificate")
	}
	if peer := call(cert2, roots2); peer != envoyID {
		t.Fatalf("after rotation the backend saw %q, want %q", peer, envoyID)
	}
}
