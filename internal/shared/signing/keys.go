package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
)

// GenerateKey returns a new ed25519 key pair from crypto/rand.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("signing: generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// KeyID names a public key in envelopes and messages: the hex of the first
// 16 bytes of the sha256 of its PKIX (SubjectPublicKeyInfo) encoding. It is
// empty for a key that cannot be encoded.
func KeyID(k ed25519.PublicKey) string {
	if len(k) != ed25519.PublicKeySize {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16])
}

// WritePrivateKey writes k to path as a PEM "PRIVATE KEY" block (PKCS#8),
// readable by the owner only. The file is replaced atomically, so a crash
// never leaves half a key behind and an existing file's looser mode is not
// inherited.
func WritePrivateKey(path string, k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing: write private key %s: key is %d bytes, want %d", path, len(k), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("signing: write private key %s: %w", path, err)
	}
	return writePEM(path, pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), 0o600)
}

// LoadPrivateKey reads an ed25519 key written by WritePrivateKey (or by
// `openssl genpkey -algorithm ed25519`).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing: load private key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing: load private key %s: no PEM block", path)
	}
	if block.Type != pemPrivate {
		return nil, fmt.Errorf("signing: load private key %s: PEM block is %q, want %q", path, block.Type, pemPrivate)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing: load private key %s: %w", path, err)
	}
	k, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing: load private key %s: %T is not an ed25519 key", path, key)
	}
	return k, nil
}

// WritePublicKey writes k to path as a PEM "PUBLIC KEY" block (PKIX). Trust
// root files holding several keys are made by concatenating such files.
func WritePublicKey(path string, k ed25519.PublicKey) error {
	if len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("signing: write public key %s: key is %d bytes, want %d", path, len(k), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return fmt.Errorf("signing: write public key %s: %w", path, err)
	}
	return writePEM(path, pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), 0o644)
}

// LoadPublicKeys reads a trust root: every PEM block in the file must be an
// ed25519 "PUBLIC KEY", and there must be at least one. Text between blocks
// (comments) is allowed; any other block type is an error, because a private
// key or certificate in a trust file is a mistake worth stopping for.
func LoadPublicKeys(path string) ([]ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing: load public keys: %w", err)
	}
	var keys []ed25519.PublicKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemPublic {
			return nil, fmt.Errorf("signing: load public keys %s: block %d is %q, want %q", path, n, block.Type, pemPublic)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing: load public keys %s: block %d: %w", path, n, err)
		}
		k, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("signing: load public keys %s: block %d: %T is not an ed25519 key", path, n, key)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("signing: load public keys %s: no PEM %q block", path, pemPublic)
	}
	// pem.Decode stops at a block it cannot parse (say, a truncated one) and
	// leaves it in the rest; refuse rather than trust fewer keys than listed.
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("signing: load public keys %s: unparsable PEM block after key %d", path, len(keys))
	}
	return keys, nil
}

// writePEM replaces path with data via a temporary file in the same
// directory and a rename.
func writePEM(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("signing: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("signing: write %s: %w", path, err)
	}
	return nil
}
