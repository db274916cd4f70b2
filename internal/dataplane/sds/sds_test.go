package sds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// source is a Source fed by the test with SVIDs from a test CA.
type source struct {
	mu   sync.Mutex
	cur  *identity.SVID
	subs map[int]func(*identity.SVID)
	n    int
}

func (s *source) Subscribe(f func(*identity.SVID)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[int]func(*identity.SVID){}
	}
	id := s.n
	s.n++
	s.subs[id] = f
	if s.cur != nil {
		f(s.cur)
	}
	return func() { s.mu.Lock(); delete(s.subs, id); s.mu.Unlock() }
}

func (s *source) set(sv *identity.SVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = sv
	for _, f := range s.subs {
		f(sv)
	}
}

func svid(t *testing.T, ca *testca.CA, id string) *identity.SVID {
	c := ca.Issue(t, testca.Leaf{ID: id})
	return &identity.SVID{ID: spiffeid.RequireFromString(id), Certificate: c, Chain: []*x509.Certificate{c.Leaf}, Roots: []*x509.Certificate{ca.Cert}}
}

func start(t *testing.T, src Source) (addr string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "sds.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(src, nil).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

func dial(t *testing.T, sock string) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(cc)
}

// parse checks a response holds both secrets in the shapes the data
// plane's own SDS parser (the one xDS secrets go through) accepts, and
// returns the certificate and roots.
func parse(t *testing.T, res []*tlsv3.Secret) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	got, err := secrets.ParseSnapshot(res)
	if err != nil {
		t.Fatalf("secrets do not parse: %v", err)
	}
	d, r := got[SecretDefault], got[SecretRootCA]
	if d == nil || d.Cert == nil || r == nil || r.Validation == nil {
		t.Fatalf("want secrets %q (certificate) and %q (validation), got %v", SecretDefault, SecretRootCA, got)
	}
	return d.Cert, r.Validation.Pool
}

func TestStreamSecretsAndRotation(t *testing.T) {
	ca := testca.New(t, "example.org")
	src := &source{}
	sock := start(t, src)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	// A client connecting before the agent has an SVID waits for it (it is
	// not answered with an empty response).
	first := svid(t, ca, "spiffe://example.org/ns/shop/sa/web")
	time.AfterFunc(300*time.Millisecond, func() { src.set(first) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := dial(t, sock).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "shop"}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{SecretDefault, SecretRootCA}}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
	resp := recvSecrets(t, st)
	cert, pool := parse(t, resp.secrets)
	if cert.Leaf.SerialNumber.Cmp(first.Certificate.Leaf.SerialNumber) != 0 {
		t.Fatalf("served serial %v, want %v", cert.Leaf.SerialNumber, first.Certificate.Leaf.SerialNumber)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the served chain does not verify against the served ROOTCA: %v", err)
	}
	// ACK, then rotate: the new SVID is pushed without a new request.
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: req.ResourceNames,
		VersionInfo: resp.version, ResponseNonce: resp.nonce}); err != nil {
		t.Fatal(err)
	}
	second := svid(t, ca, "spiffe://example.org/ns/shop/sa/web")
	src.set(second)
	resp2 := recvSecrets(t, st)
	cert2, _ := parse(t, resp2.secrets)
	if cert2.Leaf.SerialNumber.Cmp(second.Certificate.Leaf.SerialNumber) != 0 || resp2.version == resp.version {
		t.Fatalf("after rotation: serial %v version %q, want serial %v and a new version (was %q)",
			cert2.Leaf.SerialNumber, resp2.version, second.Certificate.Leaf.SerialNumber, resp.version)
	}
}

func TestDeltaSecrets(t *testing.T) {
	ca := testca.New(t, "example.org")
	src := &source{}
	src.set(svid(t, ca, "spiffe://example.org/ns/shop/sa/api"))
	sock := start(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := dial(t, sock).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "envoy-2"}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{SecretDefault, SecretRootCA}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var secs []*tlsv3.Secret
	for _, r := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := r.GetResource().UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		secs = append(secs, s)
	}
	cert, _ := parse(t, secs)
	if got := cert.Leaf.URIs[0].String(); got != "spiffe://example.org/ns/shop/sa/api" {
		t.Fatalf("served SVID %s", got)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	notSock := filepath.Join(dir, "file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://" + notSock); err == nil {
		t.Fatal("Listen replaced a file that is not a socket")
	}
	// A stale socket left by an earlier run is replaced.
	sock := filepath.Join(dir, "s.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if _, err := Secrets(nil); err == nil {
		t.Fatal("Secrets(nil): no error")
	}
}

type secretsResp struct {
	version, nonce string
	secrets        []*tlsv3.Secret
}

func recvSecrets(t *testing.T, st secretv3.SecretDiscoveryService_StreamSecretsClient) secretsResp {
	t.Helper()
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	out := secretsResp{version: resp.GetVersionInfo(), nonce: resp.GetNonce()}
	for _, r := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		out.secrets = append(out.secrets, s)
	}
	return out
}
