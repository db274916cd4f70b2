package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cpidentity "github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// noAgentLeaks fails the test if goroutines started during it (the
// agents, the identity servers) outlive it. It must be called first, so
// that its check runs after every other cleanup.
func noAgentLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

const webID = "spiffe://omnirelay.test/ns/shop/sa/web"

var testTD = spiffeid.RequireTrustDomainFromString("omnirelay.test")

// identityCA is MeshKit's real identity service on 127.0.0.1 over a bbolt store.
type identityCA struct {
	svc  *cpidentity.Service
	ca   *cpidentity.CA
	addr string
	srv  *grpc.Server
	done chan struct{}
}

func startIdentityCA(t *testing.T, ttl time.Duration) *identityCA {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := cpidentity.LoadOrCreateCA(context.Background(), st, testTD, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cpidentity.NewService(cpidentity.Options{CA: ca, Store: st, SVIDTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	m := &identityCA{svc: svc, ca: ca}
	m.serve(t, "127.0.0.1:0")
	t.Cleanup(m.stop)
	return m
}

func (m *identityCA) serve(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m.addr = l.Addr().String()
	m.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(m.svc.ServerTLSConfig())))
	m.svc.RegisterIdentity(m.srv)
	m.done = make(chan struct{})
	go func(srv *grpc.Server, done chan struct{}) { defer close(done); _ = srv.Serve(l) }(m.srv, m.done)
}

func (m *identityCA) stop() {
	m.srv.Stop()
	<-m.done
}

func (m *identityCA) token(t *testing.T, node string) string {
	t.Helper()
	tok, _, err := m.svc.CreateJoinToken(context.Background(), node, webID, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (m *identityCA) agent(t *testing.T, cfg identity.Config) *identity.Agent {
	t.Helper()
	cfg.Address = m.addr
	if cfg.CAFile == "" {
		cfg.Bundle = m.ca.Roots()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
		cfg.MaxBackoff = 100 * time.Millisecond
	}
	a, err := identity.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// runAgent starts a.Run and returns its result channel; the agent stops when
// the test ends.
func runAgent(t *testing.T, a *identity.Agent) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() { defer close(done); errc <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return errc
}

func waitAgentReady(t *testing.T, a *identity.Agent, errc <-chan error) {
	t.Helper()
	select {
	case <-a.Ready():
	case err := <-errc:
		t.Fatalf("agent stopped before its first SVID: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no SVID after 10s")
	}
}

// A TLS server serving the agent's certificate through GetCertificate
// keeps accepting handshakes while 2-second SVIDs rotate under it.
func TestAgentRotatesUnderLiveTLS(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, 2*time.Second)
	a := m.agent(t, identity.Config{NodeID: "web-1", JoinToken: m.token(t, "web-1")})
	rotations := make(chan *identity.SVID, 64)
	unsubscribe := a.Subscribe(func(s *identity.SVID) { rotations <- s })
	defer unsubscribe()
	errc := runAgent(t, a)
	waitAgentReady(t, a, errc)
	last := <-rotations

	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: a.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.Close()
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Write([]byte("k"))
			})
		}
	})

	client := tlsconfig.TLSClientConfig(m.ca.Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromString(webID)))
	var handshakes, failures int
	serials := map[string]bool{}
	seen := 1
	deadline := time.After(20 * time.Second)
	for seen < 4 {
		select {
		case s := <-rotations:
			// Renewed at half-life, less at most a tenth of jitter.
			prev := last.Certificate.Leaf
			if earliest := prev.NotBefore.Add(prev.NotAfter.Sub(prev.NotBefore) * 4 / 10); time.Now().Before(earliest) {
				t.Errorf("renewed %v before 40%% of the previous SVID's life", earliest.Sub(time.Now()))
			}
			if !s.Certificate.Leaf.NotAfter.After(prev.NotAfter) {
				t.Error("a rotation did not extend the certificate's life")
			}
			last = s
			seen++
			continue
		case <-deadline:
			t.Fatalf("only %d SVIDs in 20s with 2s lifetimes", seen)
		default:
		}
		c, err := tls.Dial("tcp", l.Addr().String(), client)
		handshakes++
		if err != nil {
			failures++
			t.Errorf("handshake %d failed: %v", handshakes, err)
			continue
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			failures++
			t.Errorf("read after handshake %d: %v", handshakes, err)
		}
		serials[c.ConnectionState().PeerCertificates[0].SerialNumber.String()] = true
		c.Close()
	}
	if len(serials) < 3 {
		t.Errorf("clients saw %d certificates over 4 SVIDs, want the rotations live", len(serials))
	}
	t.Logf("%d handshakes, %d failed, %d certificates seen", handshakes, failures, len(serials))
}

// When MeshKit is away, the agent keeps its SVID and retries; it renews
// once MeshKit is back on the same address.
func TestAgentKeepsCertificateWhileMeshKitIsAway(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, 3*time.Second)
	a := m.agent(t, identity.Config{JoinToken: m.token(t, "web-1")})
	renewed := make(chan *identity.SVID, 64)
	errc := runAgent(t, a)
	waitAgentReady(t, a, errc)
	held, _, _, err := a.Current()
	if err != nil {
		t.Fatal(err)
	}
	addr := m.addr
	m.stop()
	defer a.Subscribe(func(s *identity.SVID) { renewed <- s })()
	<-renewed // the current one, at once
	// Past the renewal time, MeshKit still away: the old SVID stays.
	time.Sleep(time.Until(held.Leaf.NotBefore.Add(held.Leaf.NotAfter.Sub(held.Leaf.NotBefore) * 6 / 10)))
	if now, _, _, _ := a.Current(); now != held {
		t.Fatal("the SVID changed while MeshKit was away")
	}
	m.serve(t, addr)
	select {
	case s := <-renewed:
		if s.Certificate == held {
			t.Fatal("renewal republished the old SVID")
		}
	case err := <-errc:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal after MeshKit came back")
	}
}

