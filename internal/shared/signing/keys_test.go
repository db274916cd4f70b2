package signing_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func TestKeyFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	privPath := filepath.Join(dir, "meshkit.key")
	// An existing, world-readable file must not keep its mode.
	if err := os.WriteFile(privPath, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePrivateKey(privPath, priv); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %v, want 0600", st.Mode().Perm())
	}
	gotPriv, err := signing.LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPriv.Equal(priv) {
		t.Fatal("loaded private key differs")
	}

	// A trust root: several keys in one file, with comments between them.
	pub2, _ := testKey(2)
	pub3, _ := testKey(3)
	var bundle strings.Builder
	for i, k := range []ed25519.PublicKey{pub, pub2, pub3} {
		p := filepath.Join(dir, "k.pub")
		if err := signing.WritePublicKey(p, k); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bundle.WriteString("# key " + string(rune('a'+i)) + "\n")
		bundle.Write(b)
	}
	trust := filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(trust, []byte(bundle.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := signing.LoadPublicKeys(trust)
	if err != nil {
		t.Fatal(err)
	}
	want := []ed25519.PublicKey{pub, pub2, pub3}
	if len(keys) != len(want) {
		t.Fatalf("loaded %d keys, want %d", len(keys), len(want))
	}
	for i := range want {
		if !keys[i].Equal(want[i]) {
			t.Errorf("key %d differs", i)
		}
	}
	// Keys loaded from files sign and verify.
	env, err := signing.NewSigner(gotPriv).Sign(payloadType, []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signing.NewVerifier(keys...).Verify(env, payloadType); err != nil {
		t.Fatalf("Verify with loaded trust root: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestKeyID(t *testing.T) {
	pub1, _ := testKey(1)
	pub2, _ := testKey(2)
	id := signing.KeyID(pub1)
	if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
		t.Fatalf("KeyID = %q, want 32 hex digits", id)
	}
	if signing.KeyID(pub1) != id {
		t.Fatal("KeyID is not stable")
	}
	if signing.KeyID(pub2) == id {
		t.Fatal("two keys share an id")
	}
	if got := signing.KeyID(pub1[:3]); got != "" {
		t.Fatalf("KeyID of a short key = %q, want empty", got)
	}
}

func TestLoadKeysRejects(t *testing.T) {
	pub, priv := testKey(1)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	good := block("PUBLIC KEY", pkix)
	tests := []struct {
		name     string
		private  bool // LoadPrivateKey instead of LoadPublicKeys
		content  string
		missing  bool // no file at all
		contains string
	}{
		{name: "empty trust file", content: "", contains: "no PEM"},
		{name: "private key in trust file", content: good + block("PRIVATE KEY", pkcs8), contains: `block 2 is "PRIVATE KEY"`},
		{name: "ecdsa key in trust file", content: block("PUBLIC KEY", ecPub), contains: "not an ed25519 key"},
		{name: "garbage DER", content: block("PUBLIC KEY", []byte{1, 2, 3}), contains: "block 1"},
		{name: "truncated second block", content: good + good[:40], contains: "unparsable PEM block after key 1"},
		{name: "missing file", missing: true, contains: "no such file"},
		{name: "empty key file", private: true, content: "", contains: "no PEM block"},
		{name: "public key as private", private: true, content: good, contains: `"PUBLIC KEY", want "PRIVATE KEY"`},
		{name: "ecdsa private key", private: true, content: block("PRIVATE KEY", ecPriv), contains: "not an ed25519 key"},
		{name: "garbage private DER", private: true, content: block("PRIVATE KEY", []byte{9}), contains: "load private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.pem")
			if !tt.missing {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tt.private {
				_, err = signing.LoadPrivateKey(path)
			} else {
				_, err = signing.LoadPublicKeys(path)
			}
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.contains)
			}
		})
	}
}

func TestWriteKeyRejects(t *testing.T) {
	pub, priv := testKey(1)
	dir := t.TempDir()
	tests := []struct {
		name  string
		write func() error
	}{
		{name: "short private key", write: func() error { return signing.WritePrivateKey(filepath.Join(dir, "a"), priv[:3]) }},
		{name: "short public key", write: func() error { return signing.WritePublicKey(filepath.Join(dir, "b"), pub[:3]) }},
		{name: "missing directory", write: func() error { return signing.WritePublicKey(filepath.Join(dir, "no", "c"), pub) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); err == nil {
				t.Fatal("write succeeded")
			}
		})
	}
}
