package signing

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	// MetadataKey is the Resource.Metadata.FilterMetadata key holding a
	// resource's signature.
	MetadataKey = "omnirelay.dsse"
	// MetadataEnvelopeField is the string field of that Struct holding the
	// JSON DSSE envelope.
	MetadataEnvelopeField = "envelope"
	// ResourceWrapperTypeURL is the type of an Any wrapping a
	// discovery.v3.Resource, which is how state-of-the-world responses carry
	// a resource together with its signature metadata.
	ResourceWrapperTypeURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// statement is the signed payload of a resource signature. It binds the
// name and type to a digest of the exact Any.Value bytes, so that a
// verifier never re-marshals (proto encoding is not canonical) and a
// signature cannot be moved to another resource.
type statement struct {
	TypeURL string `json:"type_url"`
	Name    string `json:"name"`
	SHA256  string `json:"sha256"`
}

// SignResource signs the resource name with body and returns the metadata to
// set on its discovery.v3.Resource.
func SignResource(s *Signer, name string, body *anypb.Any) (*corev3.Metadata, error) {
	if body == nil {
		return nil, fmt.Errorf("signing: resource %q: nil body", name)
	}
	sum := sha256.Sum256(body.GetValue())
	payload, err := json.Marshal(statement{TypeURL: body.GetTypeUrl(), Name: name, SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, fmt.Errorf("signing: resource %q: encode statement: %w", name, err)
	}
	env, err := s.Sign(PayloadTypeResource, payload)
	if err != nil {
		return nil, fmt.Errorf("signing: resource %q: %w", name, err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		MetadataKey: {Fields: map[string]*structpb.Value{
			MetadataEnvelopeField: structpb.NewStringValue(string(env)),
		}},
	}}, nil
}

// VerifyResource checks that md carries a signature, by a trusted key, over
// exactly this name, type URL and body. The error names the resource and
// wraps one of the Err* reasons.
func VerifyResource(v *Verifier, name string, body *anypb.Any, md *corev3.Metadata) error {
	if body == nil {
		return fmt.Errorf("signing: resource %q: %w: nil body", name, ErrMalformed)
	}
	sig := md.GetFilterMetadata()[MetadataKey]
	if sig == nil {
		return fmt.Errorf("signing: resource %q: %w: no %q metadata", name, ErrUnsigned, MetadataKey)
	}
	field := sig.GetFields()[MetadataEnvelopeField]
	env, ok := field.GetKind().(*structpb.Value_StringValue)
	if !ok {
		return fmt.Errorf("signing: resource %q: %w: metadata %q has no string field %q",
			name, ErrMalformed, MetadataKey, MetadataEnvelopeField)
	}
	payload, err := v.Verify([]byte(env.StringValue), PayloadTypeResource)
	if err != nil {
		return fmt.Errorf("signing: resource %q: %w", name, err)
	}
	st, err := decodeStatement(payload)
	if err != nil {
		return fmt.Errorf("signing: resource %q: %w", name, err)
	}
	switch {
	case st.Name != name:
		return fmt.Errorf("signing: resource %q: %w: signed for name %q", name, ErrMismatch, st.Name)
	case st.TypeURL != body.GetTypeUrl():
		return fmt.Errorf("signing: resource %q: %w: signed for type %q, body is %q", name, ErrMismatch, st.TypeURL, body.GetTypeUrl())
	}
	want, err := hex.DecodeString(st.SHA256)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("signing: resource %q: %w: statement digest %q is not a hex sha256", name, ErrMalformed, st.SHA256)
	}
	got := sha256.Sum256(body.GetValue())
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return fmt.Errorf("signing: resource %q: %w: body sha256 %x, signed %s", name, ErrMismatch, got, st.SHA256)
	}
	return nil
}

func decodeStatement(b []byte) (statement, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st statement
	if err := dec.Decode(&st); err != nil {
		return statement{}, fmt.Errorf("%w: statement: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return statement{}, fmt.Errorf("%w: statement: trailing data", ErrMalformed)
	}
	return st, nil
}

// WrapResource packs r into an Any typed ResourceWrapperTypeURL.
func WrapResource(r *discoveryv3.Resource) (*anypb.Any, error) {
	if r == nil {
		return nil, errors.New("signing: wrap nil resource")
	}
	a, err := anypb.New(r)
	if err != nil {
		return nil, fmt.Errorf("signing: wrap resource %q: %w", r.GetName(), err)
	}
	return a, nil
}

// UnwrapResource undoes WrapResource; an Any of any other type is an error,
// so a SotW client can tell a wrapped (signed) resource from a bare one.
func UnwrapResource(a *anypb.Any) (*discoveryv3.Resource, error) {
	if a.GetTypeUrl() != ResourceWrapperTypeURL {
		return nil, fmt.Errorf("signing: unwrap: type %q is not %q", a.GetTypeUrl(), ResourceWrapperTypeURL)
	}
	r := new(discoveryv3.Resource)
	if err := proto.Unmarshal(a.GetValue(), r); err != nil {
		return nil, fmt.Errorf("signing: unwrap resource: %w", err)
	}
	return r, nil
}
