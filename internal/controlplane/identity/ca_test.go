package identity

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

func TestCAPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshkit.db")
	rootOf := func() []byte {
		st, err := store.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		ca, err := LoadOrCreateCA(context.Background(), st, testTD, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return ca.Roots()[0].Raw
	}
	first := rootOf()
	if second := rootOf(); string(first) != string(second) {
		t.Fatal("a restarted MeshKit generated a new root")
	}
	root, _ := x509.ParseCertificate(first)
	if life := root.NotAfter.Sub(root.NotBefore); life < RootLifetime || !root.IsCA {
		t.Errorf("root: CA %v, lifetime %v; want a CA valid a year", root.IsCA, life)
	}
	if len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://omnirelay.test" {
		t.Errorf("root URIs = %v, want the trust domain's ID", root.URIs)
	}
}

// Two replicas on one etcd start at once: both end up with the same root,
// and a node enrolled on one renews on the other.
func TestReplicasShareCAOnEtcd(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	stores := make([]store.Store, 2)
	for i := range stores {
		st, err := store.OpenEtcd(endpoints, "/meshkit")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores[i] = st
	}
	cas := make([]*CA, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { cas[i], errs[i] = LoadOrCreateCA(context.Background(), stores[i], testTD, time.Now()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(cas[0].Roots()[0].Raw) != string(cas[1].Roots()[0].Raw) {
		t.Fatal("replicas hold different roots")
	}

	a, b := startHarness(t, stores[0], 0), startHarness(t, stores[1], 0)
	key := newKey(t)
	resp, err := a.client(t, nil).Sign(context.Background(),
		&meshkitv1.SignRequest{Csr: csrFor(t, key, webID), JoinToken: a.token(t, webNode, webID, 0)})
	if err != nil {
		t.Fatal(err)
	}
	svid := a.svidFrom(t, resp, key)
	if _, err := b.client(t, svid).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID)}); err != nil {
		t.Fatalf("renewal on the other replica: %v", err)
	}
	if _, err := a.admin.RevokeNode(context.Background(), &meshkitv1.RevokeNodeRequest{NodeId: webNode}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client(t, svid).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID)}); code(err) != codes.PermissionDenied {
		t.Fatal("a node revoked on one replica renewed on the other")
	}
}

// writeOperatorCA writes a root and an intermediate signed by it, as an
// operator would provide them, and returns the file paths.
func writeOperatorCA(t *testing.T, dir string) (chainFile, keyFile string, root *x509.Certificate) {
	t.Helper()
	now := time.Now()
	rootKey, interKey := newKey(t), newKey(t)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "op root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "op intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})...)
	pk, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	chainFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(chainFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
	return chainFile, keyFile, root
}

func TestOperatorIntermediate(t *testing.T) {
	dir := t.TempDir()
	chainFile, keyFile, root := writeOperatorCA(t, dir)
	ca, err := LoadCAFiles(testTD, chainFile, keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(ca.Roots()) != 1 || !ca.Roots()[0].Equal(root) {
		t.Fatal("bundle is not the operator's root")
	}
	svc, err := NewService(Options{CA: ca, Store: openBolt(t), SVIDTTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.issue(newKey(t).Public(), svc.ServerID(), "n", time.Now(), 2*time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	certs := []*x509.Certificate{leaf}
	for _, der := range svc.chainDER(leaf)[1:] {
		c, _ := x509.ParseCertificate(der)
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("chain of %d certificates, want leaf and intermediate", len(certs))
	}
	if _, _, err := x509svid.Verify(certs, ca.Bundle()); err != nil {
		t.Fatalf("SVID under the intermediate does not verify: %v", err)
	}

	otherKey := filepath.Join(dir, "other-key.pem")
	pk, _ := x509.MarshalPKCS8PrivateKey(newKey(t))
	if err := os.WriteFile(otherKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
	leafOnly := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(leafOnly, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, want string
		now                   time.Time
	}{
		{name: "key of another certificate", cert: chainFile, key: otherKey, want: "does not match", now: time.Now()},
		{name: "not a CA", cert: leafOnly, key: keyFile, want: "not a CA", now: time.Now()},
		{name: "expired", cert: chainFile, key: keyFile, want: "not now", now: time.Now().Add(25 * time.Hour)},
		{name: "missing file", cert: filepath.Join(dir, "nope.pem"), key: keyFile, want: "no such file", now: time.Now()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCAFiles(testTD, tt.cert, tt.key, tt.now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadCAFiles: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// A renewal ends later than the certificate it replaces even when both
// round to the same second (2 s SVIDs renewed about a second apart).
func TestRenewalEndsLater(t *testing.T) {
	st := openBolt(t)
	ca, err := LoadOrCreateCA(context.Background(), st, spiffeid.RequireTrustDomainFromString("omnirelay.test"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://omnirelay.test/ns/shop/sa/web")
	now := time.Now().Truncate(time.Second).Add(50 * time.Millisecond)
	first, err := ca.issue(newKey(t).Public(), id, "n", now, 2*time.Second, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := ca.issue(newKey(t).Public(), id, "n", now.Add(600*time.Millisecond), 2*time.Second, first.NotAfter)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewal ends %v, not after the replaced certificate's %v", renewed.NotAfter, first.NotAfter)
	}
	fresh, err := ca.issue(newKey(t).Public(), id, "n", now.Add(600*time.Millisecond), 2*time.Second, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.NotAfter.After(first.NotAfter) {
		t.Skip("the two issues straddled a second boundary; the case did not arise")
	}
}
