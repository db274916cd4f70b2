package signing_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func TestResourceRoundTripThroughSotWWrapper(t *testing.T) {
	pub, priv := testKey(1)
	body := testCluster(t, "backend")
	md, err := signing.SignResource(signing.NewSigner(priv), "backend", body)
	if err != nil {
		t.Fatal(err)
	}
	// MeshKit side: wrap for a SotW response.
	wrapped, err := signing.WrapResource(&discoveryv3.Resource{Name: "backend", Version: "v1", Resource: body, Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	if wrapped.GetTypeUrl() != signing.ResourceWrapperTypeURL {
		t.Fatalf("wrapper type = %q", wrapped.GetTypeUrl())
	}
	// Over the wire and back.
	wire, err := proto.Marshal(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	received := new(anypb.Any)
	if err := proto.Unmarshal(wire, received); err != nil {
		t.Fatal(err)
	}
	// OmniRelay side: unwrap and verify without re-marshalling anything.
	r, err := signing.UnwrapResource(received)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetName() != "backend" || r.GetVersion() != "v1" {
		t.Fatalf("unwrapped %q version %q", r.GetName(), r.GetVersion())
	}
	if err := signing.VerifyResource(signing.NewVerifier(pub), r.GetName(), r.GetResource(), r.GetMetadata()); err != nil {
		t.Fatalf("VerifyResource: %v", err)
	}
}

func TestUnwrapRejects(t *testing.T) {
	tests := []struct {
		name     string
		any      *anypb.Any
		contains string
	}{
		{name: "bare resource", any: testCluster(t, "c"), contains: "is not"},
		{name: "nil", any: nil, contains: "is not"},
		{name: "garbage value", any: &anypb.Any{TypeUrl: signing.ResourceWrapperTypeURL, Value: []byte{0xff, 0xff}}, contains: "unwrap resource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := signing.UnwrapResource(tt.any)
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.contains)
			}
		})
	}
	if _, err := signing.WrapResource(nil); err == nil {
		t.Fatal("WrapResource(nil) succeeded")
	}
}

func envelopeMetadata(env string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		signing.MetadataKey: {Fields: map[string]*structpb.Value{signing.MetadataEnvelopeField: structpb.NewStringValue(env)}},
	}}
}

func TestVerifyResourceRejects(t *testing.T) {
	pub1, priv1 := testKey(1)
	_, priv2 := testKey(2)
	s1 := signing.NewSigner(priv1)
	body := testCluster(t, "backend")
	md, err := signing.SignResource(s1, "backend", body)
	if err != nil {
		t.Fatal(err)
	}
	other := testCluster(t, "other")
	otherMD, err := signing.SignResource(s1, "other", other)
	if err != nil {
		t.Fatal(err)
	}
	untrustedMD, err := signing.SignResource(signing.NewSigner(priv2), "backend", body)
	if err != nil {
		t.Fatal(err)
	}
	flipped := proto.Clone(body).(*anypb.Any)
	flipped.Value[len(flipped.Value)-1] ^= 1
	retyped := proto.Clone(body).(*anypb.Any)
	retyped.TypeUrl = "type.googleapis.com/envoy.config.listener.v3.Listener"
	// Statements signed by the trusted key but not made by SignResource.
	stmt := func(s string) *corev3.Metadata {
		env, err := s1.Sign(signing.PayloadTypeResource, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return envelopeMetadata(string(env))
	}
	plainEnv, err := s1.Sign("text/plain", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		resName  string
		body     *anypb.Any
		nilBody  bool
		md       *corev3.Metadata
		want     error
		contains string
	}{
		{name: "no metadata", md: nil, want: signing.ErrUnsigned, contains: `no "omnirelay.dsse" metadata`},
		{name: "other filter metadata only", md: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": {}}}, want: signing.ErrUnsigned},
		{name: "envelope field missing", md: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{signing.MetadataKey: {}}}, want: signing.ErrMalformed},
		{
			name: "envelope field not a string", want: signing.ErrMalformed,
			md: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{signing.MetadataKey: {Fields: map[string]*structpb.Value{
				signing.MetadataEnvelopeField: structpb.NewNumberValue(1),
			}}}},
		},
		{name: "envelope not JSON", md: envelopeMetadata("{"), want: signing.ErrMalformed},
		{name: "wrong payload type", md: envelopeMetadata(string(plainEnv)), want: signing.ErrPayloadType},
		{name: "untrusted key", md: untrustedMD, want: signing.ErrUntrustedKey},
		{name: "body changed by one bit", body: flipped, md: md, want: signing.ErrMismatch, contains: "body sha256"},
		{name: "type URL changed", body: retyped, md: md, want: signing.ErrMismatch, contains: "signed for type"},
		{name: "signature moved to another name", resName: "other", md: md, want: signing.ErrMismatch, contains: `signed for name "backend"`},
		{name: "another resource's signature", md: otherMD, want: signing.ErrMismatch},
		{name: "nil body", nilBody: true, md: md, want: signing.ErrMalformed},
		{
			name: "digest not hex", want: signing.ErrMalformed, contains: "not a hex sha256",
			md: stmt(`{"type_url":"` + body.GetTypeUrl() + `","name":"backend","sha256":"zz"}`),
		},
		{
			name: "short digest", want: signing.ErrMalformed,
			md: stmt(`{"type_url":"` + body.GetTypeUrl() + `","name":"backend","sha256":"` + hex.EncodeToString([]byte{1}) + `"}`),
		},
		{name: "statement with unknown field", md: stmt(`{"name":"backend","extra":1}`), want: signing.ErrMalformed},
		{name: "statement not JSON", md: stmt(`nope`), want: signing.ErrMalformed},
	}
	v := signing.NewVerifier(pub1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, b := "backend", body
			if tt.resName != "" {
				name = tt.resName
			}
			if tt.body != nil {
				b = tt.body
			}
			if tt.nilBody {
				b = nil
			}
			err := signing.VerifyResource(v, name, b, tt.md)
			if err == nil {
				t.Fatal("VerifyResource accepted it")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q does not wrap %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), `resource "`+name+`"`) {
				t.Errorf("error %q does not name the resource", err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func BenchmarkVerifyResource(b *testing.B) {
	pub, priv := testKey(1)
	body := testCluster(b, "backend")
	md, err := signing.SignResource(signing.NewSigner(priv), "backend", body)
	if err != nil {
		b.Fatal(err)
	}
	v := signing.NewVerifier(pub)
	b.ReportAllocs()
	for b.Loop() {
		if err := signing.VerifyResource(v, "backend", body, md); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignResource(b *testing.B) {
	_, priv := testKey(1)
	body := testCluster(b, "backend")
	s := signing.NewSigner(priv)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signing.SignResource(s, "backend", body); err != nil {
			b.Fatal(err)
		}
	}
}
