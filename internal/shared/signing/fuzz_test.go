package signing_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

var reasons = []error{
	signing.ErrMalformed, signing.ErrPayloadType, signing.ErrUnsigned,
	signing.ErrUntrustedKey, signing.ErrBadSignature, signing.ErrMismatch,
}

func checkReason(t *testing.T, err error) {
	t.Helper()
	for _, r := range reasons {
		if errors.Is(err, r) {
			return
		}
	}
	t.Fatalf("error %q wraps none of the Err* reasons", err)
}

// signedByTrusted is the oracle: some signature in env, decoded
// independently of the package, is pub's over the DSSE PAE of payload.
func signedByTrusted(env []byte, pub ed25519.PublicKey, payload []byte) bool {
	var e dsse.Envelope
	if json.Unmarshal(env, &e) != nil {
		return false
	}
	pae := dsse.PAE(e.PayloadType, payload)
	for _, s := range e.Signatures {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			if sig, err := enc.DecodeString(s.Sig); err == nil && ed25519.Verify(pub, pae, sig) {
				return true
			}
		}
	}
	return false
}

// FuzzVerify feeds arbitrary envelopes to Verify: it must never panic, every
// rejection must say why, and whatever it accepts must carry a genuine
// signature by the trusted key. Seeds: testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	pub, priv := testKey(1)
	env, err := signing.NewSigner(priv).Sign(payloadType, []byte(`{"a":1}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	v := signing.NewVerifier(pub)
	f.Fuzz(func(t *testing.T, env []byte) {
		payload, err := v.Verify(env, payloadType)
		if err != nil {
			checkReason(t, err)
			return
		}
		if !signedByTrusted(env, pub, payload) {
			t.Fatalf("accepted %q without a trusted signature", env)
		}
	})
}

// FuzzVerifyResource feeds arbitrary resources and envelopes to
// VerifyResource: no panics, reasons on every rejection, and an accepted
// resource is exactly the one the trusted key signed.
// Seeds: testdata/fuzz/FuzzVerifyResource.
func FuzzVerifyResource(f *testing.F) {
	pub, priv := testKey(1)
	body := testCluster(f, "backend")
	md, err := signing.SignResource(signing.NewSigner(priv), "backend", body)
	if err != nil {
		f.Fatal(err)
	}
	env := md.GetFilterMetadata()[signing.MetadataKey].GetFields()[signing.MetadataEnvelopeField].GetStringValue()
	f.Add("backend", body.GetTypeUrl(), body.GetValue(), env)
	v := signing.NewVerifier(pub)
	f.Fuzz(func(t *testing.T, name, typeURL string, value []byte, env string) {
		body := &anypb.Any{TypeUrl: typeURL, Value: value}
		err := signing.VerifyResource(v, name, body, envelopeMetadata(env))
		if err != nil {
			checkReason(t, err)
			if !strings.Contains(err.Error(), "resource ") {
				t.Fatalf("error %q does not name the resource", err)
			}
			return
		}
		payload, err := v.Verify([]byte(env), signing.PayloadTypeResource)
		if err != nil || !signedByTrusted([]byte(env), pub, payload) {
			t.Fatalf("accepted resource %q without a trusted signature", name)
		}
		var st struct {
			TypeURL string `json:"type_url"`
			Name    string `json:"name"`
			SHA256  string `json:"sha256"`
		}
		if err := json.Unmarshal(payload, &st); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(value)
		if st.Name != name || st.TypeURL != typeURL || !strings.EqualFold(st.SHA256, hex.EncodeToString(sum[:])) {
			t.Fatalf("accepted %q/%q/%x against statement %+v", name, typeURL, sum, st)
		}
	})
}
