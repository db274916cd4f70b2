package identity

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzSignCSR feeds arbitrary CSR bytes and tokens to Sign, as any client
// of the identity port can: it must never panic, and never issue without
// a valid token (the harness holds none the fuzzer can guess).
func FuzzSignCSR(f *testing.F) {
	f.Add(csrFor(f, newKey(f), webID), "")
	f.Add(csrFor(f, newKey(f), webID, cartID), "tok")
	f.Add(csrFor(f, newKey(f)), "tok")
	f.Add([]byte("garbage"), "")
	st := openBolt(f)
	h := startHarness(f, st, 0)
	f.Fuzz(func(t *testing.T, csr []byte, token string) {
		_, err := h.svc.sign(context.Background(), csr, token)
		switch status.Code(err) {
		case codes.InvalidArgument, codes.Unauthenticated:
		default:
			t.Fatalf("Sign(%x, %q): %v, want InvalidArgument or Unauthenticated", csr, token, err)
		}
	})
}
