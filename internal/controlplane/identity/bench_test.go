package identity

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// Of concurrent Signs with one token, exactly one gets a certificate.
func TestTokenSingleUseUnderRace(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	tok := h.token(t, webNode, webID, 0)
	cl := h.client(t, nil)
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		csr := csrFor(t, newKey(t), webID)
		wg.Go(func() {
			if _, err := cl.Sign(context.Background(), &meshkitv1.SignRequest{Csr: csr, JoinToken: tok}); err == nil {
				ok.Add(1)
			} else {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != 7 {
		t.Fatalf("%d issued, %d refused; want 1 and 7", ok.Load(), refused.Load())
	}
}

// BenchmarkIssue is the CA's share of a Sign: one ECDSA P-256 signature
// and the certificate encoding.
func BenchmarkIssue(b *testing.B) {
	st := openBolt(b)
	ca, err := LoadOrCreateCA(context.Background(), st, testTD, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	pub := newKey(b).Public()
	id := spiffeid.RequireFromString(webID)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.issue(pub, id, webNode, time.Now(), time.Hour, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenew is a whole renewal as a proxy sees it on a warm mTLS
// connection: CSR check, node record compare-and-set in bbolt, signature.
func BenchmarkRenew(b *testing.B) {
	h := startHarness(b, openBolt(b), 0)
	key := newKey(b)
	resp, err := h.client(b, nil).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(b, key, webID), JoinToken: h.token(b, webNode, webID, 0)})
	if err != nil {
		b.Fatal(err)
	}
	cl := h.client(b, h.svidFrom(b, resp, key))
	csr := csrFor(b, newKey(b), webID)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.Sign(context.Background(), &meshkitv1.SignRequest{Csr: csr}); err != nil {
			b.Fatal(err)
		}
	}
}
