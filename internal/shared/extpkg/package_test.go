package extpkg_test

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// testKey returns a fixed key pair so that fuzz seeds stay valid signatures.
func testKey(n byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = n + byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

func testManifest() extpkg.Manifest {
	return extpkg.Manifest{
		Name: "add-header", Version: "1.0.0", Kind: extpkg.KindWasm, ABI: "proxy-wasm/0.2.1",
		Capabilities: []string{"envoy.filters.http.router"},
		ConfigSchema: []byte(`{"type":"object"}`),
	}
}

func signedPackage(t testing.TB, m extpkg.Manifest, payload []byte, key byte) []byte {
	t.Helper()
	pkg, err := extpkg.Pack(m, payload)
	if err != nil {
		t.Fatal(err)
	}
	_, priv := testKey(key)
	pkg, err = extpkg.Sign(pkg, signing.NewSigner(priv))
	if err != nil {
		t.Fatal(err)
	}
	return pkg
}

type entry struct {
	name string
	typ  byte
	body []byte
}

// rawTar builds a tar from entries as given, for packages Pack would refuse.
func rawTar(t testing.TB, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// entries reads a package back into its entries.
func entries(t testing.TB, pkg []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(pkg))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(tr); err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b.Bytes()
	}
	return out
}

// swapEnvelopePayload replaces the signed payload of a DSSE envelope,
// keeping its signature: a forgery attempt.
func swapEnvelopePayload(t testing.TB, env, payload []byte) []byte {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	e["payload"] = base64.StdEncoding.EncodeToString(payload)
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPackSignOpen(t *testing.T) {
	payload := []byte("\x00asm\x01\x00\x00\x00")
	pkg := signedPackage(t, testManifest(), payload, 1)
	pub, _ := testKey(1)
	p, err := extpkg.Open(pkg, signing.NewVerifier(pub))
	if err != nil {
		t.Fatal(err)
	}
	want := testManifest()
	want.PayloadSHA256 = extpkg.PayloadDigest(payload)
	if p.Manifest.Name != want.Name || p.Manifest.PayloadSHA256 != want.PayloadSHA256 ||
		p.Manifest.ABI != want.ABI || string(p.Manifest.ConfigSchema) != string(want.ConfigSchema) {
		t.Fatalf("manifest = %+v, want %+v", p.Manifest, want)
	}
	if !bytes.Equal(p.Payload, payload) {
		t.Fatalf("payload = %q", p.Payload)
	}
	// Deterministic: packing and signing again gives the same bytes.
	if again := signedPackage(t, testManifest(), payload, 1); !bytes.Equal(again, pkg) {
		t.Fatal("packing twice gave different bytes")
	}
	// Re-signing replaces the signature: the new key is trusted, the old is not.
	_, priv2 := testKey(2)
	pkg2, err := extpkg.Sign(pkg, signing.NewSigner(priv2))
	if err != nil {
		t.Fatal(err)
	}
	pub2, _ := testKey(2)
	if _, err := extpkg.Open(pkg2, signing.NewVerifier(pub2)); err != nil {
		t.Fatalf("re-signed: %v", err)
	}
	if _, err := extpkg.Open(pkg2, signing.NewVerifier(pub)); !errors.Is(err, signing.ErrUntrustedKey) {
		t.Fatalf("re-signed, old key: err = %v, want ErrUntrustedKey", err)
	}
	q, signed, err := extpkg.Inspect(pkg2)
	if err != nil || !signed || q.Manifest.Name != "add-header" {
		t.Fatalf("Inspect = %+v, %v, %v", q, signed, err)
	}
}

func TestPackRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*extpkg.Manifest)
		payload []byte
		want    string
	}{
		{name: "empty name", mutate: func(m *extpkg.Manifest) { m.Name = "" }, want: "name"},
		{name: "upper-case name", mutate: func(m *extpkg.Manifest) { m.Name = "AddHeader" }, want: "name"},
		{name: "unknown kind", mutate: func(m *extpkg.Manifest) { m.Kind = "lua" }, want: `kind "lua"`},
		{name: "no abi", mutate: func(m *extpkg.Manifest) { m.ABI = "" }, want: "abi"},
		{name: "no version", mutate: func(m *extpkg.Manifest) { m.Version = "" }, want: "version"},
		{name: "duplicate capability", mutate: func(m *extpkg.Manifest) { m.Capabilities = []string{"a", "a"} }, want: "duplicate"},
		{name: "capability with space", mutate: func(m *extpkg.Manifest) { m.Capabilities = []string{"a b"} }, want: "capabilities[0]"},
		{name: "schema not an object", mutate: func(m *extpkg.Manifest) { m.ConfigSchema = []byte(`[1]`) }, want: "config_schema"},
		{name: "wrong sha256", mutate: func(m *extpkg.Manifest) { m.PayloadSHA256 = strings.Repeat("0", 64) }, want: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManifest()
			tt.mutate(&m)
			_, err := extpkg.Pack(m, []byte("payload"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	pub, _ := testKey(1)
	v := signing.NewVerifier(pub)
	good := signedPackage(t, testManifest(), []byte("payload"), 1)
	e := entries(t, good)
	other := entries(t, signedPackage(t, testManifest(), []byte("other payload"), 1))
	unsigned, err := extpkg.Pack(testManifest(), []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	renamed := testManifest()
	renamed.Name = "evil"
	renamed.PayloadSHA256 = extpkg.PayloadDigest([]byte("payload"))
	renamedJSON, err := renamed.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		pkg    []byte
		target error
		want   string
	}{
		{name: "empty", pkg: nil, target: extpkg.ErrFormat, want: "empty"},
		{name: "garbage", pkg: []byte("this is not a tar archive, not at all, no"), target: extpkg.ErrFormat, want: "not a tar"},
		{name: "truncated", pkg: good[:700], target: extpkg.ErrFormat},
		{name: "unsigned", pkg: unsigned, target: extpkg.ErrUnsigned, want: "signature.dsse"},
		{name: "untrusted key", pkg: signedPackage(t, testManifest(), []byte("payload"), 9), target: signing.ErrUntrustedKey},
		{name: "payload swapped", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "payload", body: []byte("evil")},
			entry{name: "signature.dsse", body: e["signature.dsse"]}),
			target: extpkg.ErrHashMismatch, want: `extension "add-header"`},
		{name: "manifest and payload swapped together", pkg: rawTar(t,
			entry{name: "manifest.json", body: other["manifest.json"]},
			entry{name: "payload", body: []byte("other payload")},
			entry{name: "signature.dsse", body: e["signature.dsse"]}),
			target: extpkg.ErrFormat, want: "differs"},
		{name: "envelope payload swapped", pkg: rawTar(t,
			entry{name: "manifest.json", body: other["manifest.json"]},
			entry{name: "payload", body: []byte("other payload")},
			entry{name: "signature.dsse", body: swapEnvelopePayload(t, e["signature.dsse"], other["manifest.json"])}),
			target: signing.ErrBadSignature},
		{name: "manifest edited", pkg: rawTar(t,
			entry{name: "manifest.json", body: renamedJSON},
			entry{name: "payload", body: []byte("payload")},
			entry{name: "signature.dsse", body: e["signature.dsse"]}),
			target: extpkg.ErrFormat, want: "differs from the manifest the signature covers"},
		{name: "unknown entry", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "payload", body: e["payload"]},
			entry{name: "../etc/passwd", body: []byte("x")}),
			target: extpkg.ErrFormat, want: `unexpected entry "../etc/passwd"`},
		{name: "repeated payload", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "payload", body: e["payload"]},
			entry{name: "payload", body: []byte("evil")}),
			target: extpkg.ErrFormat, want: "repeated"},
		{name: "payload is a symlink", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "payload", typ: tar.TypeSymlink}),
			target: extpkg.ErrFormat, want: "not a regular file"},
		{name: "no payload", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "signature.dsse", body: e["signature.dsse"]}),
			target: extpkg.ErrFormat, want: "no payload"},
		{name: "signature garbage", pkg: rawTar(t,
			entry{name: "manifest.json", body: e["manifest.json"]},
			entry{name: "payload", body: e["payload"]},
			entry{name: "signature.dsse", body: []byte("{")}),
			target: signing.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := extpkg.Open(tt.pkg, v)
			if err == nil {
				t.Fatalf("Open accepted %+v", p.Manifest)
			}
			if !errors.Is(err, tt.target) {
				t.Fatalf("err = %v, want %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestParseManifestStrict(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	base := `"version":"1","kind":"dsl","abi":"cel/1","payload_sha256":"` + sum + `"`
	tests := []struct {
		name string
		in   string
		want string // "" means accepted
	}{
		{name: "minimal", in: `{"name":"x",` + base + `}`},
		{name: "schema compacted", in: `{"name":"x",` + base + `,"config_schema": { "a" : 1 }}`},
		{name: "empty capabilities", in: `{"name":"x",` + base + `,"capabilities":[]}`},
		{name: "unknown field", in: `{"name":"x",` + base + `,"extra":1}`, want: `unknown field "extra"`},
		{name: "key in other case", in: `{"NAME":"x",` + base + `}`, want: `unknown field "NAME"`},
		{name: "repeated key", in: `{"name":"x","name":"y",` + base + `}`, want: `"name" repeated`},
		{name: "trailing data", in: `{"name":"x",` + base + `}{}`, want: "trailing"},
		{name: "not an object", in: `["name"]`, want: "not a JSON object"},
		{name: "number name", in: `{"name":1,` + base + `}`, want: `field "name"`},
		{name: "null capabilities", in: `{"name":"x",` + base + `,"capabilities":null}`, want: "capabilities"},
		{name: "upper-case hash", in: `{"name":"x","version":"1","kind":"dsl","abi":"a","payload_sha256":"` + strings.ToUpper(sum) + `"}`, want: "payload_sha256"},
		{name: "missing name", in: `{` + base + `}`, want: "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := extpkg.ParseManifest([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.ConfigSchema != nil && bytes.ContainsAny(m.ConfigSchema, " \n") {
					t.Fatalf("schema not compacted: %s", m.ConfigSchema)
				}
				return
			}
			if err == nil || !errors.Is(err, extpkg.ErrManifest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrManifest mentioning %q", err, tt.want)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	payload := bytes.Repeat([]byte("w"), 256<<10)
	pkg := signedPackage(b, testManifest(), payload, 1)
	pub, _ := testKey(1)
	v := signing.NewVerifier(pub)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkg)))
	for b.Loop() {
		if _, err := extpkg.Open(pkg, v); err != nil {
			b.Fatal(err)
		}
	}
}
