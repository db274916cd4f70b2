// Package versions is the config history of MeshKit: every desired config
// applied becomes a numbered Record in the store (who, when, what changed,
// signed), kept up to a bounded count, so that an operator can list, diff
// and undo them. The meshkit package writes records; this package owns
// their shape, their store keys, their signature and the two comparisons
// (a per-resource summary and a unified diff of the documents).
package versions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// KeyPrefix is the store prefix of the kept versions; a version's key is
// the prefix and its number, zero-padded so that keys sort by number.
const KeyPrefix = "/config/history/"

// DefaultKeep is how many versions are kept when nothing else is set.
const DefaultKeep = 50

// MaxKeep bounds the keep count: every version holds a whole document.
const MaxKeep = 10000

// Key is the store key of version n.
func Key(n int64) string { return fmt.Sprintf("%s%016d", KeyPrefix, n) }

// NumberOfKey is the inverse of Key.
func NumberOfKey(key string) (int64, error) {
	s, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return 0, fmt.Errorf("versions: key %q is not under %s", key, KeyPrefix)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("versions: key %q: bad version number", key)
	}
	return n, nil
}

// Origins: what made a version.
const (
	OriginApply     = "apply"
	OriginUndo      = "undo"
	OriginFile      = "file"
	OriginExtension = "extension"
	OriginRollout   = "rollout"
)

// Record is one version of the desired config.
type Record struct {
	Number int64 `json:"number"`
	// Parent is the number of the version it replaced (0: the first).
	Parent int64 `json:"parent,omitempty"`
	// Version is the document's content digest (DigestOf).
	Version  string    `json:"version"`
	Filename string    `json:"filename"`
	YAML     []byte    `json:"yaml"`
	Author   string    `json:"author,omitempty"`
	At       time.Time `json:"at"`
	Origin   string    `json:"origin,omitempty"`
	Summary  []string  `json:"summary,omitempty"`
	// Signature is a DSSE envelope over Statement; KeyID names its key.
	Signature []byte `json:"signature,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
}

// DigestOf is the content version of a document: what MeshKit puts in
// the xDS versions it serves, equal for equal documents.
func DigestOf(yaml []byte) string {
	sum := sha256.Sum256(yaml)
	return hex.EncodeToString(sum[:8])
}

// PayloadType is the DSSE payload type of a version's signature.
const PayloadType = "application/vnd.omnirelay.config-version+json"

// statement is what a version's signature covers: everything that says
// which document it is and who made it when, not the summary (derived).
type statement struct {
	Number   int64     `json:"number"`
	Parent   int64     `json:"parent"`
	Version  string    `json:"version"`
	Filename string    `json:"filename"`
	SHA256   string    `json:"sha256"`
	Author   string    `json:"author"`
	At       time.Time `json:"at"`
	Origin   string    `json:"origin"`
}

func (r *Record) statement() ([]byte, error) {
	sum := sha256.Sum256(r.YAML)
	return json.Marshal(statement{Number: r.Number, Parent: r.Parent, Version: r.Version, Filename: r.Filename,
		SHA256: hex.EncodeToString(sum[:]), Author: r.Author, At: r.At.UTC(), Origin: r.Origin})
}

// Sign sets the record's signature; a nil signer leaves it unsigned.
func (r *Record) Sign(s *signing.Signer) error {
	if s == nil {
		r.Signature, r.KeyID = nil, ""
		return nil
	}
	st, err := r.statement()
	if err != nil {
		return fmt.Errorf("versions: sign version %d: %w", r.Number, err)
	}
	env, err := s.Sign(PayloadType, st)
	if err != nil {
		return fmt.Errorf("versions: sign version %d: %w", r.Number, err)
	}
	r.Signature, r.KeyID = env, s.KeyID()
	return nil
}

// Verify checks the record's signature against v: it must be present,
// valid, and cover exactly this record's statement.
func (r *Record) Verify(v *signing.Verifier) error {
	if len(r.Signature) == 0 {
		return fmt.Errorf("versions: version %d is not signed", r.Number)
	}
	got, err := v.Verify(r.Signature, PayloadType)
	if err != nil {
		return fmt.Errorf("versions: version %d: %w", r.Number, err)
	}
	want, err := r.statement()
	if err != nil {
		return fmt.Errorf("versions: version %d: %w", r.Number, err)
	}
	if string(got) != string(want) {
		return fmt.Errorf("versions: version %d: the signature covers another version", r.Number)
	}
	return nil
}

// Decode reads a stored record.
func Decode(key string, b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("versions: decode %s: %w", key, err)
	}
	return &r, nil
}

type authorKey struct{}

// WithAuthor returns ctx carrying who makes the change, for the record.
func WithAuthor(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, authorKey{}, who)
}

// AuthorFrom is the author WithAuthor set, or "".
func AuthorFrom(ctx context.Context) string {
	s, _ := ctx.Value(authorKey{}).(string)
	return s
}

// MaxAuthor bounds a declared author's length.
const MaxAuthor = 256

// CleanAuthor makes a caller-declared author safe to store and print: at
// most MaxAuthor bytes of printable ASCII (anything else becomes '?').
func CleanAuthor(s string) string {
	if len(s) > MaxAuthor {
		s = s[:MaxAuthor]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
