package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cpidentity "github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// identitySvc is MeshKit's identity service alone (its CA in a bbolt store)
// on a loopback port, for tests of the agents that get SVIDs from it.
type identitySvc struct {
	addr   string // the identity service's address
	caFile string // the CA bundle, PEM, for the agents' first contact
	svc    *cpidentity.Service
}

// startIdentitySvc starts the service for trust domain td, issuing SVIDs
// that live ttl; everything stops at the test's cleanup.
func startIdentitySvc(t *testing.T, td string, ttl time.Duration) *identitySvc {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ca, err := cpidentity.LoadOrCreateCA(context.Background(), st, spiffeid.RequireTrustDomainFromString(td), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cpidentity.NewService(cpidentity.Options{CA: ca, Store: st, SVIDTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(svc.ServerTLSConfig())))
	svc.RegisterIdentity(srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.RootsPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return &identitySvc{addr: ln.Addr().String(), caFile: caFile, svc: svc}
}

// token creates a one-minute join token binding node to the SPIFFE ID id.
func (s *identitySvc) token(t *testing.T, node, id string) string {
	t.Helper()
	tok, _, err := s.svc.CreateJoinToken(context.Background(), node, id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
