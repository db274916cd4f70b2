package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

var testTD = spiffeid.RequireTrustDomainFromString("omnirelay.test")

// clock is a settable test clock starting at the real time.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// harness is one MeshKit identity endpoint on 127.0.0.1: the Identity
// service behind TLS and IdentityAdmin on a plaintext port, as serve runs
// them.
type harness struct {
	svc      *Service
	ca       *CA
	idAddr   string
	admin    meshkitv1.IdentityAdminClient
	clock    *clock
	store    store.Store
	serverID spiffeid.ID
}

func openBolt(t testing.TB) store.Store {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func startHarness(t testing.TB, st store.Store, ttl time.Duration) *harness {
	t.Helper()
	clk := &clock{}
	ca, err := LoadOrCreateCA(context.Background(), st, testTD, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(Options{CA: ca, Store: st, SVIDTTL: ttl, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	idAddr := serveGRPC(t, grpc.NewServer(grpc.Creds(credentials.NewTLS(svc.ServerTLSConfig()))), svc.RegisterIdentity)
	adminAddr := serveGRPC(t, grpc.NewServer(), svc.RegisterAdmin)
	conn, err := grpc.NewClient(adminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &harness{svc: svc, ca: ca, idAddr: idAddr, admin: meshkitv1.NewIdentityAdminClient(conn),
		clock: clk, store: st, serverID: svc.ServerID()}
}

func serveGRPC(t testing.TB, g *grpc.Server, register func(grpc.ServiceRegistrar)) string {
	t.Helper()
	register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return l.Addr().String()
}

// token asks the admin API for a join token.
func (h *harness) token(t testing.TB, node, id string, ttl time.Duration) string {
	t.Helper()
	req := &meshkitv1.CreateJoinTokenRequest{NodeId: node, SpiffeId: id}
	if ttl != 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := h.admin.CreateJoinToken(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateJoinToken(%s): %v", node, err)
	}
	return resp.GetToken()
}

// client dials the identity port, trusting the CA and expecting MeshKit's
// SPIFFE ID; with svid it presents that certificate (a renewal).
func (h *harness) client(t testing.TB, svid *x509svid.SVID) meshkitv1.IdentityClient {
	t.Helper()
	var cfg *tls.Config
	if svid == nil {
		cfg = tlsconfig.TLSClientConfig(h.ca.Bundle(), tlsconfig.AuthorizeID(h.serverID))
	} else {
		cfg = tlsconfig.MTLSClientConfig(svid, h.ca.Bundle(), tlsconfig.AuthorizeID(h.serverID))
	}
	conn, err := grpc.NewClient(h.idAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshkitv1.NewIdentityClient(conn)
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t testing.TB, key crypto.Signer, ids ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, s := range ids {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// svidFrom verifies a Sign response against the CA's bundle and returns it
// as an SVID holding key.
func (h *harness) svidFrom(t testing.TB, resp *meshkitv1.SignResponse, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, h.ca.Bundle())
	if err != nil {
		t.Fatalf("issued SVID does not verify: %v", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}
