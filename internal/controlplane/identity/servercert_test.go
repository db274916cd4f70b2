package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// TestServerCert: MeshKit's serving certificate for the xDS and API ports
// names MeshKit's SPIFFE ID and the given hosts, verifies against the CA as
// a server certificate for each host, and is reissued (new key, later end)
// once past half its life, not before.
func TestServerCert(t *testing.T) {
	h := startHarness(t, openBolt(t), time.Hour)
	sc, err := h.svc.NewServerCert([]string{"meshkit.internal", "10.0.0.7", ""}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, err := sc.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://omnirelay.test/meshkit" {
		t.Fatalf("URIs %v", leaf.URIs)
	}
	if !slices.Equal(leaf.DNSNames, []string{"meshkit.internal"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) {
		t.Fatalf("SANs: DNS %v, IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	for _, host := range []string{"meshkit.internal", "10.0.0.7"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: h.svc.RootPool(), CurrentTime: h.clock.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}

	for _, tc := range []struct {
		name    string
		advance time.Duration
		renewed bool
	}{
		{"before half-life", 3 * time.Second, false},
		{"past half-life", 3 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.clock.Advance(tc.advance)
			got, err := sc.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if renewed := got != first; renewed != tc.renewed {
				t.Fatalf("renewed = %v, want %v", renewed, tc.renewed)
			}
			if tc.renewed && (!got.Leaf.NotAfter.After(leaf.NotAfter) || publicKeysEqual(got.Leaf.PublicKey, leaf.PublicKey)) {
				t.Fatalf("renewal: not after %v -> %v, or the same key", leaf.NotAfter, got.Leaf.NotAfter)
			}
		})
	}

	if _, err := h.svc.NewServerCert(nil, 500*time.Millisecond); err == nil {
		t.Error("a lifetime below 1s was accepted")
	}
}

// TestLookupNode: the node record a join token writes is what the xDS port
// checks a client certificate against.
func TestLookupNode(t *testing.T) {
	h := startHarness(t, openBolt(t), time.Hour)
	ctx := context.Background()
	if _, err := h.svc.LookupNode(ctx, "web-1"); !errors.Is(err, ErrNodeNotEnrolled) {
		t.Fatalf("unknown node: %v; want ErrNodeNotEnrolled", err)
	}
	h.token(t, "web-1", "spiffe://omnirelay.test/ns/shop/sa/web", 0)
	n, err := h.svc.LookupNode(ctx, "web-1")
	if err != nil || n.SPIFFEID != "spiffe://omnirelay.test/ns/shop/sa/web" || n.Revoked {
		t.Fatalf("LookupNode: %+v, %v", n, err)
	}
}
