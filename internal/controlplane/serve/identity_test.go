package serve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// A MeshKit restarted on the same data directory keeps its CA: the bundle
// is the same and a certificate issued before the restart renews after it.
func TestIdentityCASurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	const id = "spiffe://omnirelay.local/ns/shop/sa/web"
	start := func() *Process {
		p, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", IdentityAddress: "127.0.0.1:0",
			DataDir: dir, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	stop := func(p *Process) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()

	p := start()
	admin := adminClient(t, p)
	tok, err := admin.CreateJoinToken(ctx, &meshkitv1.CreateJoinTokenRequest{NodeId: "web-1", SpiffeId: id})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("omnirelay.local")
	bundle, err := x509bundle.Parse(td, tok.GetTrustBundlePem())
	if err != nil {
		t.Fatal(err)
	}
	svid := sign(t, p, bundle, nil, &meshkitv1.SignRequest{JoinToken: tok.GetToken()}, id)
	stop(p)

	p = start()
	defer stop(p)
	again, err := adminClient(t, p).CreateJoinToken(ctx, &meshkitv1.CreateJoinTokenRequest{NodeId: "web-2", SpiffeId: id})
	if err != nil {
		t.Fatal(err)
	}
	if string(again.GetTrustBundlePem()) != string(tok.GetTrustBundlePem()) {
		t.Fatal("the restarted MeshKit has another root")
	}
	sign(t, p, bundle, svid, &meshkitv1.SignRequest{}, id)
}

func adminClient(t *testing.T, p *Process) meshkitv1.IdentityAdminClient {
	t.Helper()
	conn, err := grpc.NewClient(p.APIAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshkitv1.NewIdentityAdminClient(conn)
}

// sign sends a CSR for id over the identity port, presenting svid when
// given, and returns the issued SVID.
func sign(t *testing.T, p *Process, bundle *x509bundle.Bundle, svid *x509svid.SVID, req *meshkitv1.SignRequest, id string) *x509svid.SVID {
	t.Helper()
	server := spiffeid.RequireFromSegments(bundle.TrustDomain(), "meshkit")
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(server))
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(server))
	}
	conn, err := grpc.NewClient(p.IdentityAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	req.Csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := meshkitv1.NewIdentityClient(conn).Sign(context.Background(), req)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	var certs []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	got, _, err := x509svid.Verify(certs, bundle)
	if err != nil || got.String() != id {
		t.Fatalf("issued SVID: %v %v, want %s", got, err, id)
	}
	return &x509svid.SVID{ID: got, Certificates: certs, PrivateKey: key}
}
