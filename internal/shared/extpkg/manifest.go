package extpkg

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
)

// Kinds of extension a manifest may name; each is served by one runtime.
const (
	KindWasm   = "wasm"
	KindDSL    = "dsl"
	KindNative = "native"
)

// Limits on a manifest. They keep a hostile package from making the proxy
// allocate without bound before its signature has been checked.
const (
	maxManifestBytes = 64 << 10
	maxCapabilities  = 64
	maxCapability    = 128
)

// ErrManifest is wrapped by every error about the manifest's content.
var ErrManifest = errors.New("invalid manifest")

// Manifest describes an extension package. Its JSON encoding (the
// manifest.json entry) is what the package's DSSE signature covers.
type Manifest struct {
	// Name identifies the extension in metrics and logs: lower-case
	// letters, digits, '.', '_' and '-', at most 63 characters.
	Name string `json:"name"`
	// Version is the package's version (free-form, e.g. "1.2.0").
	Version string `json:"version"`
	// Kind is KindWasm, KindDSL or KindNative.
	Kind string `json:"kind"`
	// ABI is the runtime ABI the payload is built for (e.g. "proxy-wasm/0.2.1").
	ABI string `json:"abi"`
	// Capabilities the proxy must advertise for the extension to load.
	Capabilities []string `json:"capabilities,omitempty"`
	// ConfigSchema optionally describes the plugin config; a JSON object.
	ConfigSchema json.RawMessage `json:"config_schema,omitempty"`
	// PayloadSHA256 is the lower-case hex sha256 of the payload.
	PayloadSHA256 string `json:"payload_sha256"`
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_/-]{0,63}$`)
	capRE     = regexp.MustCompile(`^[!-~]+$`) // printable ASCII, no space
)

// Validate checks every field; the error names the field and the value.
func (m *Manifest) Validate() error {
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("%w: name %q: want 1-63 of [a-z0-9._-], starting with a letter or digit", ErrManifest, m.Name)
	}
	if !versionRE.MatchString(m.Version) {
		return fmt.Errorf("%w: version %q: want 1-64 of [0-9A-Za-z.+_/-]", ErrManifest, m.Version)
	}
	switch m.Kind {
	case KindWasm, KindDSL, KindNative:
	default:
		return fmt.Errorf("%w: kind %q: want %s, %s or %s", ErrManifest, m.Kind, KindWasm, KindDSL, KindNative)
	}
	if !versionRE.MatchString(m.ABI) {
		return fmt.Errorf("%w: abi %q: want 1-64 of [0-9A-Za-z.+_/-]", ErrManifest, m.ABI)
	}
	if len(m.Capabilities) > maxCapabilities {
		return fmt.Errorf("%w: capabilities: %d entries, at most %d", ErrManifest, len(m.Capabilities), maxCapabilities)
	}
	for i, c := range m.Capabilities {
		if len(c) > maxCapability || !capRE.MatchString(c) {
			return fmt.Errorf("%w: capabilities[%d] %q: want 1-%d printable characters without spaces", ErrManifest, i, c, maxCapability)
		}
		if slices.Contains(m.Capabilities[:i], c) {
			return fmt.Errorf("%w: capabilities[%d] %q: duplicate", ErrManifest, i, c)
		}
	}
	if m.ConfigSchema != nil {
		if err := checkObject(m.ConfigSchema); err != nil {
			return fmt.Errorf("%w: config_schema: %v", ErrManifest, err)
		}
	}
	if len(m.PayloadSHA256) != 64 || !isLowerHex(m.PayloadSHA256) {
		return fmt.Errorf("%w: payload_sha256 %q: want 64 lower-case hex digits", ErrManifest, m.PayloadSHA256)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func checkObject(b []byte) error {
	if !json.Valid(b) {
		return errors.New("not valid JSON")
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	return nil
}

// Marshal returns the canonical JSON encoding of m (what Pack stores and
// Sign signs).
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("extpkg: encode manifest %q: %w", m.Name, err)
	}
	return b, nil
}

// manifestFields are the keys ParseManifest accepts, each once.
var manifestFields = []string{"name", "version", "kind", "abi", "capabilities", "config_schema", "payload_sha256"}

// ParseManifest decodes manifest.json strictly: one JSON object, keys
// spelled exactly as documented and each at most once (encoding/json alone
// would match keys case-insensitively and let a repeated key win silently),
// no trailing data, then Validate. ConfigSchema comes back compacted.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > maxManifestBytes {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrManifest, len(b), maxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return m, fmt.Errorf("%w: not a JSON object", ErrManifest)
	}
	seen := make(map[string]bool, len(manifestFields))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return m, fmt.Errorf("%w: %v", ErrManifest, err)
		}
		key, _ := t.(string)
		if !slices.Contains(manifestFields, key) {
			return m, fmt.Errorf("%w: unknown field %q", ErrManifest, key)
		}
		if seen[key] {
			return m, fmt.Errorf("%w: field %q repeated", ErrManifest, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return m, fmt.Errorf("%w: field %q: %v", ErrManifest, key, err)
		}
		if err := m.set(key, raw); err != nil {
			return m, fmt.Errorf("%w: field %q: %v", ErrManifest, key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return m, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return m, fmt.Errorf("%w: trailing data after the object", ErrManifest)
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

func (m *Manifest) set(key string, raw json.RawMessage) error {
	switch key {
	case "name":
		return json.Unmarshal(raw, &m.Name)
	case "version":
		return json.Unmarshal(raw, &m.Version)
	case "kind":
		return json.Unmarshal(raw, &m.Kind)
	case "abi":
		return json.Unmarshal(raw, &m.ABI)
	case "payload_sha256":
		return json.Unmarshal(raw, &m.PayloadSHA256)
	case "capabilities":
		if bytes.Equal(raw, []byte("null")) {
			return errors.New("null, want a list of strings")
		}
		if err := json.Unmarshal(raw, &m.Capabilities); err != nil {
			return err
		}
		if len(m.Capabilities) == 0 {
			m.Capabilities = nil // "[]" and absent mean the same
		}
	case "config_schema":
		if err := checkObject(raw); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		m.ConfigSchema = buf.Bytes()
	}
	return nil
}
