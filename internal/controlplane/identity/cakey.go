package identity

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// sealedKeyType is the PEM block of a CA key sealed with the key-encryption
// key: a 12-byte nonce, then AES-256-GCM of the PKCS#8 DER.
const sealedKeyType = "OMNIRELAY SEALED PRIVATE KEY"

// minKEKLen: 32 characters of `openssl rand -hex 32` or base64 output.
const minKEKLen = 32

// ReadKEK reads a key-encryption key file: one secret of at least 32
// characters (surrounding whitespace ignored). The AES-256 key is its
// SHA-256, so any high-entropy text will do.
func ReadKEK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: CA key-encryption key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < minKEKLen {
		return nil, fmt.Errorf("identity: CA key-encryption key %s: %d characters, want at least %d (e.g. openssl rand -hex 32)", path, len(b), minKEKLen)
	}
	k := sha256.Sum256(b)
	return k[:], nil
}

func kekAEAD(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// The trust domain is authenticated with the key, so a sealed key copied
// under another trust domain's prefix does not open.
func kekAAD(td spiffeid.TrustDomain) []byte { return []byte("omnirelay/identity/ca/" + td.Name()) }

// sealStored rewrites a stored CA document (certificate blocks, then a
// PRIVATE KEY block) with its key sealed.
func sealStored(data []byte, td spiffeid.TrustDomain, kek []byte) ([]byte, error) {
	aead, err := kekAEAD(kek)
	if err != nil {
		return nil, err
	}
	var out []byte
	sealed := false
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "PRIVATE KEY" {
			out = append(out, pem.EncodeToMemory(b)...)
			continue
		}
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(b.Bytes)+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: sealedKeyType, Bytes: aead.Seal(nonce, nonce, b.Bytes, kekAAD(td))})...)
		sealed = true
	}
	if !sealed {
		return nil, errors.New("no PRIVATE KEY block to seal")
	}
	return out, nil
}

// openStored returns a stored CA document with its key in clear (PEM, in
// memory only) and whether it was sealed.
func openStored(data []byte, td spiffeid.TrustDomain, kek []byte) ([]byte, bool, error) {
	var out []byte
	sealed := false
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != sealedKeyType {
			out = append(out, pem.EncodeToMemory(b)...)
			continue
		}
		sealed = true
		if kek == nil {
			return nil, true, errors.New("the stored CA key is sealed: MeshKit needs its key-encryption key (--ca-key-encryption-key-file)")
		}
		aead, err := kekAEAD(kek)
		if err != nil {
			return nil, true, err
		}
		if len(b.Bytes) < aead.NonceSize() {
			return nil, true, errors.New("the sealed CA key is truncated")
		}
		der, err := aead.Open(nil, b.Bytes[:aead.NonceSize()], b.Bytes[aead.NonceSize():], kekAAD(td))
		if err != nil {
			return nil, true, errors.New("the sealed CA key does not open with this key-encryption key (wrong key, or another trust domain's CA)")
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	}
	return out, sealed, nil
}

// LoadOrCreateSealedCA is LoadOrCreateCA with the CA key sealed in the
// store under kek (ReadKEK): a new root is stored sealed, a stored key in
// clear is sealed in place (compare-and-swap, so replicas agree), and a
// sealed key needs the same kek to load. A nil kek is LoadOrCreateCA, and
// then a sealed stored key is an error saying so.
func LoadOrCreateSealedCA(ctx context.Context, st store.Store, td spiffeid.TrustDomain, now time.Time, kek []byte) (*CA, error) {
	for {
		kv, err := st.Get(ctx, CAKey)
		if errors.Is(err, store.ErrNotFound) {
			data, err := generateRoot(td, now)
			if err != nil {
				return nil, err
			}
			stored := data
			if kek != nil {
				if stored, err = sealStored(data, td, kek); err != nil {
					return nil, fmt.Errorf("identity: seal CA key: %w", err)
				}
			}
			if _, err := st.Put(ctx, CAKey, stored, 0); err != nil {
				if errors.Is(err, store.ErrConflict) {
					continue // another replica stored its CA first: load that one
				}
				return nil, fmt.Errorf("identity: store CA: %w", err)
			}
			return parseStoredCA(td, data, now)
		}
		if err != nil {
			return nil, fmt.Errorf("identity: read CA: %w", err)
		}
		plain, sealed, err := openStored(kv.Value, td, kek)
		if err != nil {
			return nil, fmt.Errorf("identity: stored CA (%s): %w", CAKey, err)
		}
		ca, err := parseStoredCA(td, plain, now)
		if err != nil || sealed || kek == nil {
			return ca, err
		}
		// A key stored in clear, and now a kek: seal it in place.
		stored, err := sealStored(plain, td, kek)
		if err != nil {
			return nil, fmt.Errorf("identity: seal CA key: %w", err)
		}
		if _, err := st.Put(ctx, CAKey, stored, kv.Revision); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue // another replica changed it meanwhile: start over
			}
			return nil, fmt.Errorf("identity: store sealed CA key: %w", err)
		}
		return ca, nil
	}
}
