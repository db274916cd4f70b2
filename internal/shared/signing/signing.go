// Package signing owns the signatures on OmniRelay configuration: ed25519
// keys and their PEM files, DSSE envelopes (github.com/secure-systems-lab/
// go-securesystemslib/dsse) and the signature carried on each xDS resource.
//
// It is shared by both ends of the wire: MeshKit signs every resource it
// serves, and the OmniRelay data plane verifies each one against its trust
// root before applying it, and again when it loads its last-known-good
// snapshot from disk. Nothing here talks to the network; a failed check is
// always an error that names the reason (wrong payload type, no signature,
// untrusted key, signature that does not verify, statement that does not
// match the resource), so that it can go verbatim into a NACK.
package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadTypeResource is the DSSE payload type of a signed xDS resource
// statement (see SignResource).
const PayloadTypeResource = "application/vnd.omnirelay.xds-resource.v1+json"

// Reasons a verification fails; errors returned by Verify and VerifyResource
// wrap exactly one of them, with detail.
var (
	// ErrMalformed: the envelope or statement is not what was signed here
	// (bad JSON, unknown fields, bad base64).
	ErrMalformed = errors.New("malformed signature envelope")
	// ErrPayloadType: the envelope signs a different kind of payload.
	ErrPayloadType = errors.New("unexpected payload type")
	// ErrUnsigned: no signature at all (no metadata, or an envelope with no
	// signatures).
	ErrUnsigned = errors.New("unsigned")
	// ErrUntrustedKey: every signature names a key outside the trust set.
	ErrUntrustedKey = errors.New("signed by an untrusted key")
	// ErrBadSignature: a trusted key is named but its signature does not
	// verify, so the payload or the signature was altered.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrMismatch: the signed statement is genuine but names another
	// resource, type or body.
	ErrMismatch = errors.New("signed statement does not match the resource")
)

// keyPair adapts an ed25519 key to dsse.SignerVerifier. priv is nil on the
// verifying side.
type keyPair struct {
	id   string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

var _ dsse.SignerVerifier = (*keyPair)(nil)

func (k *keyPair) Sign(_ context.Context, data []byte) ([]byte, error) {
	if k.priv == nil {
		return nil, errors.New("signing: verification-only key")
	}
	return ed25519.Sign(k.priv, data), nil
}

func (k *keyPair) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(k.pub, data, sig) {
		return fmt.Errorf("ed25519 signature by key %s does not verify", k.id)
	}
	return nil
}

func (k *keyPair) KeyID() (string, error) { return k.id, nil }

func (k *keyPair) Public() crypto.PublicKey { return k.pub }

// Signer produces DSSE envelopes signed with one ed25519 key. It is safe for
// concurrent use.
type Signer struct {
	id  string
	env *dsse.EnvelopeSigner
	err error // a bad key is reported by Sign, since NewSigner cannot fail
}

// NewSigner returns a Signer for k. A key of the wrong length makes every
// Sign fail rather than panic inside crypto/ed25519.
func NewSigner(k ed25519.PrivateKey) *Signer {
	if len(k) != ed25519.PrivateKeySize {
		return &Signer{err: fmt.Errorf("signing: private key is %d bytes, want %d", len(k), ed25519.PrivateKeySize)}
	}
	pub := k.Public().(ed25519.PublicKey)
	kp := &keyPair{id: KeyID(pub), pub: pub, priv: k}
	env, err := dsse.NewEnvelopeSigner(kp)
	return &Signer{id: kp.id, env: env, err: err}
}

// KeyID is the id of the signing key, as named in the envelopes it makes.
func (s *Signer) KeyID() string { return s.id }

