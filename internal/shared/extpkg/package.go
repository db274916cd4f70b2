// Package extpkg owns the extension package format shared by omnictl (which
// packs and signs), MeshKit (which stores and serves) and OmniRelay (which
// verifies and loads).
//
// A package (.orx file) is an uncompressed POSIX tar holding exactly these
// regular files, in this order:
//
//	manifest.json   the Manifest, JSON (see ParseManifest for the strict rules)
//	payload         the module: Wasm bytes, DSL rules, or a native shared object
//	signature.dsse  a DSSE envelope (internal/shared/signing) whose payload is
//	                manifest.json byte for byte, typed PayloadType
//
// The signature covers the manifest, and the manifest pins the payload by its
// sha256, so one signature check plus one hash check vouch for everything.
// Open is the only way to a trusted Package; every refusal names what is
// wrong (entry, field, hash, key) so it can go verbatim into a NACK or log.
package extpkg

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// PayloadType is the DSSE payload type of a signed extension manifest.
const PayloadType = "application/vnd.omnirelay.extension-manifest.v1+json"

// Entry names inside the tar.
const (
	EntryManifest  = "manifest.json"
	EntryPayload   = "payload"
	EntrySignature = "signature.dsse"
)

// MaxPayloadBytes bounds the payload a package may carry.
const MaxPayloadBytes = 64 << 20

const maxSignatureBytes = 64 << 10

// Reasons a package is refused; errors wrap one of them (or ErrManifest, or
// one of the signing.Err* reasons for a bad signature).
var (
	ErrFormat       = errors.New("malformed extension package")
	ErrUnsigned     = errors.New("extension package is not signed")
	ErrHashMismatch = errors.New("payload does not match the manifest's sha256")
)

// Package is an extension package whose signature, manifest and payload
// hash have been checked (by Open), or only its manifest and hash (Inspect).
type Package struct {
	Manifest Manifest
	Payload  []byte
}

// parts is a package's tar entries, raw.
type parts struct {
	manifest, payload, signature []byte
}

// Pack builds an unsigned package from m and payload. It fills in
// m.PayloadSHA256 (a value already set must match the payload) and refuses
// a manifest that would not pass ParseManifest.
func Pack(m Manifest, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayloadBytes {
		return nil, fmt.Errorf("extpkg: pack %q: payload is %d bytes, at most %d", m.Name, len(payload), MaxPayloadBytes)
	}
	sum := PayloadDigest(payload)
	if m.PayloadSHA256 != "" && m.PayloadSHA256 != sum {
		return nil, fmt.Errorf("extpkg: pack %q: %w (manifest %s, payload %s)", m.Name, ErrHashMismatch, m.PayloadSHA256, sum)
	}
	m.PayloadSHA256 = sum
	mb, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	// Round-trip through the strict parser so that Pack never writes what
	// Open would refuse.
	if _, err := ParseManifest(mb); err != nil {
		return nil, fmt.Errorf("extpkg: pack: %w", err)
	}
	return writeTar(parts{manifest: mb, payload: payload})
}

// Sign returns pkg with a signature by s over its manifest, replacing any
// previous signature. The package must be well formed and its payload must
// match the manifest: a signer never vouches for a broken package.
func Sign(pkg []byte, s *signing.Signer) ([]byte, error) {
	p, err := readTar(pkg)
	if err != nil {
		return nil, err
	}
	m, err := checkContent(p)
	if err != nil {
		return nil, err
	}
	env, err := s.Sign(PayloadType, p.manifest)
	if err != nil {
		return nil, fmt.Errorf("extpkg: sign %q: %w", m.Name, err)
	}
	p.signature = env
	return writeTar(p)
}

// Open parses pkg, verifies its signature against v, that the signed
// manifest is the one in the package, the manifest itself, and the payload
// hash. Only then does it return the package.
func Open(pkg []byte, v *signing.Verifier) (*Package, error) {
	p, err := readTar(pkg)
	if err != nil {
		return nil, err
	}
	if p.signature == nil {
		return nil, fmt.Errorf("extpkg: %w (no %s entry)", ErrUnsigned, EntrySignature)
	}
	signed, err := v.Verify(p.signature, PayloadType)
	if err != nil {
		return nil, fmt.Errorf("extpkg: %s: %w", EntrySignature, err)
	}
	if !bytes.Equal(signed, p.manifest) {
		return nil, fmt.Errorf("extpkg: %w: %s differs from the manifest the signature covers", ErrFormat, EntryManifest)
	}
	m, err := checkContent(p)
	if err != nil {
		return nil, err
	}
	return &Package{Manifest: m, Payload: p.payload}, nil
}