// With several replicas, a request that fails at one goes to the next:
// here the first address has nothing listening.
func TestAgentMovesToTheNextReplica(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, time.Hour)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	a, err := identity.NewAgent(identity.Config{Address: dead + ", " + m.addr, JoinToken: m.token(t, "web-1"),
		Bundle: m.ca.Roots(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitAgentReady(t, a, runAgent(t, a))
}

func TestAgentRefusals(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, 2*time.Second)
	t.Run("bad token", func(t *testing.T) {
		a := m.agent(t, identity.Config{JoinToken: "nope"})
		err := <-runAgent(t, a)
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Run: %v, want Unauthenticated", err)
		}
		if _, _, _, err := a.Current(); !errors.Is(err, identity.ErrNoSVID) {
			t.Errorf("Current: %v, want ErrNoSVID", err)
		}
	})
	t.Run("revoked node stops renewing", func(t *testing.T) {
		a := m.agent(t, identity.Config{JoinToken: m.token(t, "web-2")})
		errc := runAgent(t, a)
		waitAgentReady(t, a, errc)
		if _, err := m.svc.RevokeNode(context.Background(), "web-2"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("Run: %v, want PermissionDenied", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("agent still running 10s after revocation")
		}
		if _, _, id, err := a.Current(); err != nil || id.String() != webID {
			t.Errorf("Current after revocation: %v %v, want the last SVID kept", id, err)
		}
	})
}

func TestAgentKeyTypes(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, time.Hour)
	for _, kt := range []identity.KeyType{identity.KeyECDSAP256, identity.KeyECDSAP384, identity.KeyEd25519, identity.KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			a := m.agent(t, identity.Config{JoinToken: m.token(t, "n-"+string(kt)), KeyType: kt})
			waitAgentReady(t, a, runAgent(t, a))
			svid, err := a.GetX509SVID()
			if err != nil || svid.ID.String() != webID {
				t.Fatalf("GetX509SVID: %v %v", svid, err)
			}
		})
	}
}

func TestNewAgentConfig(t *testing.T) {
	noAgentLeaks(t)
	m := startIdentityCA(t, time.Hour)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, m.ca.RootsPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  identity.Config
		want string // "" means valid
	}{
		{name: "CA file", cfg: identity.Config{Address: "x:1", CAFile: caFile}},
		{name: "no address", cfg: identity.Config{CAFile: caFile}, want: "address"},
		{name: "no bundle", cfg: identity.Config{Address: "x:1"}, want: "CA bundle"},
		{name: "missing CA file", cfg: identity.Config{Address: "x:1", CAFile: filepath.Join(dir, "nope")}, want: "no such file"},
		{name: "garbage CA file", cfg: identity.Config{Address: "x:1", CAFile: garbage}, want: "garbage.pem"},
		{name: "bad key type", cfg: identity.Config{Address: "x:1", CAFile: caFile, KeyType: "dsa"}, want: "key type"},
		{name: "bad trust domain", cfg: identity.Config{Address: "x:1", CAFile: caFile, TrustDomain: "Not Valid"}, want: "trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := identity.NewAgent(tt.cfg)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("NewAgent: %v, want %q", err, tt.want)
			}
		})
	}
	// The token and --identity-ca alone are enough: a real first SVID.
	a := m.agent(t, identity.Config{CAFile: caFile, JoinToken: m.token(t, "file-node")})
	waitAgentReady(t, a, runAgent(t, a))
	var n atomic.Int32
	a.Subscribe(func(*identity.SVID) { n.Add(1) })()
	if n.Load() != 1 {
		t.Errorf("Subscribe after the first SVID called %d times, want once at once", n.Load())
	}
}

// The proxy's agent, given only what `omnictl token create --ca-out`
// hands out (a token and the bundle file), gets its SVID from a MeshKit
// started the way cmd/meshkit starts it.
func TestAgentAgainstMeshKit(t *testing.T) {
	noAgentLeaks(t)
	p := meshtest.Start(t, serve.Options{IdentityAddress: "127.0.0.1:0", TrustDomain: "shop.example"})
	const id = "spiffe://shop.example/ns/shop/sa/cart"
	admin := meshkitv1.NewIdentityAdminClient(apiConn(t, p.APIAddr().String()))
	tok, err := admin.CreateJoinToken(context.Background(), &meshkitv1.CreateJoinTokenRequest{NodeId: "cart-1", SpiffeId: id})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, tok.GetTrustBundlePem(), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := identity.NewAgent(identity.Config{Address: p.IdentityAddr().String(), NodeID: "cart-1", JoinToken: tok.GetToken(), CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	waitAgentReady(t, a, runAgent(t, a))
	if _, _, got, err := a.Current(); err != nil || got.String() != id {
		t.Fatalf("agent holds %v (%v), want %s", got, err, id)
	}
}