// Sign returns the JSON DSSE envelope over payload, typed payloadType.
func (s *Signer) Sign(payloadType string, payload []byte) ([]byte, error) {
	if s == nil {
		return nil, errors.New("signing: nil signer")
	}
	if s.err != nil {
		return nil, s.err
	}
	if payloadType == "" {
		return nil, errors.New("signing: empty payload type")
	}
	e, err := s.env.SignPayload(context.Background(), payloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("signing: DSSE sign with key %s: %w", s.id, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("signing: encode envelope: %w", err)
	}
	return b, nil
}

// Verifier checks DSSE envelopes against a trust set of ed25519 public keys;
// one valid signature from any key in the set is enough, which lets a key be
// rotated by trusting old and new for a while. It is safe for concurrent use.
type Verifier struct {
	keys map[string]ed25519.PublicKey
	ids  []string // sorted, for error messages
	env  *dsse.EnvelopeVerifier
	err  error
}

// NewVerifier returns a Verifier trusting keys. Duplicates are dropped (the
// dsse verifier counts one key twice otherwise). An empty trust set, or a
// key of the wrong length, makes every Verify fail: a misconfigured trust
// root must not verify anything.
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys))}
	var providers []dsse.Verifier
	for i, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			v.err = fmt.Errorf("signing: trusted key %d is %d bytes, want %d", i, len(k), ed25519.PublicKeySize)
			return v
		}
		id := KeyID(k)
		if _, dup := v.keys[id]; dup {
			continue
		}
		v.keys[id] = k
		v.ids = append(v.ids, id)
		providers = append(providers, &keyPair{id: id, pub: k})
	}
	if len(providers) == 0 {
		v.err = errors.New("signing: empty trust set")
		return v
	}
	slices.Sort(v.ids)
	v.env, v.err = dsse.NewEnvelopeVerifier(providers...)
	return v
}

// KeyIDs lists the trusted key ids, sorted.
func (v *Verifier) KeyIDs() []string { return slices.Clone(v.ids) }

// Verify checks envelope (JSON DSSE) and returns its payload. The envelope
// must be typed payloadType and carry at least one signature from a trusted
// key that verifies; the error wraps one of the Err* reasons otherwise.
func (v *Verifier) Verify(envelope []byte, payloadType string) ([]byte, error) {
	if v == nil {
		return nil, errors.New("signing: nil verifier")
	}
	if v.err != nil {
		return nil, v.err
	}
	if payloadType == "" {
		return nil, errors.New("signing: verify: empty payload type wanted")
	}
	e, err := decodeEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	if e.PayloadType != payloadType {
		return nil, fmt.Errorf("%w: envelope has %q, want %q", ErrPayloadType, e.PayloadType, payloadType)
	}
	if len(e.Signatures) == 0 {
		return nil, fmt.Errorf("%w: envelope has no signature", ErrUnsigned)
	}
	// The dsse verifier only says "threshold not met"; sort out the
	// untrusted case first so that the operator learns which key signed.
	named := false
	var untrusted []string
	for _, s := range e.Signatures {
		if _, ok := v.keys[s.KeyID]; ok || s.KeyID == "" {
			named = true // an empty keyid may be any key: let dsse try them all
			continue
		}
		untrusted = append(untrusted, s.KeyID)
	}
	if !named {
		return nil, fmt.Errorf("%w: signed by %s, trusted keys are %s",
			ErrUntrustedKey, quoteList(untrusted), strings.Join(v.ids, ", "))
	}
	_, payload, err := v.env.VerifyAndDecode(context.Background(), e)
	if err != nil {
		return nil, fmt.Errorf("%w: payload or signature altered (%v)", ErrBadSignature, err)
	}
	return payload, nil
}

// decodeEnvelope parses a JSON DSSE envelope strictly: unknown fields and
// trailing data are refused, so that what was verified is all there is.
func decodeEnvelope(b []byte) (*dsse.Envelope, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e dsse.Envelope
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the envelope", ErrMalformed)
	}
	return &e, nil
}

func quoteList(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = fmt.Sprintf("%q", id)
	}
	return strings.Join(q, ", ")
}
