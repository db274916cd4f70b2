package identity

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestSealedCAKey: with a key-encryption key the CA key never reaches the
// store in clear; it loads only with the same key (and trust domain); a key
// stored in clear before is sealed in place on the first start with a kek.
func TestSealedCAKey(t *testing.T) {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("omnirelay.test")
	dir := t.TempDir()
	kekFile := func(name, content string) []byte {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := ReadKEK(f)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	kek := kekFile("kek", "4f1c0d6a9be2c1b0e5f3a7d9c8b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8\n")
	other := kekFile("other", "00000000000000000000000000000000000000000000000000000000000000ff\n")
	st := openBolt(t)
	ca, err := LoadOrCreateSealedCA(ctx, st, td, time.Now(), kek)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := st.Get(ctx, CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kv.Value, []byte("BEGIN PRIVATE KEY")) || !bytes.Contains(kv.Value, []byte(sealedKeyType)) {
		t.Fatalf("stored CA document is not sealed:\n%s", kv.Value)
	}
	again, err := LoadOrCreateSealedCA(ctx, st, td, time.Now(), kek)
	if err != nil || !again.Certificate().Equal(ca.Certificate()) {
		t.Fatalf("reload with the kek: %v", err)
	}
	for name, tc := range map[string]struct {
		kek  []byte
		td   string
		want string
	}{
		"no kek":       {nil, "omnirelay.test", "--ca-key-encryption-key-file"},
		"wrong kek":    {other, "omnirelay.test", "does not open"},
		"other domain": {kek, "other.test", "does not open"},
	} {
		_, err := LoadOrCreateSealedCA(ctx, st, spiffeid.RequireTrustDomainFromString(tc.td), time.Now(), tc.kek)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}

	// A CA created in clear is sealed on the first start with a kek, and
	// keeps its root.
	st2 := openBolt(t)
	plain, err := LoadOrCreateCA(ctx, st2, td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := LoadOrCreateSealedCA(ctx, st2, td, time.Now(), kek)
	if err != nil || !sealed.Certificate().Equal(plain.Certificate()) {
		t.Fatalf("sealing in place: %v", err)
	}
	kv, err = st2.Get(ctx, CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kv.Value, []byte("BEGIN PRIVATE KEY")) {
		t.Fatal("the key stayed in clear after a start with a kek")
	}
	if _, err := LoadOrCreateCA(ctx, st2, td, time.Now()); err == nil {
		t.Fatal("a sealed key loaded without its kek")
	}
}

func TestReadKEKTooShort(t *testing.T) {
	f := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(f, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKEK(f); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short kek: %v", err)
	}
}
