package signing_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

const payloadType = "application/vnd.omnirelay.test+json"

type envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"`
	Signatures  []signature `json:"signatures"`
}

type signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

func sign(t *testing.T, priv ed25519.PrivateKey, typ string, payload []byte) []byte {
	t.Helper()
	env, err := signing.NewSigner(priv).Sign(typ, payload)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return env
}

// edit decodes env, lets f change it and re-encodes it.
func edit(t *testing.T, env []byte, f func(*envelope)) []byte {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	f(&e)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerifyRoundTrip(t *testing.T) {
	pub1, priv1 := testKey(1)
	pub2, priv2 := testKey(2)
	payload := []byte(`{"hello":"world"}`)
	tests := []struct {
		name    string
		signer  ed25519.PrivateKey
		trusted []ed25519.PublicKey
	}{
		{name: "single key", signer: priv1, trusted: []ed25519.PublicKey{pub1}},
		{name: "old key during rotation", signer: priv1, trusted: []ed25519.PublicKey{pub2, pub1}},
		{name: "new key during rotation", signer: priv2, trusted: []ed25519.PublicKey{pub1, pub2}},
		{name: "duplicate trusted keys", signer: priv2, trusted: []ed25519.PublicKey{pub2, pub2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := sign(t, tt.signer, payloadType, payload)
			got, err := signing.NewVerifier(tt.trusted...).Verify(env, payloadType)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if string(got) != string(payload) {
				t.Fatalf("payload = %q, want %q", got, payload)
			}
		})
	}
}

func TestEnvelopeNamesKey(t *testing.T) {
	pub, priv := testKey(1)
	s := signing.NewSigner(priv)
	if s.KeyID() != signing.KeyID(pub) {
		t.Fatalf("Signer.KeyID = %q, want %q", s.KeyID(), signing.KeyID(pub))
	}
	var e envelope
	if err := json.Unmarshal(sign(t, priv, payloadType, []byte("x")), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Signatures) != 1 || e.Signatures[0].KeyID != signing.KeyID(pub) {
		t.Fatalf("signatures = %+v, want one by %s", e.Signatures, signing.KeyID(pub))
	}
}

func TestVerifyRejects(t *testing.T) {
	pub1, priv1 := testKey(1)
	pub2, priv2 := testKey(2)
	payload := []byte(`{"a":1}`)
	good := sign(t, priv1, payloadType, payload)
	tests := []struct {
		name     string
		verifier func() *signing.Verifier // nil: trust pub1
		envelope []byte
		typ      string // wanted payload type: "" means payloadType, "-" the empty string
		want     error  // errors.Is target, nil when only the message is checked
		contains string // substring of the error message
	}{
		{
			name: "unknown payload type", envelope: sign(t, priv1, "text/plain", payload),
			want: signing.ErrPayloadType, contains: `"text/plain"`,
		},
		{
			name: "no signature", envelope: edit(t, good, func(e *envelope) { e.Signatures = nil }),
			want: signing.ErrUnsigned, contains: "no signature",
		},
		{
			name: "untrusted key", envelope: sign(t, priv2, payloadType, payload),
			want: signing.ErrUntrustedKey, contains: signing.KeyID(pub2),
		},
		{
			name: "tampered payload",
			envelope: edit(t, good, func(e *envelope) {
				e.Payload = base64.StdEncoding.EncodeToString([]byte(`{"a":2}`))
			}),
			want: signing.ErrBadSignature, contains: "altered",
		},
		{
			name: "tampered signature",
			envelope: edit(t, good, func(e *envelope) {
				sig, _ := base64.StdEncoding.DecodeString(e.Signatures[0].Sig)
				sig[0] ^= 1
				e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(sig)
			}),
			want: signing.ErrBadSignature,
		},
		{
			name: "trusted key id on another key's signature",
			envelope: edit(t, sign(t, priv2, payloadType, payload), func(e *envelope) {
				e.Signatures[0].KeyID = signing.KeyID(pub1)
			}),
			want: signing.ErrBadSignature,
		},
		{
			name: "payload type swapped after signing",
			envelope: edit(t, sign(t, priv1, "text/plain", payload), func(e *envelope) {
				e.PayloadType = payloadType
			}),
			want: signing.ErrBadSignature,
		},
		{name: "not JSON", envelope: []byte("not json"), want: signing.ErrMalformed},
		{name: "empty", envelope: nil, want: signing.ErrMalformed},
		{name: "unknown field", envelope: []byte(`{"payloadType":"x","extra":1}`), want: signing.ErrMalformed},
		{name: "trailing data", envelope: append(append([]byte{}, good...), "{}"...), want: signing.ErrMalformed},
		{name: "empty wanted type", envelope: good, typ: "-", contains: "empty payload type"},
		{name: "empty trust set", verifier: func() *signing.Verifier { return signing.NewVerifier() }, envelope: good, contains: "empty trust set"},
		{name: "short trusted key", verifier: func() *signing.Verifier { return signing.NewVerifier(pub1, pub1[:5]) }, envelope: good, contains: "trusted key 1 is 5 bytes"},
		{name: "nil verifier", verifier: func() *signing.Verifier { return nil }, envelope: good, contains: "nil verifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := signing.NewVerifier(pub1)
			if tt.verifier != nil {
				v = tt.verifier()
			}
			typ := payloadType
			switch tt.typ {
			case "-":
				typ = ""
			case "":
			default:
				typ = tt.typ
			}
			got, err := v.Verify(tt.envelope, typ)
			if err == nil {
				t.Fatalf("Verify accepted it, payload %q", got)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q does not wrap %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func TestSignerRejects(t *testing.T) {
	_, priv := testKey(1)
	tests := []struct {
		name     string
		signer   *signing.Signer
		typ      string
		contains string
	}{
		{name: "short key", signer: signing.NewSigner(priv[:10]), typ: payloadType, contains: "10 bytes"},
		{name: "empty payload type", signer: signing.NewSigner(priv), typ: "", contains: "empty payload type"},
		{name: "nil signer", signer: nil, typ: payloadType, contains: "nil signer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.signer.Sign(tt.typ, []byte("x"))
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("Sign error = %v, want one mentioning %q", err, tt.contains)
			}
		})
	}
}