// Inspect parses pkg and checks its manifest and payload hash but not the
// signature: for tools that show a package and for config validation, which
// leaves the trust decision to the proxy. signed reports whether a
// signature entry is present (not whether it verifies).
func Inspect(pkg []byte) (p *Package, signed bool, err error) {
	pt, err := readTar(pkg)
	if err != nil {
		return nil, false, err
	}
	m, err := checkContent(pt)
	if err != nil {
		return nil, false, err
	}
	return &Package{Manifest: m, Payload: pt.payload}, pt.signature != nil, nil
}

// PayloadDigest is the lower-case hex sha256 of payload, as in a manifest.
func PayloadDigest(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:])
}

func checkContent(p parts) (Manifest, error) {
	m, err := ParseManifest(p.manifest)
	if err != nil {
		return m, fmt.Errorf("extpkg: %s: %w", EntryManifest, err)
	}
	if got := PayloadDigest(p.payload); got != m.PayloadSHA256 {
		return m, fmt.Errorf("extpkg: extension %q: %w (manifest %s, payload %s)", m.Name, ErrHashMismatch, m.PayloadSHA256, got)
	}
	return m, nil
}

// epoch is the fixed modification time of every entry, so that packing the
// same input twice gives the same bytes.
var epoch = time.Unix(0, 0).UTC()

func writeTar(p parts) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		body []byte
	}{{EntryManifest, p.manifest}, {EntryPayload, p.payload}}
	if p.signature != nil {
		entries = append(entries, struct {
			name string
			body []byte
		}{EntrySignature, p.signature})
	}
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.body)),
			Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("extpkg: write %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("extpkg: write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("extpkg: close package: %w", err)
	}
	return buf.Bytes(), nil
}

// readTar splits pkg into its entries. Unknown, repeated, non-regular or
// oversized entries are refused before their bodies are read.
func readTar(pkg []byte) (parts, error) {
	var p parts
	if len(pkg) == 0 {
		return p, fmt.Errorf("extpkg: %w: empty", ErrFormat)
	}
	tr := tar.NewReader(bytes.NewReader(pkg))
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return p, fmt.Errorf("extpkg: %w: not a tar archive: %v", ErrFormat, err)
		}
		var dst *[]byte
		limit := int64(maxSignatureBytes)
		switch hdr.Name {
		case EntryManifest:
			dst, limit = &p.manifest, maxManifestBytes
		case EntryPayload:
			dst, limit = &p.payload, MaxPayloadBytes
		case EntrySignature:
			dst = &p.signature
		default:
			return p, fmt.Errorf("extpkg: %w: unexpected entry %q (want %s, %s, %s)", ErrFormat, hdr.Name, EntryManifest, EntryPayload, EntrySignature)
		}
		if seen[hdr.Name] {
			return p, fmt.Errorf("extpkg: %w: entry %q repeated", ErrFormat, hdr.Name)
		}
		seen[hdr.Name] = true
		if hdr.Typeflag != tar.TypeReg {
			return p, fmt.Errorf("extpkg: %w: entry %q is not a regular file", ErrFormat, hdr.Name)
		}
		if hdr.Size < 0 || hdr.Size > limit {
			return p, fmt.Errorf("extpkg: %w: entry %q is %d bytes, at most %d", ErrFormat, hdr.Name, hdr.Size, limit)
		}
		body := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, body); err != nil {
			return p, fmt.Errorf("extpkg: %w: entry %q truncated: %v", ErrFormat, hdr.Name, err)
		}
		*dst = body
	}
	if !seen[EntryManifest] {
		return p, fmt.Errorf("extpkg: %w: no %s entry", ErrFormat, EntryManifest)
	}
	if !seen[EntryPayload] {
		return p, fmt.Errorf("extpkg: %w: no %s entry", ErrFormat, EntryPayload)
	}
	return p, nil
}
