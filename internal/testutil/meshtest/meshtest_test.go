package meshtest_test

import (
	"os"
	"testing"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// Signed starts MeshKit on loopback ports with a key pair written to disk.
func TestSigned(t *testing.T) {
	p, k := meshtest.Signed(t, serve.Options{})
	for _, a := range []string{p.XDSAddr().String(), p.APIAddr().String()} {
		if len(a) < len("127.0.0.1:1") || a[:10] != "127.0.0.1:" {
			t.Fatalf("listening on %s, want loopback", a)
		}
	}
	pubs, err := signing.LoadPublicKeys(k.TrustFile)
	if err != nil || len(pubs) != 1 || !pubs[0].Equal(k.Public) {
		t.Fatalf("trust file: %v %v", pubs, err)
	}
	if _, err := os.Stat(k.KeyFile); err != nil {
		t.Fatal(err)
	}
}
