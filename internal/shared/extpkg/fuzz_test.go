package extpkg_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// FuzzParseManifest: no panics; every refusal wraps ErrManifest; whatever
// is accepted validates and survives Marshal → ParseManifest unchanged
// (what Pack writes is what Open reads). Seeds: testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	m := testManifest()
	m.PayloadSHA256 = extpkg.PayloadDigest([]byte("payload"))
	b, err := m.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := extpkg.ParseManifest(in)
		if err != nil {
			if !errors.Is(err, extpkg.ErrManifest) {
				t.Fatalf("error %q does not wrap ErrManifest", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a manifest that does not validate: %v", err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := extpkg.ParseManifest(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, again)
		}
	})
}

// FuzzOpen: arbitrary packages never panic Open, and an accepted package is
// signed by the trusted key with a payload matching its manifest.
// Seeds: testdata/fuzz/FuzzOpen.
func FuzzOpen(f *testing.F) {
	f.Add(signedPackage(f, testManifest(), []byte("payload"), 1))
	pub, _ := testKey(1)
	v := signing.NewVerifier(pub)
	f.Fuzz(func(t *testing.T, pkg []byte) {
		p, err := extpkg.Open(pkg, v)
		if err != nil {
			return
		}
		if extpkg.PayloadDigest(p.Payload) != p.Manifest.PayloadSHA256 {
			t.Fatal("accepted a payload that does not match its manifest")
		}
		if _, _, err := extpkg.Inspect(pkg); err != nil {
			t.Fatalf("Open accepted what Inspect refuses: %v", err)
		}
	})
}
